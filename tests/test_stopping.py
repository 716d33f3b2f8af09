"""A stop ends a run within seconds whatever it has in flight, and the next run is exact.

The service stalls: every request hangs for a minute (the simulator's ``latency_ms=60000``). SIGTERM and
Ctrl-C must still end the run within 5 s (Kubernetes, Airflow and Dagster give 30 s before SIGKILL); the
tests allow 15 s for a loaded machine. Through the CLI, through the Python API, and with tenants side by
side.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from avepoint_dynamics.retries import RetryPolicy
from avepoint_simulator import Simulator

from .cli_runs import cli, cli_command, cli_env
from .conftest import Loader
from .expected import assert_rows_equal
from .waiting import wait_until

#: Requests hang for ten minutes. A run that waited for them instead of dropping them would exit no sooner
#: than an attempt's read timeout: the run must be gone before that (a cause, not a speed limit; the
#: issue's 5 s is printed, not asserted: a loaded machine is slow).
HANG_MS = 600_000
GIVE_UP_S = RetryPolicy().timeout_s * 0.75


def _stalled_then_stopped(sim: Simulator, process: subprocess.Popen[str], signum: int) -> float:
    """Let the run read, stall the service under it, stop the run; seconds from the signal to its exit."""
    try:
        # past learning how the service reads (about 15 requests, one at a time): pages in parallel
        wait_until(lambda: sim.stats()["jobs_requests"] >= 30, "the run to read pages")
        sim.set_faults(latency_ms=HANG_MS)
        wait_until(lambda: sim.stats()["in_flight"] >= 2, "requests hanging in flight")
        sent = time.monotonic()
        process.send_signal(signum)
        try:
            _, process.stderr_text = process.communicate(timeout=GIVE_UP_S)  # type: ignore[attr-defined]
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the run still waited for its hanging requests {GIVE_UP_S} s after the signal"
            )
        took = time.monotonic() - sent
        print(f"stopped {took:.2f} s after the signal")
        return took
    finally:
        if process.poll() is None:
            process.kill()
        sim.set_faults(latency_ms=0)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_cli_stops_within_seconds_with_requests_hanging(
    tmp_path: Path, signum: int, code: int
) -> None:
    with Simulator(jobs=3_000, seed=21, latency_ms=40) as sim:
        process = subprocess.Popen(
            cli_command("load", "--page-size", "20", "--max-concurrency", "4", "-q", cwd=tmp_path),
            env=cli_env(sim),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _stalled_then_stopped(sim, process, signum)
        assert process.returncode == code

        sim.world.add_jobs(5, running=1)
        again = cli(["load"], sim, tmp_path)
        assert again.returncode == 0, again.stderr
        loader = Loader(sim, tmp_path, pipeline_name="avepoint_dynamics")
        assert_rows_equal(loader.rows(), sim.world.ground_truth())


PYTHON_API = """
import sys
from avepoint_dynamics import AvePointCredentials, avepoint_dynamics
from avepoint_pipelines.load.pipeline import Target, run_load

credentials = AvePointCredentials()
credentials.client_id, credentials.client_secret, credentials.identity_url = sys.argv[1:4]
source = avepoint_dynamics(
    credentials=credentials, base_url=sys.argv[4], ca_bundle=sys.argv[5], page_size=20,
    max_concurrency=4, lookback_minutes=0,
)
try:
    run_load(source, Target(duckdb_path=sys.argv[6], pipelines_dir=sys.argv[7]))
except Exception as error:  # dlt wraps the interruption of a step in PipelineStepFailed
    if isinstance(getattr(error, "exception", None), KeyboardInterrupt):
        sys.exit(130)
    raise
"""


def test_python_api_stops_within_seconds_on_ctrl_c(tmp_path: Path) -> None:
    with Simulator(jobs=3_000, seed=22, latency_ms=40) as sim:
        args = [sim.client_id, sim.client_secret, sim.identity_url, sim.base_url, str(sim.ca_file)]
        where = [str(tmp_path / "jobs.duckdb"), str(tmp_path / "pipelines")]
        process = subprocess.Popen(
            [sys.executable, "-c", PYTHON_API, *args, *where],
            env=cli_env(sim),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _stalled_then_stopped(sim, process, signal.SIGINT)
        assert process.returncode == 130, process.stderr_text  # type: ignore[attr-defined]

        loader = Loader(sim, tmp_path, pipeline_name="avepoint_dynamics")
        loader.load(page_size=20)
        assert_rows_equal(loader.rows(), sim.world.ground_truth())


def test_tenants_side_by_side_stop_within_seconds(tmp_path: Path) -> None:
    """Two tenants in threads of one process: SIGTERM reaches the main thread only; both still stop."""
    with Simulator(jobs=3_000, seed=23, latency_ms=40) as sim:
        env = cli_env(sim, "avepoint_dynamics_alpha", "avepoint_dynamics_bravo")
        tenants = ["--tenants", "alpha,bravo", "--parallel", "2"]
        process = subprocess.Popen(
            cli_command(
                "load", *tenants, "--page-size", "20", "--max-concurrency", "2", "-q", cwd=tmp_path
            ),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _stalled_then_stopped(sim, process, signal.SIGTERM)
        assert process.returncode == 143, process.stderr_text  # type: ignore[attr-defined]

        again = cli(["load", *tenants], None, tmp_path, env)
        assert again.returncode == 0, again.stderr
        truth = {job["jobId"] for job in sim.world.ground_truth()}
        with duckdb.connect(str(tmp_path / "jobs.duckdb"), read_only=True) as con:
            for tenant in ("alpha", "bravo"):
                rows = con.execute(
                    "SELECT job_id FROM avepoint.jobs WHERE tenant = ?", [tenant]
                ).fetchall()
                assert sorted(row[0] for row in rows) == sorted(truth)


@pytest.mark.unit
def test_a_stopped_pool_fails_what_is_in_flight_and_takes_nothing_more() -> None:
    import threading

    from avepoint_dynamics.stopping import PagePool, RunStopped, StopSignal

    stop = StopSignal()
    release = threading.Event()
    pool = PagePool(2, stop)
    hanging = pool.submit(release.wait, 60)
    wait_until(lambda: hanging.running(), "the request to start")
    stop.set()
    with pytest.raises(RunStopped):
        hanging.result(timeout=5)
    with pytest.raises(RunStopped):
        pool.submit(lambda: 1).result(timeout=5)
    release.set()  # what the abandoned request brings back is dropped


@pytest.mark.unit
def test_a_retry_wait_ends_when_its_run_stops() -> None:
    import threading

    from avepoint_dynamics.stopping import RunStopped, interruptible_sleep, run_scope

    with run_scope() as stop:
        threading.Timer(0.05, stop.set).start()
        with pytest.raises(RunStopped):
            interruptible_sleep(600)
