"""Services that read their time window another way (issue 16), against the simulator over HTTPS.

``check --deep`` must tell each reading apart with a few dozen requests and nothing loaded; ``load``
must stay exact under each, through nights with new jobs, jobs finishing, jobs that run for days, and
the fault matrix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from avepoint_dynamics import check_service
from avepoint_dynamics.state import service_state
from avepoint_simulator import Faults, Simulator

from .cli_runs import cli
from .conftest import Loader, config_env, credentials_for
from .test_reliability import assert_exact_after_faults

DAY_S = 86_400.0


READINGS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "start": (
        {},
        [
            "time window selects:   jobs that started in it",
            "window bounds:         start inclusive, end exclusive",
            "running jobs returned: yes",
            "order:                 newest first, stable",
            "largest page size:     100 (larger ones refused)",
            "total reported:        yes",
            "answer fields:         jobs, nextLink, pageIndex, pageSize, totalCount",
            "unknown job fields:    none",
        ],
    ),
    "start_end_inclusive": ({"window": "inclusive"}, ["start inclusive, end inclusive"]),
    "start_start_exclusive": (
        {"window_start_exclusive": True},
        ["start exclusive, end exclusive"],
    ),
    "overlap": (
        {"window_selects": "overlap"},
        ["jobs that ran during it", "running jobs returned: yes"],
    ),
    "finish": (
        {"window_selects": "finish"},
        ["jobs that finished in it", "running jobs returned: no"],
    ),
    "ignored": ({"window": "ignored"}, ["every job, whatever the window"]),
    "oldest_first_capped_draft_no_total": (
        {"sort": "oldest", "oversize_pages": "cap", "wrapper": "draft", "report_total": False},
        [
            "order:                 oldest first",
            "largest page size:     100 (larger ones capped)",
            "answer fields:         result",
            "total reported:        no",
        ],
    ),
    "pages_of_any_size": ({"oversize_pages": "serve"}, ["1000 (larger ones served)"]),
}


@pytest.mark.parametrize("reading", list(READINGS))
def test_check_deep_tells_how_the_service_reads_its_requests_and_loads_nothing(
    reading: str, tmp_path: Path
) -> None:
    faults, says = READINGS[reading]
    with Simulator(jobs=1_500, seed=41, running=3, faults=Faults(**faults)) as sim:
        shown = cli(["check", "--deep"], None, tmp_path, config_env(sim))

        assert shown.returncode == 0, shown.stderr
        for line in says:
            assert line in shown.stdout, (line, shown.stdout)
        assert sim.stats()["jobs_requests"] <= 30  # a few dozen requests at most
        assert not list(tmp_path.glob("*.duckdb")), "check --deep loads nothing"


def test_check_deep_names_fields_it_does_not_know_and_says_could_not_tell(tmp_path: Path) -> None:
    with Simulator(jobs=1_500, seed=42, running=0) as sim:
        newest = sim.world.ground_truth()[-1]
        sim.world.patch_job(newest["jobId"], retentionDays=30)
        findings = check_service(
            credentials=credentials_for(sim), base_url=sim.base_url, ca_bundle=sim.ca_file
        )
        assert findings.unknown_fields == ["retentionDays"]
        assert findings.running_in_windows is None  # nothing runs: could not tell
        assert any("running" in note for note in findings.notes)

    with Simulator(jobs=3, seed=43, running=0) as tiny:
        findings = check_service(
            credentials=credentials_for(tiny), base_url=tiny.base_url, ca_bundle=tiny.ca_file
        )
        assert findings.max_page_size is not None and findings.oversize_pages is None
        assert "could not tell" in "\n".join(findings.lines())


LOAD_READINGS: dict[str, dict[str, Any]] = {
    "start": {},
    "start_end_inclusive": {"window": "inclusive"},
    "start_start_exclusive": {"window_start_exclusive": True},
    "overlap": {"window_selects": "overlap"},
    "finish": {"window_selects": "finish"},
    "ignored": {"window": "ignored"},
}
FAULT_MATRIX: dict[str, Any] = {
    "error_rate": 0.1,
    "drop_rate": 0.05,
    "truncate_rate": 0.05,
    "rate_limit_burst": 0.05,
    "token_lifetime_s": 2,
}


@pytest.mark.parametrize("reading", list(LOAD_READINGS))
def test_load_is_exact_under_each_reading_of_the_window_through_nights_and_faults(
    reading: str, tmp_path: Path
) -> None:
    faults = Faults(**LOAD_READINGS[reading], **FAULT_MATRIX)
    with Simulator(jobs=2_000, seed=44, running=5, faults=faults) as sim:
        loader = Loader(sim, tmp_path)
        loader.load(page_size=50, max_concurrency=4)
        assert_exact_after_faults(sim, loader)
        learnt = _findings(loader)
        expected = "ignored" if reading == "ignored" else faults.window_selects
        assert learnt["window_selects"] == expected

        # a night: new jobs, some still running; the running ones of the history finish
        sim.world.finish_running()
        sim.world.add_jobs(40, running=6)
        loader.load(page_size=50, max_concurrency=4)
        assert_exact_after_faults(sim, loader)

        # two days pass on the service: the jobs still running ran for days, then some finish
        sim.set_faults(clock_offset_s=2 * DAY_S)
        sim.world.add_jobs(30, running=3)
        loader.load(page_size=50, max_concurrency=4)
        assert_exact_after_faults(sim, loader)
        running = [j["jobId"] for j in sim.world.ground_truth() if j["status"] == 2]
        sim.world.finish_running(running[: len(running) // 2 + 1])
        sim.world.add_jobs(25, running=2)
        loader.load(page_size=50, max_concurrency=4)
        assert_exact_after_faults(sim, loader)


def test_answers_that_contradict_the_findings_warn_and_the_next_run_learns_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Simulator(jobs=1_500, seed=45) as sim:
        loader = Loader(sim, tmp_path)
        loader.load()
        assert _findings(loader)["window_selects"] == "start"

        sim.set_faults(window="ignored")  # the service changed its reading
        sim.world.add_jobs(10)
        with caplog.at_level(logging.WARNING, logger="avepoint_dynamics"):
            loader.load()
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "contradicts how this service was found to read its window" in said
        assert "check --deep" in said
        assert _findings(loader)["stale"] is True
        assert_exact_after_faults(sim, loader)

        sim.world.add_jobs(5)
        loader.load()
        assert _findings(loader)["window_selects"] == "ignored"
        assert_exact_after_faults(sim, loader)


def test_state_shows_the_findings_with_their_date(tmp_path: Path) -> None:
    with Simulator(jobs=500, seed=46) as sim:
        env = config_env(sim)
        target = ["--duckdb-path", str(tmp_path / "jobs.duckdb")]
        for command in (["load", *target], ["state", *target]):
            done = cli(command, None, tmp_path, env)
            assert done.returncode == 0, done.stderr
        service = json.loads(done.stdout)["service"]
        assert service["window_selects"] == "start" and service["checked_at"]
        assert service["base_url"] == sim.base_url


def _findings(loader: Loader) -> dict[str, Any]:
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name=loader.pipeline_name, pipelines_dir=str(loader.workdir / "pipelines")
    )
    (findings,) = service_state(pipeline).values()
    return dict(findings)
