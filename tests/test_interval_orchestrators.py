"""dlt's scheduler interval from the orchestrators: a Dagster daily partition and an Airflow run over a
past logical date each load exactly their interval, leave the cursor alone, and load a day once however
often it runs.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from avepoint_dynamics.state import read_state
from avepoint_simulator import Simulator

from .conftest import Loader
from .expected import api_time, assert_rows_equal
from .test_orchestrators import DAG_FILE, airflow_python, dagster_installed, source_env  # noqa: F401


def started_in(sim: Simulator, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The API's jobs that started in ``[start, end)``."""
    return [j for j in sim.world.ground_truth() if start <= api_time(j["startTime"]) < end]  # type: ignore[operator]


def destination_cursor(loader: Loader, folder: Path) -> Any:
    """The cursor as the destination holds it (Airflow's tasks wipe their working folder)."""
    import dlt

    pipeline = dlt.pipeline(
        loader.pipeline_name,
        pipelines_dir=str(folder),
        destination=dlt.destinations.duckdb(str(loader.duckdb_path)),
        dataset_name=loader.dataset,
    )
    pipeline.sync_destination()
    return read_state(pipeline).cursor


def _count(loader: Loader) -> int:
    return int(loader.query("SELECT count(*) FROM jobs")[0][0])


@pytest.mark.usefixtures("dagster_installed")
def test_a_dagster_daily_partition_loads_exactly_its_utc_day(
    sim: Simulator, loader: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg
    from avepoint_pipelines.orchestrators import dagster_daily

    for name, value in source_env(sim, loader).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AVEPOINT_PIPELINES_DIR", str(loader.workdir / "pipelines"))
    monkeypatch.setenv("AVEPOINT_PARTITIONS_START", "2026-08-01")
    instance = dg.DagsterInstance.ephemeral()

    def materialize(day: str) -> None:
        defs = dagster_daily.defs()  # each run loads the code location anew
        assert defs.assets is not None
        result = dg.materialize(list(defs.assets), partition_key=day, instance=instance)
        assert result.success

    first, second = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 9, 2, tzinfo=UTC)
    materialize("2026-09-01")
    day_one = started_in(sim, first, second)
    assert day_one
    assert_rows_equal(loader.rows(), day_one)
    assert "cursor" not in loader.state()  # a bounded backfill: no cursor was set

    materialize("2026-09-02")
    assert_rows_equal(loader.rows(), started_in(sim, first, second + timedelta(days=1)))

    sim.world.finish_running()  # the service moves on; the day loaded again is its current answer
    materialize("2026-09-01")
    assert_rows_equal(loader.rows(), started_in(sim, first, second + timedelta(days=1)))
    assert _count(loader) == len(started_in(sim, first, second + timedelta(days=1)))

    schedule = dagster_daily.defs().resolve_schedule_def(f"{dagster_daily.JOB_NAME}_schedule")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"


def test_an_airflow_run_over_a_past_logical_date_loads_its_data_interval(
    sim: Simulator,
    loader: Loader,
    tmp_path: Path,
    airflow_python: Path,  # noqa: F811
) -> None:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "avepoint_dynamics_dag.py").write_text(DAG_FILE)
    env = {
        **os.environ,
        **source_env(sim, loader),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AVEPOINT_STALE_HOURS": "8760",
    }
    airflow = str(airflow_python.parent / "airflow")

    def run(*command: str, **extra: str) -> None:
        done = subprocess.run(
            command, env={**env, **extra}, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"

    run(airflow, "db", "migrate")
    run(
        airflow, "dags", "test", "avepoint_dynamics_jobs"
    )  # the scheduled load: every job, a cursor
    cursor = destination_cursor(loader, tmp_path / "read-1")
    assert cursor
    sim.world.finish_running()  # the service moves on: jobs finish, new ones start
    new = sim.world.add_jobs(20)

    # The run of 2026-09-02 02:00 UTC, joining its data interval: the day before it, 02:00 to 02:00.
    join = {"SOURCES__AVEPOINT_DYNAMICS__ALLOW_EXTERNAL_SCHEDULERS": "true"}
    run(airflow, "dags", "test", "avepoint_dynamics_jobs", "2026-09-02T02:00:00+00:00", **join)

    start, end = datetime(2026, 9, 1, 2, tzinfo=UTC), datetime(2026, 9, 2, 2, tzinfo=UTC)
    interval = started_in(sim, start, end)
    assert interval
    rows = loader.rows()
    assert_rows_equal({j["jobId"]: rows[j["jobId"]] for j in interval}, interval)
    assert not {j["jobId"] for j in new} & rows.keys()  # nothing outside the interval was read
    assert (
        destination_cursor(loader, tmp_path / "read-2") == cursor
    )  # the scheduled runs' cursor stays
    count = _count(loader)

    run(airflow, "dags", "test", "avepoint_dynamics_jobs", "2026-09-02T02:00:00+00:00", **join)
    assert _count(loader) == count  # the day once, however often it runs
