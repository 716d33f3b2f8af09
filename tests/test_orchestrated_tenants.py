"""Tenants in the orchestrators: Dagster partitions and Airflow mapped tasks, one simulator per tenant.

A tenant is a ``[sources.avepoint_dynamics_<tenant>]`` section (here ``SOURCES__AVEPOINT_DYNAMICS_<T>__*``
env vars, as in production); each partition or mapped task loads it through the tenant's own dlt pipeline.
One tenant's service fails: its partition (task) fails, the others load, exact against their simulators;
run again once the service is back, it is exact too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from avepoint_simulator import Simulator

from .conftest import config_env
from .expected import assert_rows_equal
from .test_orchestrators import DAG_FILE, airflow_python, dagster_installed  # noqa: F401

NAMES = ["contoso", "fabrikam", "northwind"]
FAILING = "fabrikam"


@dataclass
class World:
    """A simulator per tenant, their sections as env vars, and the DuckDB file they all load into."""

    sims: dict[str, Simulator]
    env: dict[str, str]
    duckdb_path: Path

    def rows(self) -> dict[str, dict[str, dict[str, Any]]]:
        grouped: dict[str, dict[str, dict[str, Any]]] = {tenant: {} for tenant in self.sims}
        with duckdb.connect(str(self.duckdb_path), read_only=True) as con:
            cursor = con.execute("SELECT * FROM avepoint.jobs")
            names = [d[0] for d in cursor.description]
            for values in cursor.fetchall():
                row = dict(zip(names, values, strict=True))
                grouped[row["tenant"]][row["job_id"]] = row
        return grouped

    def assert_exact(self, *tenants: str) -> None:
        rows = self.rows()
        for tenant in tenants:
            assert_rows_equal(rows[tenant], self.sims[tenant].world.ground_truth())

    def backed_up_now(self) -> None:
        """Every organization of every tenant gets a successful backup now: no backup is stale."""
        for sim in self.sims.values():
            for organization in sim.world.organizations:
                (job,) = sim.world.add_jobs(1, organization_id=organization["id"])
                sim.world.patch_job(job["jobId"], type=1, status=3)

    def night(self) -> dict[str, int]:
        """Running jobs finish, new ones arrive; the history's size per tenant before it."""
        sizes = {}
        for tenant, sim in self.sims.items():
            sizes[tenant] = sim.world.total()
            sim.world.finish_running()
            sim.world.add_jobs(25, running=3)
            sim.reset_stats()
        return sizes


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with ExitStack() as stack:
        sims = {
            tenant: stack.enter_context(Simulator(jobs=600 + 200 * n, seed=900 + n))
            for n, tenant in enumerate(NAMES)
        }
        env = {"RUNTIME__DLTHUB_TELEMETRY": "false", "AVEPOINT_DESTINATION": "duckdb"}
        env["AVEPOINT_DUCKDB_PATH"] = str(tmp_path / "jobs.duckdb")
        for tenant, sim in sims.items():
            env.update(config_env(sim, f"avepoint_dynamics_{tenant}", max_attempts="2"))
        yield World(sims, env, tmp_path / "jobs.duckdb")


def _jobs_requests(sim: Simulator) -> int:
    return int(sim.stats()["jobs_requests"])


# ---------------------------------------------------------------------------------------- Dagster
@pytest.mark.usefixtures("dagster_installed")
def test_dagster_tenants_are_partitions_and_a_failed_one_runs_again_alone(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg
    from avepoint_pipelines.orchestrators import dagster_defs

    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AVEPOINT_PIPELINES_DIR", str(tmp_path / "pipelines"))
    world.sims[FAILING].set_faults(error_rate=1.0)
    instance = dg.DagsterInstance.ephemeral()

    def materialize(tenant: str) -> Any:
        # each run loads the code location anew; the tenants come from the sections found there
        defs = dagster_defs.defs()
        assert defs.assets is not None
        return dg.materialize(
            list(defs.assets), partition_key=tenant, instance=instance, raise_on_error=False
        )

    # what `dagster dev` shows: the jobs asset, a partition per tenant with a section
    defs = dagster_defs.defs()
    asset = defs.resolve_assets_def(dagster_defs.JOBS_ASSET)
    assert asset.partitions_def is not None
    assert asset.partitions_def.get_partition_keys() == NAMES
    # the daily schedule asks for every partition
    schedule = defs.resolve_schedule_def("avepoint_jobs_daily_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")
    night = datetime(2026, 12, 3, 2, tzinfo=UTC)
    ticks = schedule.evaluate_tick(
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=night,
            repository_def=defs.get_repository_def(),
        )
    )
    assert sorted((r.partition_key, r.run_key) for r in ticks.run_requests or []) == [
        (t, f"{t}:2026-12-03") for t in NAMES
    ]
    assert all(_jobs_requests(sim) == 0 for sim in world.sims.values())  # nothing read yet

    first = {tenant: materialize(tenant) for tenant in NAMES}

    assert {t: r.success for t, r in first.items()} == {t: t != FAILING for t in NAMES}
    failure = next(
        e for e in first[FAILING].all_events if e.event_type_value == "STEP_FAILURE"
    ).step_failure_data.error
    assert failure.message.startswith(
        f"dagster._core.definitions.events.Failure: tenant {FAILING}: gave up"
    )
    world.assert_exact("contoso", "northwind")
    assert world.rows()[FAILING] == {}
    # each partition is a dlt pipeline of its own, with its own state
    assert sorted(p.name for p in (tmp_path / "pipelines").iterdir()) == [
        f"avepoint_dynamics_{t}" for t in NAMES
    ]
    materialized = instance.get_materialized_partitions(dagster_defs.JOBS_ASSET)
    assert materialized == {"contoso", "northwind"}

    full = {t: _jobs_requests(world.sims[t]) for t in ("contoso", "northwind")}
    world.night()
    world.sims[FAILING].set_faults(error_rate=0.0)

    again = {tenant: materialize(tenant) for tenant in NAMES if tenant != FAILING}
    # the failed tenant alone, as docs/orchestrators.md says
    home = tmp_path / "dagster_home"
    home.mkdir()
    rerun = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            *("asset", "materialize", "-m", "avepoint_pipelines.orchestrators.dagster_defs"),
            *("--select", "dlt_avepoint_dynamics_jobs", "--partition", FAILING),
        ],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert all(r.success for r in again.values())
    world.assert_exact(*NAMES)
    for tenant, requests in full.items():
        assert _jobs_requests(world.sims[tenant]) < requests / 3  # incremental, from its own state
    # the stale-backup check runs after a tenant's partition and reads every tenant's organizations
    defs = dagster_defs.defs()
    assert defs.assets is not None and defs.asset_checks is not None
    checked = dg.materialize(
        [*defs.assets, *defs.asset_checks], partition_key="contoso", instance=instance
    )
    assert checked.success
    (evaluation,) = checked.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.asset_key) == (
        "backups_fresh",
        dagster_defs.JOBS_ASSET,
    )
    labels = set(evaluation.metadata) - {"stale_organizations"}
    assert {label.split("/")[0] for label in labels} == set(NAMES)
    # the analyst views count every tenant's jobs
    with duckdb.connect(str(world.duckdb_path), read_only=True) as con:
        by_tenant = dict(
            con.execute(
                "SELECT tenant, sum(total) FROM avepoint.job_outcomes_daily GROUP BY 1"
            ).fetchall()
        )
    assert by_tenant == {t: len(sim.world.ground_truth()) for t, sim in world.sims.items()}


@pytest.mark.usefixtures("dagster_installed")
def test_dagster_without_tenant_sections_keeps_the_one_unpartitioned_asset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from avepoint_pipelines.load.pipeline import Target
    from avepoint_pipelines.orchestrators import dagster_defs

    for name in os.environ:
        if name.startswith("SOURCES__AVEPOINT_DYNAMICS_"):
            monkeypatch.delenv(name)
    with Simulator(jobs=10) as sim:
        for name, value in config_env(sim).items():
            monkeypatch.setenv(name, value)
        defs = dagster_defs.defs()
        given = dagster_defs.build_definitions(
            Target(duckdb_path=str(tmp_path / "j.duckdb")), tenants=["a", "b"]
        )
    asset = defs.resolve_assets_def(dagster_defs.JOBS_ASSET)
    assert asset.partitions_def is None
    partitioned = given.resolve_assets_def(dagster_defs.JOBS_ASSET).partitions_def
    assert partitioned is not None and partitioned.get_partition_keys() == ["a", "b"]


# ---------------------------------------------------------------------------------------- Airflow
TENANTS_DAG_SHAPE = """
import json
from avepoint_pipelines.orchestrators.airflow_dag import dag
print(json.dumps({
    t.task_id: {
        "type": type(t).__name__,
        "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
        "then": sorted(t.downstream_task_ids),
    }
    for t in dag.tasks
}))
"""


def test_airflow_maps_a_task_per_tenant_and_a_failed_tenant_fails_only_its_own(
    world: World,
    tmp_path: Path,
    airflow_python: Path,  # noqa: F811
) -> None:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "avepoint_dynamics_dag.py").write_text(DAG_FILE)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")},
        **world.env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    airflow = str(airflow_python.parent / "airflow")

    def run(*command: str, fails: bool = False) -> str:
        done = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert (done.returncode != 0) == fails, (
            f"{command} ended {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
        return done.stdout

    def listed(*command: str) -> Any:
        """The JSON an ``airflow ... -o json`` command prints (after any warning lines)."""
        lines = run(airflow, *command, "-o", "json").strip().splitlines()
        return json.loads(next(line for line in reversed(lines) if line.startswith("[")))

    def states() -> dict[str, str]:
        """Task states of the latest DAG run: ``load_tenant[<tenant>]``, ``analyst_views``, ..."""
        runs = listed("dags", "list-runs", "avepoint_dynamics_jobs")
        latest = max(runs, key=lambda r: r["start_date"])["run_id"]
        named = {}
        for task in listed("tasks", "states-for-dag-run", "avepoint_dynamics_jobs", latest):
            name = task["task_id"].split(".")[-1]
            if task["map_index"] not in ("", "-1"):
                name += f"[{NAMES[int(task['map_index'])]}]"
            named[name] = task["state"]
        return named

    world.backed_up_now()  # the DAG ends with the stale-backup alert: this world is fresh
    run(airflow, "db", "migrate")
    shape = json.loads(run(str(airflow_python), "-c", TENANTS_DAG_SHAPE).strip().splitlines()[-1])
    assert shape == {
        "avepoint_dynamics.load_tenant": {
            "type": "MappedOperator",
            "trigger_rule": "all_success",
            "then": ["analyst_views", "some_tenant_failed"],
        },
        "analyst_views": {
            "type": "PythonOperator",
            "trigger_rule": "all_done",
            "then": ["backup_freshness"],
        },
        "backup_freshness": {"type": "PythonOperator", "trigger_rule": "all_success", "then": []},
        "some_tenant_failed": {"type": "PythonOperator", "trigger_rule": "one_failed", "then": []},
    }
    world.sims[FAILING].set_faults(error_rate=1.0)

    run(
        airflow, "dags", "test", "avepoint_dynamics_jobs", fails=True
    )  # the run fails: a tenant did

    assert states() == {
        "load_tenant[contoso]": "success",
        "load_tenant[fabrikam]": "failed",
        "load_tenant[northwind]": "success",
        "analyst_views": "success",
        "backup_freshness": "success",
        "some_tenant_failed": "failed",
    }
    world.assert_exact("contoso", "northwind")
    assert world.rows()[FAILING] == {}

    # the failed tenant alone, once its service is back
    world.sims[FAILING].set_faults(error_rate=0.0)
    runs = listed("dags", "list-runs", "avepoint_dynamics_jobs")
    run_id = max(runs, key=lambda r: r["start_date"])["run_id"]
    before = {t: _jobs_requests(sim) for t, sim in world.sims.items()}
    index = str(NAMES.index(FAILING))
    test_task = ("tasks", "test", "avepoint_dynamics_jobs", "avepoint_dynamics.load_tenant")
    run(airflow, *test_task, run_id, "--map-index", index)
    world.assert_exact(*NAMES)
    assert {
        t: _jobs_requests(sim) - before[t] for t, sim in world.sims.items() if t != FAILING
    } == {
        "contoso": 0,
        "northwind": 0,
    }

    full = {t: _jobs_requests(sim) for t, sim in world.sims.items()}
    world.night()

    run(airflow, "dags", "test", "avepoint_dynamics_jobs")

    assert set(states().values()) == {"success", "skipped"}
    world.assert_exact(*NAMES)
    for tenant, sim in world.sims.items():
        # each task's working folder was new: the state came back from the tenant's own rows
        assert _jobs_requests(sim) < full[tenant] / 3
