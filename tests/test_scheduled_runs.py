"""The nights a scheduler meets, against the simulator over HTTPS, into real DuckDB files.

Each test is one night (or a few): a loader clock off the service's, a status filter with jobs finishing
after the cursor passed them, an identity service that fails while tokens renew, certificate sign-in that
renews, a backfill racing a scheduled run, two tenants through `--tenant`, a big wave of running jobs, a job
that never ends. Each ends with the table compared with the simulator's ground truth, field by field,
and, where cost matters, the requests counted.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
from avepoint_simulator import Faults, Simulator

from .cli_runs import cli, cli_command, cli_env
from .conftest import Loader, config_env, credentials_for
from .expected import api_time, assert_rows_equal
from .waiting import wait_until

CERTIFICATE = {"client_secret": None}


def _certificate(sim: Simulator) -> Any:
    return credentials_for(
        sim, client_secret=None, private_key=sim.private_key_pem, certificate=sim.certificate_pem
    )


def _pfx(sim: Simulator) -> Any:
    return credentials_for(
        sim, client_secret=None, pfx_path=sim.pfx_path, pfx_password=sim.pfx_password
    )


def _night(sim: Simulator, arrivals: int = 40, running: int = 6) -> None:
    """Every running job finishes (any final status), new jobs arrive, some still running."""
    sim.world.finish_running()
    sim.world.add_jobs(arrivals, running=running)


# ---------------------------------------------------------------------- the loader's clock decides nothing
@pytest.mark.parametrize("offset_s", [-7_200, -600, 600, 7_200])
def test_a_loader_clock_minutes_or_hours_off_loses_nothing_and_delays_nothing(
    offset_s: float, tmp_path: Path
) -> None:
    # The simulator's clock runs ahead of (positive) or behind (negative) this machine's.
    with Simulator(jobs=2_000, seed=21, faults=Faults(clock_offset_s=offset_s)) as sim:
        loader = Loader(sim, tmp_path)
        credentials = _certificate(sim) if offset_s > 0 else credentials_for(sim)
        loader.load(credentials=credentials)
        assert_rows_equal(loader.rows(), sim.world.ground_truth())

        for _ in range(2):
            _night(sim)
            newest = sim.world.add_jobs(3)  # started a few milliseconds ago, on the service's clock
            loader.load(credentials=credentials)

            assert_rows_equal(loader.rows(), sim.world.ground_truth())  # nothing waits for a clock
            cursor = api_time(loader.state()["cursor"])
            assert cursor is not None and cursor > api_time(newest[-1]["startTime"])  # type: ignore[operator]
            # the cursor is the service's time, not this machine's
            service_now = sim.world.now_ticks() / 10_000_000
            assert abs(cursor.timestamp() - service_now) < 60


# ---------------------------------------------------------------------- filters on scheduled runs
@pytest.mark.parametrize(
    "filters",
    [{"status": 3}, {"status": 4}, {"status": 2}, {"status": 7, "job_type": 1}, {"job_type": 1}],
    ids=["finished", "failed", "in_progress", "with_exception_backups", "backups"],
)
def test_a_filter_holds_exactly_what_the_api_returns_after_every_night(
    filters: dict[str, Any], tmp_path: Path
) -> None:
    with Simulator(jobs=2_000, seed=22, running=30) as sim:
        loader = Loader(sim, tmp_path, source_args=dict(filters))

        def expected() -> list[dict[str, Any]]:
            status, job_type = filters.get("status"), filters.get("job_type")
            return [
                job
                for job in sim.world.ground_truth()
                if (status is None or job["status"] == status)
                and (job_type is None or job["type"] == job_type)
            ]

        loader.load()
        assert_rows_equal(loader.rows(), expected())
        for arrivals in (40, 25, 60):
            _night(sim, arrivals=arrivals, running=8)  # jobs finish after the cursor passed them
            loader.load()
            assert_rows_equal(loader.rows(), expected())


# ---------------------------------------------------------------------- the identity service fails too
def test_identity_outages_while_short_tokens_renew_lose_nothing(tmp_path: Path) -> None:
    faults = Faults(token_error_rate=0.35, token_drop_rate=0.2, token_lifetime_s=1, latency_ms=25)
    with Simulator(jobs=3_000, seed=23, faults=faults) as sim:
        loader = Loader(sim, tmp_path)
        loader.load(page_size=20, max_concurrency=2)

        assert_rows_equal(loader.rows(), sim.world.ground_truth())
        stats = sim.stats()["requests"]
        assert stats.get("token 200", 0) >= 3, stats  # tokens renewed during the run
        assert stats.get("token 503", 0) + stats.get("token drop", 0) >= 2, stats  # and failed


@pytest.mark.parametrize("kind", ["certificate", "pfx"])
def test_certificate_sign_in_renews_with_a_fresh_assertion_each_time(
    kind: str, tmp_path: Path
) -> None:
    # IdentityServer refuses an assertion whose jti it has seen: every token request needs a new one.
    with Simulator(jobs=3_000, seed=24, token_lifetime_s=1, latency_ms=40) as sim:
        loader = Loader(sim, tmp_path)
        credentials = _certificate(sim) if kind == "certificate" else _pfx(sim)
        loader.load(credentials=credentials, page_size=20, max_concurrency=2)

        assert_rows_equal(loader.rows(), sim.world.ground_truth())
        assert sim.stats()["requests"].get("token 200", 0) >= 3
        assert "token 400" not in sim.stats()["requests"]  # no replayed assertion refused


def test_the_cli_tells_refused_credentials_from_an_unavailable_identity_service(
    tmp_path: Path,
) -> None:
    with Simulator(jobs=100, seed=25) as sim:
        env = config_env(sim)
        wrong = cli(
            ["load"],
            None,
            tmp_path,
            {**env, "SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_SECRET": "wrong"},
        )
        assert wrong.returncode == 3, wrong.stderr
        assert sim.stats()["requests"].get("token 400") == 1  # a refusal is not retried

        sim.set_faults(token_error_rate=1.0)
        down = cli(
            ["load"],
            None,
            tmp_path,
            {**env, "SOURCES__AVEPOINT_DYNAMICS__MAX_ATTEMPTS": "3"},
        )
        assert down.returncode == 4, down.stderr
        last = down.stderr.strip().splitlines()[-1]
        assert last.startswith("error: the identity service at") and "stayed unavailable" in last
        assert sim.stats()["requests"].get("token 503", 0) >= 3
        assert sim.stats()["jobs_requests"] == 0


# ---------------------------------------------------------------------- backfills
def test_a_backfill_and_a_scheduled_run_never_interleave(tmp_path: Path) -> None:
    with Simulator(jobs=3_000, seed=26, latency_ms=150) as sim:
        env = config_env(sim, lookback_minutes="0", page_size="20", max_concurrency="1")
        backfill = subprocess.Popen(
            cli_command("backfill", "--from", "2000-01-01", cwd=tmp_path),
            env={**cli_env(), **env},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            lock = tmp_path / "pipelines" / "avepoint_dynamics" / "avepoint-run.lock"
            wait_until(
                lambda: lock.exists() and f"pid {backfill.pid}" in lock.read_text(),
                "the backfill to take the run lock",
            )
            wait_until(lambda: sim.stats()["jobs_requests"] >= 3, "the backfill to read pages")

            load = cli(["load"], None, tmp_path, env)

            assert load.returncode == 75, load.stderr
            last = load.stderr.strip().splitlines()[-1]
            assert "busy" in last and f"pid {backfill.pid}" in last and "try again" in last
            assert backfill.poll() is None  # the backfill goes on, untouched
        finally:
            _out, err = backfill.communicate(timeout=300)
        assert backfill.returncode == 0, err
        again = cli(["load"], None, tmp_path, env)
        assert again.returncode == 0, again.stderr
        assert_rows_equal(
            Loader(sim, tmp_path, "avepoint_dynamics").rows(), sim.world.ground_truth()
        )


def test_a_job_a_backfill_sees_running_is_followed_to_its_final_state(tmp_path: Path) -> None:
    with Simulator(jobs=2_000, seed=27) as sim:
        loader = Loader(sim, tmp_path)
        loader.load()
        truth = sim.world.ground_truth()
        old = truth[-200]  # days before the cursor: no scheduled run reads it again
        sim.world.patch_job(old["jobId"], status=2, finishTime=None, durationHours=None)
        start = api_time(old["startTime"])
        assert start is not None

        loader.load(initial_start_time=start.replace(hour=0, minute=0), end_time="now")

        assert loader.rows()[old["jobId"]]["status"] == 2
        assert old["jobId"] in loader.state()["open_jobs"]

        sim.world.patch_job(old["jobId"], status=3, finishTime=old["finishTime"])
        _night(sim)
        loader.load()
        assert loader.rows()[old["jobId"]]["status"] == 3
        assert old["jobId"] not in loader.state()["open_jobs"]


# ---------------------------------------------------------------------- tenants
def test_two_tenants_through_tenant_keep_their_own_pipeline_and_state(tmp_path: Path) -> None:
    with Simulator(jobs=900, seed=28) as contoso, Simulator(jobs=600, seed=29) as fabrikam:
        envs = {
            "contoso": config_env(contoso, section="avepoint_dynamics_contoso"),
            "fabrikam": config_env(fabrikam, section="avepoint_dynamics_fabrikam"),
        }

        def load(tenant: str) -> None:
            done = cli(["load", "--tenant", tenant], None, tmp_path, envs[tenant])
            assert done.returncode == 0, done.stderr

        def state(tenant: str) -> dict[str, Any]:
            shown = cli(["state", "--tenant", tenant], None, tmp_path, {})
            assert shown.returncode == 0, shown.stderr
            result: dict[str, Any] = json.loads(shown.stdout)
            return result

        load("contoso")
        load("fabrikam")  # its older history is not skipped by contoso's cursor

        rows = _rows_by_tenant(contoso, tmp_path)
        assert_rows_equal(rows["contoso"], contoso.world.ground_truth())
        assert_rows_equal(rows["fabrikam"], fabrikam.world.ground_truth())
        assert state("contoso")["cursor"] and state("fabrikam")["cursor"]
        assert state("contoso")["pipeline"] == "avepoint_dynamics_contoso"
        assert {path.name for path in (tmp_path / "pipelines").iterdir()} == {
            "avepoint_dynamics_contoso",
            "avepoint_dynamics_fabrikam",
        }

        _night(contoso)
        _night(fabrikam)
        contoso.reset_stats()
        load("contoso")
        assert contoso.stats()["jobs_requests"] < 10  # incremental from its own cursor
        rows = _rows_by_tenant(contoso, tmp_path)
        assert_rows_equal(rows["contoso"], contoso.world.ground_truth())

        reset = cli(["reset", "--tenant", "contoso", "--yes"], None, tmp_path, {})
        assert reset.returncode == 0, reset.stderr
        assert state("contoso")["cursor"] is None
        assert state("fabrikam")["cursor"] is not None  # only the one asked for


def _rows_by_tenant(sim: Simulator, cwd: Path) -> dict[str, dict[str, dict[str, Any]]]:
    loader = Loader(sim, cwd, pipeline_name="avepoint_dynamics")
    import duckdb

    with duckdb.connect(str(loader.duckdb_path), read_only=True) as con:
        cursor = con.execute("SELECT * FROM avepoint.jobs")
        names = [d[0] for d in cursor.description]
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for row in cursor.fetchall():
            record = dict(zip(names, row, strict=True))
            out.setdefault(record["tenant"], {})[record["job_id"]] = record
    return out


# ---------------------------------------------------------------------- cheap when nothing changed
def test_a_wave_of_running_jobs_costs_pages_not_a_request_each(tmp_path: Path) -> None:
    with Simulator(jobs=20_000, seed=30, running=400) as sim:
        loader = Loader(sim, tmp_path)
        loader.load()
        assert len(loader.state()["open_jobs"]) == 400

        sim.reset_stats()
        loader.load()  # nothing changed
        idle = sim.stats()["jobs_requests"]
        assert idle <= 1 + 4 + 1 + 2, (
            idle
        )  # clock, the wave's 4 pages, the new jobs, a probe or two

        sim.world.finish_running()
        sim.world.add_jobs(200, running=20)  # 1 % new
        sim.reset_stats()
        loader.load()
        assert sim.stats()["jobs_requests"] <= idle + 3
        assert_rows_equal(loader.rows(), sim.world.ground_truth())
        assert len(loader.state()["open_jobs"]) == 20


def test_a_job_that_never_ends_is_abandoned_after_the_age_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Simulator(jobs=2_000, seed=31, running=0) as sim:
        loader = Loader(sim, tmp_path)
        truth = sim.world.ground_truth()
        stuck = truth[len(truth) // 2]  # months ago
        sim.world.patch_job(stuck["jobId"], status=2, finishTime=None, durationHours=None)
        loader.load()
        assert stuck["jobId"] in loader.state()["open_jobs"]

        with caplog.at_level(logging.WARNING, logger="avepoint_dynamics"):
            loader.load(open_job_max_age_days=30)
        said = [r for r in caplog.records if stuck["jobId"] in r.getMessage()]
        assert len(said) == 1 and "no longer checking" in said[0].getMessage()
        state = loader.state()
        assert stuck["jobId"] not in state["open_jobs"]
        assert stuck["jobId"] in state["abandoned_jobs"] and state["abandoned_count"] == 1

        caplog.clear()
        sim.reset_stats()
        # it changes at the service: only a run that still followed it would load the change
        sim.world.patch_job(stuck["jobId"], totalRecord=987_654)
        with caplog.at_level(logging.WARNING, logger="avepoint_dynamics"):
            loader.load(open_job_max_age_days=30)
        assert not [r for r in caplog.records if stuck["jobId"] in r.getMessage()]
        assert loader.rows()[stuck["jobId"]]["total_record"] != 987_654
        # the clock, and a page of new jobs unless the clock's answer showed none
        assert sim.stats()["jobs_requests"] <= 2
        shown = cli(["state", "--pipeline-name", "avepoint_test"], None, tmp_path, {})
        assert json.loads(shown.stdout)["abandoned_jobs"] == 1
