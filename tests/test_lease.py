"""One writer per (dataset, tenant) wherever runs start: the lease kept in the destination.

Two working folders (an Airflow task's fresh folder, a second host, a backfill with its own
``--pipelines-dir``) against one DuckDB file and against one PostgreSQL dataset: the second run is turned
away with exit 75 while the first holds the lease, another tenant is not, and a lease whose holder died
(killed on this host, or silent on another past its expiry) does not block the next run.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from avepoint_pipelines.load.lease import DatasetBusy, DestinationLease
from avepoint_pipelines.load.pipeline import Target, make_pipeline
from avepoint_simulator import Simulator

from .cli_runs import cli_command, cli_env
from .conftest import Loader, PostgresServer
from .test_orchestrators import airflow_python  # noqa: F401 (a fixture)
from .waiting import wait_until


def _env(sim: Simulator, **extra: str) -> dict[str, str]:
    sections = ("avepoint_dynamics_alpha", "avepoint_dynamics_bravo", "avepoint_dynamics")
    return {**cli_env(sim, *sections), **extra}


def _load(folder: Path, database: Path, *args: str) -> list[str]:
    return cli_command(
        "load", "--duckdb-path", str(database), "--pipelines-dir", str(folder), *args
    )


def _second_run_is_turned_away(
    sim: Simulator,
    first: list[str],
    second: list[str],
    other_tenant: list[str],
    env: dict[str, str],
) -> None:
    """Run ``first`` slowly; while it reads, ``second`` exits 75 and ``other_tenant`` loads."""
    sim.set_faults(latency_ms=30)
    process = subprocess.Popen(
        first, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: sim.stats()["jobs_requests"] >= 30, "the first run to read pages")
        turned = subprocess.run(second, env=env, capture_output=True, text=True, timeout=300)
        assert turned.returncode == 75, turned.stderr
        assert "is being written by a load (pid" in turned.stderr
        assert "tenant alpha" in turned.stderr
        assert process.poll() is None, "the first run ended before the second was turned away"
        # Another tenant of the same dataset holds a lease of its own.
        other = subprocess.run(other_tenant, env=env, capture_output=True, text=True, timeout=300)
        assert other.returncode == 0, other.stderr
        sim.set_faults(latency_ms=0)
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
        sim.set_faults(latency_ms=0)
    # Once the first run gave the lease back, the second runs.
    again = subprocess.run(second, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr


def test_two_working_folders_one_duckdb_file(tmp_path: Path) -> None:
    database = tmp_path / "jobs.duckdb"
    with Simulator(jobs=3_000, seed=31) as sim:
        env = _env(sim)
        small = ["--page-size", "20", "--max-concurrency", "2", "-q"]
        _second_run_is_turned_away(
            sim,
            _load(tmp_path / "cli", database, "--tenant", "alpha", *small),
            _load(tmp_path / "airflow-task", database, "--tenant", "alpha", "-q"),
            _load(tmp_path / "airflow-task", database, "--tenant", "bravo", "-q"),
            env,
        )


def test_two_working_folders_one_postgres_dataset(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    where = ["--destination", "postgres", "--dataset", f"lease_{os.getpid()}"]
    with Simulator(jobs=3_000, seed=32) as sim:
        env = _env(sim, DESTINATION__POSTGRES__CREDENTIALS=server.url)
        small = ["--page-size", "20", "--max-concurrency", "2", "-q"]
        _second_run_is_turned_away(
            sim,
            _load(tmp_path / "host-a", tmp_path / "x", "--tenant", "alpha", *where, *small),
            _load(tmp_path / "host-b", tmp_path / "x", "--tenant", "alpha", *where, "-q"),
            _load(tmp_path / "host-b", tmp_path / "x", "--tenant", "bravo", *where, "-q"),
            env,
        )


def test_a_run_killed_on_this_host_does_not_block_the_next(tmp_path: Path) -> None:
    database = tmp_path / "jobs.duckdb"
    with Simulator(jobs=3_000, seed=33, latency_ms=30) as sim:
        env = _env(sim)
        first = subprocess.Popen(
            _load(tmp_path / "a", database, "--tenant", "alpha", "--page-size", "20", "-q"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_until(lambda: sim.stats()["jobs_requests"] >= 30, "the first run to read pages")
        first.send_signal(signal.SIGKILL)  # no chance to give the lease back
        first.wait(timeout=60)
        sim.set_faults(latency_ms=0)
        after = subprocess.run(
            _load(tmp_path / "b", database, "--tenant", "alpha"),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert after.returncode == 0, after.stderr
        assert "took over the lease" in after.stderr


def test_a_lease_held_on_another_host_expires(tmp_path: Path) -> None:
    """A host that went silent: its lease blocks until it expires (on the destination's clock), no longer."""
    target = Target(duckdb_path=str(tmp_path / "jobs.duckdb"), pipelines_dir=str(tmp_path / "a"))
    elsewhere = DestinationLease(make_pipeline(target), "alpha", target.duckdb_file, seconds=2)
    elsewhere.host = "another-host"
    elsewhere.acquire()
    elsewhere._stop.set()  # that host stops renewing (it died); it never releases

    here_target = replace(target, pipelines_dir=str(tmp_path / "b"))
    here = DestinationLease(make_pipeline(here_target), "alpha", target.duckdb_file, seconds=60)
    with pytest.raises(DatasetBusy, match=r"pid \d+ on another-host"):
        here.acquire()

    def taken() -> bool:
        try:
            here.acquire()
        except DatasetBusy:
            return False
        return True

    wait_until(taken, "the silent host's lease to expire", timeout_s=30, interval_s=0.5)
    here.release()


def test_a_run_whose_lease_was_taken_loads_nothing(tmp_path: Path) -> None:
    """Its renewals failed until the lease expired and another run took it: the check before the load says so."""
    from avepoint_pipelines.load.lease import LeaseLost

    target = Target(duckdb_path=str(tmp_path / "jobs.duckdb"), pipelines_dir=str(tmp_path / "a"))
    stalled = DestinationLease(make_pipeline(target), None, target.duckdb_file, seconds=1)
    stalled.acquire()
    stalled._stop.set()  # its renewals stop (a host cut off from the destination)
    other_target = replace(target, pipelines_dir=str(tmp_path / "b"))
    other = DestinationLease(make_pipeline(other_target), None, target.duckdb_file, seconds=60)

    def taken() -> bool:
        try:
            other.acquire()
        except DatasetBusy:
            return False
        return True

    wait_until(taken, "the stalled lease to expire", timeout_s=30, interval_s=0.5)
    with pytest.raises(LeaseLost, match="another run took it; nothing was loaded"):
        stalled.confirm()
    stalled.release()  # leaves the other run's lease alone
    other.confirm()
    other.release()


def test_a_dagster_run_is_turned_away_while_another_host_writes(
    sim: Simulator, loader: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster's own working folder: the dataset's lease still keeps it apart from a run elsewhere."""
    if importlib.util.find_spec("dagster_dlt") is None:
        pytest.skip("dagster-dlt is not installed: pip install -e '.[dagster]'")
    import dagster as dg
    from avepoint_pipelines.orchestrators import dagster_defs

    from .test_orchestrators import source_env

    for name, value in source_env(sim, loader).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AVEPOINT_PIPELINES_DIR", str(loader.workdir / "dagster"))
    elsewhere = DestinationLease(
        make_pipeline(loader.target()), None, str(loader.duckdb_path), seconds=600
    )
    elsewhere.host = "another-host"
    elsewhere.acquire()
    try:
        defs = dagster_defs.defs()
        assert defs.assets is not None and defs.resources is not None
        result = dg.materialize(list(defs.assets), resources=defs.resources, raise_on_error=False)
        assert not result.success
        failure = result.failure_data_for_node("avepoint_dynamics")
        assert failure is not None and failure.error is not None
        assert "is being written by a run (pid" in str(failure.error.to_string())
        assert "another-host" in str(failure.error.to_string())
        assert sim.stats()["jobs_requests"] == 0  # turned away before reading anything
    finally:
        elsewhere.release()
    result = dg.materialize(list(dagster_defs.defs().assets or []), resources=defs.resources)
    assert result.success


def test_an_airflow_run_is_turned_away_while_another_host_writes(
    sim: Simulator,
    loader: Loader,
    tmp_path: Path,
    airflow_python: Path,  # noqa: F811
) -> None:
    """Airflow's task has a fresh working folder each time: only the dataset's lease keeps it apart."""
    from .test_orchestrators import DAG_FILE, source_env

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

    def dags_test() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [airflow, "dags", "test", "avepoint_dynamics_jobs"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    migrated = subprocess.run(
        [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    elsewhere = DestinationLease(
        make_pipeline(loader.target()), None, str(loader.duckdb_path), seconds=600
    )
    elsewhere.host = "another-host"
    elsewhere.acquire()
    try:
        turned = dags_test()
        assert "is being written by a run (pid" in turned.stdout + turned.stderr
        assert sim.stats()["jobs_requests"] == 0  # turned away before reading anything
    finally:
        elsewhere.release()
    done = dags_test()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sim.stats()["jobs_requests"] > 0
