"""Dagster and Airflow run the real source against the simulator, twice: the second run is incremental.

Both orchestrators' dlt helpers drop the local dlt pipeline before each run, so the state of the second
run can only come back from the destination (DuckDB here). Config reaches the source the way it reaches
it in production: ``SOURCES__AVEPOINT_DYNAMICS__*`` env vars, read by dlt.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from avepoint_simulator import Simulator

from .conftest import Loader, unavailable
from .expected import assert_rows_equal
from .test_alert import make_stale
from .test_views_report import expected_freshness

ROOT = Path(__file__).resolve().parents[1]


def source_env(sim: Simulator, loader: Loader) -> dict[str, str]:
    """The source's settings as dlt env vars, pointing at the simulator; the DuckDB file of ``loader``."""
    assert sim.ca_file is not None
    return {
        "SOURCES__AVEPOINT_DYNAMICS__BASE_URL": sim.base_url,
        # REQUESTS_CA_BUNDLE (set on this machine) would override a session's verify: the connector
        # passes this bundle with every request.
        "SOURCES__AVEPOINT_DYNAMICS__CA_BUNDLE": sim.ca_file,
        "SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_ID": sim.client_id,
        "SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_SECRET": sim.client_secret,
        "SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__IDENTITY_URL": sim.identity_url,
        "AVEPOINT_DESTINATION": "duckdb",
        "AVEPOINT_DUCKDB_PATH": str(loader.duckdb_path),
        "AVEPOINT_DATASET": loader.dataset,
        "AVEPOINT_PIPELINE_NAME": loader.pipeline_name,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }


def jobs_requests(sim: Simulator) -> int:
    return int(sim.stats()["jobs_requests"])


def change_the_world(sim: Simulator) -> tuple[set[str], list[dict[str, Any]]]:
    """Finish the running jobs and start 30 new ones (5 running); returns (finished ids, new jobs)."""
    running = {j["jobId"] for j in sim.world.ground_truth() if j["status"] == 2}
    assert running, "the simulator should start with jobs in progress"
    sim.world.finish_running()
    new = sim.world.add_jobs(30, running=5)
    sim.reset_stats()
    return running, new


def assert_second_run_was_incremental(
    sim: Simulator, loader: Loader, full: int, finished: set[str], new: list[dict[str, Any]]
) -> None:
    rows = loader.rows()
    assert_rows_equal(rows, sim.world.ground_truth())
    assert {j["jobId"] for j in new} <= rows.keys()
    for job_id in finished:
        assert rows[job_id]["status"] in (3, 4, 7) and rows[job_id]["finish_time"] is not None
    (count, distinct) = loader.query("SELECT count(*), count(DISTINCT job_id) FROM jobs")[0]
    assert count == distinct == 3_030
    # the lookback window and one window per job that was open, not the 30 pages of history
    assert jobs_requests(sim) <= 3 + len(finished)
    assert jobs_requests(sim) < full / 5


def assert_views_follow_the_load(loader: Loader) -> None:
    """The analyst views exist after an orchestrated load too, and count every job."""
    (counted,) = loader.query("SELECT sum(total) FROM job_outcomes_daily")[0]
    assert counted == 3_030


# ---------------------------------------------------------------------------------------- Dagster
@pytest.fixture
def dagster_installed() -> None:
    if importlib.util.find_spec("dagster_dlt") is None:
        unavailable(
            "dagster-dlt is not installed: pip install -e '.[dagster]' (scripts/test installs it)"
        )


@pytest.mark.usefixtures("dagster_installed")
def test_dagster_second_materialization_is_incremental_with_state_from_the_destination(
    sim: Simulator, loader: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg
    from avepoint_pipelines.orchestrators import dagster_defs
    from dlt.pipeline.pipeline import Pipeline

    for name, value in source_env(sim, loader).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AVEPOINT_PIPELINES_DIR", str(loader.workdir / "pipelines"))
    drops: list[str] = []
    drop = Pipeline.drop

    def recorded_drop(self: Pipeline, *args: Any, **kwargs: Any) -> Pipeline:
        drops.append(self.pipeline_name)
        return drop(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "drop", recorded_drop)

    instance = dg.DagsterInstance.ephemeral()

    def materialize() -> list[str]:
        """One run; the messages of its event log."""
        # Each scheduled run loads the code location anew: so do we.
        defs = dagster_defs.defs()
        assert defs.assets is not None and defs.resources is not None
        result = dg.materialize(list(defs.assets), resources=defs.resources, instance=instance)
        assert result.success
        assert result.asset_materializations_for_node("avepoint_dynamics")
        return [entry.user_message for entry in instance.all_logs(result.run_id)]

    logged = materialize()

    # the connector's own log lines reach Dagster's run log
    assert any(m.startswith("avepoint_dynamics: read 3,000 jobs in 30 pages") for m in logged), (
        logged
    )

    full = jobs_requests(sim)
    assert_rows_equal(loader.rows(), sim.world.ground_truth())
    assert loader.state()["open_jobs"], "the first run should have left open jobs in the state"
    finished, new = change_the_world(sim)

    materialize()

    assert drops == [loader.pipeline_name] * 2  # the local state went before each run
    assert_second_run_was_incremental(sim, loader, full, finished, new)
    assert_views_follow_the_load(loader)


@pytest.mark.usefixtures("dagster_installed")
def test_dagster_schedule_runs_the_asset_daily_at_two_utc(
    sim: Simulator, loader: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg
    from avepoint_pipelines.orchestrators import dagster_defs

    for name, value in source_env(sim, loader).items():
        monkeypatch.setenv(name, value)

    defs = dagster_defs.defs()

    schedule = defs.resolve_schedule_def("avepoint_jobs_daily_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def(schedule.job_name)
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey("dlt_avepoint_dynamics_jobs")}
    assert jobs_requests(sim) == 0  # loading the definitions reads no jobs


@pytest.mark.usefixtures("dagster_installed")
@pytest.mark.parametrize(
    "old", ["avepoint_pipelines.dagster_defs", "avepoint_pipelines.dagster_daily"]
)
def test_dagster_module_paths_of_an_earlier_release_still_import(old: str) -> None:
    # `dagster dev -m avepoint_pipelines.dagster_defs`, as the docs said before pipelines/orchestrators/.
    import sys

    from avepoint_pipelines import MOVED_MODULES

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED_MODULES[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED_MODULES[old])


# ---------------------------------------------------------------------------------------- Airflow
@pytest.fixture
def airflow_python() -> Path:
    """Airflow's interpreter: ``AVEPOINT_AIRFLOW_PYTHON``, else ``.venv/airflow`` (made by scripts/test).

    Airflow lives in a venv of its own: installed beside dlt, it switches on dlt's Airflow Variables
    config provider, and every dlt config lookup in every process (tests, the CLI) then queries
    Airflow's metadata DB, creating ``~/airflow/airflow.db`` and logging SQLite errors on the way.
    """
    configured = os.environ.get("AVEPOINT_AIRFLOW_PYTHON")
    python = Path(configured) if configured else ROOT / ".venv" / "airflow" / "bin" / "python"
    if not python.exists():
        unavailable(
            f"no Airflow venv at {python}: python3 -m venv .venv/airflow && "
            ".venv/airflow/bin/pip install -e '.[airflow]' (or set AVEPOINT_AIRFLOW_PYTHON)"
        )
    return python


#: What the README says to put into the dags folder.
DAG_FILE = "from avepoint_pipelines.orchestrators.airflow_dag import dag  # noqa: F401\n"
DAG_SHAPE = """
import json
from avepoint_pipelines.orchestrators.airflow_dag import dag
print(json.dumps({
    "dag_id": dag.dag_id,
    "schedule": dag.timetable.summary,
    "catchup": dag.catchup,
    "max_active_runs": dag.max_active_runs,
    "tasks": {
        t.task_id: {"retries": t.retries, "type": type(t).__name__, "then": sorted(t.downstream_task_ids)}
        for t in dag.tasks
    },
}))
"""


def test_airflow_dag_test_loads_the_ground_truth_then_only_what_changed(
    sim: Simulator, loader: Loader, tmp_path: Path, airflow_python: Path
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
        # The simulated history has an organization without a backup for days: not this test's matter
        # (test_airflow_backup_freshness_task_fails_when_an_organization_is_stale).
        "AVEPOINT_STALE_HOURS": "8760",
    }
    airflow = str(airflow_python.parent / "airflow")

    def run(*command: str) -> str:
        done = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (
            f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
        return done.stdout

    run(airflow, "db", "migrate")
    shape = json.loads(run(str(airflow_python), "-c", DAG_SHAPE).strip().splitlines()[-1])
    assert shape["dag_id"] == "avepoint_dynamics_jobs"
    assert "0 2 * * *" in str(shape["schedule"])
    assert (shape["catchup"], shape["max_active_runs"]) == (False, 1)
    # one load task (decompose="none") in a group, both named after the dlt pipeline, then the views
    load = f"{loader.pipeline_name}.{loader.pipeline_name}"
    assert shape["tasks"] == {
        load: {"retries": 0, "type": "PythonOperator", "then": ["analyst_views"]},
        "analyst_views": {"retries": 0, "type": "PythonOperator", "then": ["backup_freshness"]},
        "backup_freshness": {"retries": 0, "type": "PythonOperator", "then": []},
    }

    # A DAG file written for an earlier release (before pipelines/orchestrators/) finds the same DAG.
    old_path = (
        "from avepoint_pipelines.airflow_dag import dag as old; " + DAG_FILE + "print(old is dag)"
    )
    assert run(str(airflow_python), "-c", old_path).strip().splitlines()[-1] == "True"

    run(airflow, "dags", "test", "avepoint_dynamics_jobs")  # DAG.test(): a whole run, in-process

    full = jobs_requests(sim)
    assert_rows_equal(loader.rows(), sim.world.ground_truth())
    finished, new = change_the_world(sim)

    run(airflow, "dags", "test", "avepoint_dynamics_jobs")

    assert_second_run_was_incremental(sim, loader, full, finished, new)
    assert_views_follow_the_load(loader)


# ---------------------------------------------------------------------------------------- the alert
def stale_organizations(sim: Simulator, threshold: float) -> dict[str, str]:
    """contoso-prod made stale (its last 40 hours of backups failed); the oracle's stale ids -> names."""
    names = {org["id"]: org["name"] for org in sim.world.organizations}
    contoso = next(org for org, name in names.items() if name == "contoso-prod")
    assert make_stale(sim, contoso)
    want = expected_freshness(sim.world.ground_truth(), datetime.now(UTC), threshold)
    stale = {org: names[org] for org, row in want.items() if row["stale"]}
    assert contoso in stale
    return stale


@pytest.mark.usefixtures("dagster_installed")
def test_dagster_check_fails_with_severity_error_when_an_organization_is_stale(
    sim: Simulator, loader: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg
    from avepoint_pipelines.orchestrators import dagster_defs

    for name, value in source_env(sim, loader).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AVEPOINT_PIPELINES_DIR", str(loader.workdir / "pipelines"))
    stale = stale_organizations(sim, 26)
    instance = dg.DagsterInstance.ephemeral()

    def materialize() -> Any:
        defs = dagster_defs.defs()
        assert defs.assets is not None and defs.asset_checks is not None
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks], resources=defs.resources, instance=instance
        )
        assert result.success  # a failed check is a finding, not a failed load
        (evaluation,) = result.get_asset_check_evaluations()
        assert evaluation.check_name == "backups_fresh"
        assert evaluation.asset_key == dg.AssetKey("dlt_avepoint_dynamics_jobs")
        return evaluation

    evaluation = materialize()

    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    organizations = {
        key: entry.value for key, entry in evaluation.metadata.items() if key in stale.values()
    }
    assert {key for key, value in organizations.items() if value["stale"]} == set(stale.values())
    everyone = {org["name"] for org in sim.world.organizations}
    assert everyone <= evaluation.metadata.keys()  # one entry per organization, fresh ones too
    assert evaluation.metadata["stale_organizations"].value == len(stale)
    lines = evaluation.description.splitlines()
    assert sorted(line.split(":")[1].strip() for line in lines) == sorted(stale.values())

    # A threshold every organization meets: the check passes.
    monkeypatch.setenv("AVEPOINT_STALE_HOURS", "8760")
    evaluation = materialize()

    assert evaluation.passed is True
    assert evaluation.description == (
        f"ok: {len(everyone)} organizations backed up within 8760 hours (duckdb:{loader.dataset})"
    )


def test_airflow_backup_freshness_task_fails_when_an_organization_is_stale(
    sim: Simulator, loader: Loader, tmp_path: Path, airflow_python: Path
) -> None:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "avepoint_dynamics_dag.py").write_text(DAG_FILE)
    stale = stale_organizations(sim, 26)
    env = {
        **os.environ,
        **source_env(sim, loader),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    airflow = str(airflow_python.parent / "airflow")

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )

    migrated = run(airflow, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    tested = run(airflow, "dags", "test", "avepoint_dynamics_jobs")

    output = tested.stdout + tested.stderr
    assert tested.returncode == 1 and "DagRun failed" in output, output[-5000:]
    assert task_states(output) == {
        f"{loader.pipeline_name}.{loader.pipeline_name}": "success",
        "analyst_views": "success",
        "backup_freshness": "failed",
    }
    assert_rows_equal(loader.rows(), sim.world.ground_truth())  # the load itself worked
    for name in stale.values():
        assert re.search(
            rf"\[error +\] stale: {re.escape(name)}: last successful backup [\d.]+ hours ago "
            r"\(threshold 26 hours\)",
            output,
        ), output[-5000:]


def task_states(output: str) -> dict[str, str]:
    """Each task's last state in the log of ``airflow dags test``."""
    tasks = dict(
        re.findall(r"running task <TaskInstance: [\w]+\.([\w.]+) .*?ti_id=([\w-]+)>", output)
    )
    by_id = {ti_id: task for task, ti_id in tasks.items()}
    states: dict[str, str] = {}
    for state, ti_id in re.findall(r"new_state=(\w+) .*?ti_id=([\w-]+)", output):
        states[by_id[ti_id]] = state
    return states
