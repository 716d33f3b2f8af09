"""Exit codes a scheduler acts on: an interrupted or terminated load, and jobs set aside in jobs_rejected.

A stop request (Ctrl-C, or the SIGTERM that schedulers and containers send) ends the run with its own
code and leaves nothing half-written: the next run completes and the table equals the API's ground truth.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from avepoint_simulator import Simulator

from .cli_runs import cli, cli_command, cli_env
from .conftest import Loader
from .expected import assert_rows_equal
from .waiting import wait_until


@pytest.mark.parametrize(
    ("signum", "code", "says"),
    [
        (signal.SIGINT, 130, "interrupted (Ctrl-C); the next run picks up where this one stopped"),
        (signal.SIGTERM, 143, "terminated (SIGTERM); the next run picks up where this one stopped"),
    ],
)
def test_a_stopped_load_exits_with_its_code_and_the_next_run_is_complete(
    tmp_path: Path, signum: int, code: int, says: str
) -> None:
    with Simulator(jobs=3_000, seed=21, latency_ms=60) as slow:
        process = subprocess.Popen(
            cli_command("load", "--page-size", "20", "--max-concurrency", "2", "-q", cwd=tmp_path),
            env=cli_env(slow),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # extracting: pages are being read (150 of them at 60 ms, two at a time)
            wait_until(lambda: slow.stats()["jobs_requests"] >= 5, "the load to read pages")
            process.send_signal(signum)
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        assert slow.stats()["jobs_requests"] < 150, "the load finished before it was stopped"

        assert process.returncode == code, stderr
        assert stderr.splitlines() == [says]
        assert stdout == ""

        slow.set_faults(latency_ms=0)
        slow.world.add_jobs(5, running=1)
        again = cli(["load"], slow, tmp_path)

        assert again.returncode == 0, again.stderr
        loader = Loader(slow, tmp_path, pipeline_name="avepoint_dynamics")
        (count, distinct) = loader.query("SELECT count(*), count(DISTINCT job_id) FROM jobs")[0]
        assert count == distinct == 3_005
        assert_rows_equal(loader.rows(), slow.world.ground_truth())


def test_rejected_jobs_are_counted_and_fail_the_run_only_when_asked(
    sim: Simulator, tmp_path: Path
) -> None:
    bad = sim.world.ground_truth()[100]["jobId"]
    sim.world.patch_job(bad, totalRecord="lots")

    default = cli(["load"], sim, tmp_path)

    assert default.returncode == 0, default.stderr
    assert default.stdout.strip() == (
        "read 3,000 jobs from 30 pages; loaded 2,999 jobs (2,999 new, 0 updated, 0 deleted) into "
        "duckdb:avepoint (1 package); "
        "1 job set aside in jobs_rejected"
    )
    warnings = [line for line in default.stderr.splitlines() if " WARNING " in line]
    assert warnings[-1].endswith(
        "avepoint_dynamics.cli: 1 job set aside in jobs_rejected (see its reason column); "
        "each is read again every run, except one without a start time found in a time span over a day long (its own warning names the backfill that reads it again)"
    )

    strict = cli(["load", "--fail-on-rejected", "-q"], sim, tmp_path)

    assert strict.returncode == 5
    assert strict.stdout == ""
    assert strict.stderr.splitlines()[-1] == (
        "error: 1 job set aside in jobs_rejected (--fail-on-rejected)"
    )

    sim.world.patch_job(bad, totalRecord=1)
    fixed = cli(["load", "--fail-on-rejected"], sim, tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert "jobs_rejected" not in fixed.stdout
