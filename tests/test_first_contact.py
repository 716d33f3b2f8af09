"""First contact with a service whose details the docs leave open (issue 20), over HTTPS.

The simulator follows AvePoint's published pages literally where asked: the GET form with its three
required parameters (``strict_get``), busy tenants whose newest pages hold only running jobs, a job
listed several times in one page, a ``nextLink`` without its prefix, ``Retry-After: 0``, a page size
capped in silence. After every night the table equals the API's truth, field by field.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from avepoint_dynamics import learning as learning_module
from avepoint_dynamics.model import Window
from avepoint_dynamics.service import ServiceFindings, probe_service
from avepoint_dynamics.state import service_state
from avepoint_simulator import Faults, Simulator
from avepoint_simulator.api import in_milliseconds

from .cli_runs import cli, cli_env
from .conftest import Loader, config_env
from .expected import assert_rows_equal

DAY_S = 86_400.0
#: A small tenant; a busy one at night: its newest 260 jobs run, so the probe's first pages (100
#: jobs a page) hold only running jobs, more than two pages of them.
TENANTS: dict[str, dict[str, Any]] = {
    "small": {"jobs": 300, "running": 3, "history_days": 30.0},
    "busy": {"jobs": 700, "running": 260, "history_days": 20.0},
}
#: The API generations: v1 as the seed, v2 as its page documents it (three required parameters).
VERSIONS: dict[str, tuple[dict[str, Any], str]] = {
    "v1": ({}, "v1"),
    "v2_strict": ({"strict_get": True}, "v2"),
}
READINGS = ("start", "overlap", "finish")
#: A minute of lookback (the default is 10): a service may date a finish up to a second before it
#: shows it (the simulator does), and where running jobs are invisible (by finish, both bounds
#: required) no followed job catches that second.
LOAD = {"page_size": 50, "max_concurrency": 4, "lookback_minutes": 1}


def _visible(sim: Simulator) -> list[dict[str, Any]]:
    """The API's truth: every job some request can return.

    A service that selects by finish time and requires both bounds can return no running job at all
    (a running job finished in no window): there, running jobs are in its truth once they finish.
    """
    truth = sim.world.ground_truth()
    faults = sim.faults
    if faults.strict_get and faults.window_selects == "finish":
        return [job for job in truth if job["status"] != 2]
    return truth


def assert_table_is_truth(sim: Simulator, loader: Loader) -> None:
    rows = loader.rows()
    (count, distinct) = loader.query("SELECT count(*), count(DISTINCT job_id) FROM jobs")[0]
    assert count == distinct == len(rows)
    assert_rows_equal(rows, _visible(sim))


def _nights(sim: Simulator, loader: Loader, **args: Any) -> None:
    """Three nights after the full load: jobs start, run for days and finish; checked after each."""
    sim.world.finish_running(
        [j["jobId"] for j in sim.world.ground_truth() if j["status"] == 2][::2]
    )
    sim.world.add_jobs(40, running=12)
    loader.load(**LOAD, **args)
    assert_table_is_truth(sim, loader)

    sim.set_faults(clock_offset_s=2 * DAY_S)  # two days pass on the service
    sim.world.add_jobs(30, running=4)
    loader.load(**LOAD, **args)
    assert_table_is_truth(sim, loader)

    sim.world.finish_running()
    sim.world.add_jobs(25, running=3)
    loader.load(**LOAD, **args)
    assert_table_is_truth(sim, loader)


def _findings(loader: Loader) -> dict[str, Any]:
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name=loader.pipeline_name, pipelines_dir=str(loader.workdir / "pipelines")
    )
    (findings,) = service_state(pipeline).values()
    return dict(findings)


@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("tenant", list(TENANTS))
@pytest.mark.parametrize("reading", READINGS)
def test_loads_equal_the_truth_after_every_night_whatever_the_service(
    reading: str, tenant: str, version: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    switches, api_version = VERSIONS[version]
    faults = Faults(window_selects=reading, **switches)
    with Simulator(**TENANTS[tenant], seed=60, faults=faults) as sim:
        loader = Loader(sim, tmp_path, source_args={"api_version": api_version})
        with caplog.at_level(logging.WARNING, logger="avepoint_dynamics"):
            loader.load(**LOAD)
        assert_table_is_truth(sim, loader)
        warned = "running jobs are in no window, so they load once they finish" in caplog.text
        assert warned == (reading == "finish" and api_version == "v2")
        assert _findings(loader)["window_selects"] == reading  # the probe told, busy or not

        _nights(sim, loader)
        endpoint = "GetJobs" if api_version == "v1" else "v2jobs"
        # One 400 in all: the first run's probe asking 101 jobs a page (refused, as documented).
        assert sim.stats()["requests"].get(f"{endpoint} 400") == 1


@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("reading", READINGS)
def test_while_the_reading_is_unknown_loads_read_the_safe_way_and_stay_exact(
    reading: str,
    version: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    probes: list[ServiceFindings] = []

    def cannot_tell(client: Any) -> ServiceFindings:
        """The real probe, told nothing about the window (a service that defeats it)."""
        findings = probe_service(client)
        findings.window_selects = findings.start_bound = findings.end_bound = None
        findings.running_in_windows = None
        findings.notes.append("time window: no finished job found (test)")
        findings.running_jobs = client.fetch_page(Window(None, None, 2), 1, 1).total
        probes.append(findings)
        return findings

    monkeypatch.setattr(learning_module, "probe_service", cannot_tell)
    switches, api_version = VERSIONS[version]
    faults = Faults(window_selects=reading, **switches)
    with Simulator(**TENANTS["busy"], seed=61, faults=faults) as sim:
        loader = Loader(sim, tmp_path, source_args={"api_version": api_version})
        with caplog.at_level(logging.WARNING, logger="avepoint_dynamics"):
            loader.load(**LOAD)
        assert_table_is_truth(sim, loader)
        said = [r.getMessage() for r in caplog.records if "read the safe way" in r.getMessage()]
        assert len(said) == 1, said  # once a run
        assert "is unknown" in said[0] and "running jobs read without a window (+" in said[0]
        assert _findings(loader)["window_selects"] is None  # kept as unknown, honestly

        _nights(sim, loader)
        assert len(probes) == 4  # every run checks again
        said = [r.getMessage() for r in caplog.records if "read the safe way" in r.getMessage()]
        assert len(said) == 4


@pytest.mark.parametrize("reading", READINGS)
def test_check_deep_names_the_reading_of_a_busy_tenant_on_the_documented_get_form(
    reading: str, tmp_path: Path
) -> None:
    faults = Faults(window_selects=reading, strict_get=True)
    with Simulator(**TENANTS["busy"], seed=62, faults=faults) as sim:
        shown = cli(["check", "--deep"], None, tmp_path, config_env(sim, api_version="v2"))

        assert shown.returncode == 0, shown.stderr
        told = {
            "start": "jobs that started in it",
            "overlap": "jobs that ran during it",
            "finish": "jobs that finished in it",
        }
        assert f"time window selects:   {told[reading]}" in shown.stdout, shown.stdout
        assert "safe way" not in shown.stdout
        assert sim.stats()["jobs_requests"] <= 30


def test_check_deep_says_plainly_when_it_cannot_tell_and_what_the_safe_way_costs(
    tmp_path: Path,
) -> None:
    with Simulator(jobs=150, running=150, history_days=5, seed=63) as sim:  # nothing finished yet
        shown = cli(["check", "--deep"], None, tmp_path, config_env(sim))

        assert shown.returncode == 0, shown.stderr
        assert "time window selects:   could not tell" in shown.stdout, shown.stdout
        assert (
            "loads read the safe way (exact whether windows select by start, overlap or finish)"
            in shown.stdout
        )
        assert "plus the 150 running jobs read without a window (+2 requests at page size 100)" in (
            shown.stdout
        )
        requests = sim.stats()["jobs_requests"]
        assert f"plus {requests} requests to check again on each run" in shown.stdout


@pytest.mark.parametrize("answer", ["413", "422", "500", "drop"])
def test_an_oversize_page_probe_that_fails_tells_nothing_and_never_fails_a_load(
    answer: str, tmp_path: Path
) -> None:
    with Simulator(jobs=400, seed=64, faults=Faults(oversize_pages=answer)) as sim:
        loader = Loader(sim, tmp_path)
        loader.load(max_attempts=2, **LOAD)

        assert_table_is_truth(sim, loader)
        findings = _findings(loader)
        assert findings["oversize_pages"] is None and findings["window_selects"] == "start"
        said = "got no answer" if answer == "drop" else f"got HTTP {answer}"
        assert any(said in note for note in findings["notes"]), findings["notes"]


def test_a_400_naming_fields_exits_2_naming_them(tmp_path: Path) -> None:
    faults = Faults(max_page_size=20)  # pageSize over 20 refused, naming the field
    with Simulator(jobs=100, seed=65, faults=faults) as sim:
        target = ["--duckdb-path", str(tmp_path / "jobs.duckdb")]
        done = cli(
            ["load", *target], None, tmp_path, config_env(sim, api_version="v2", page_size="50")
        )

        assert done.returncode == 2, (done.returncode, done.stderr)
        assert "naming the field(s) pageSize" in done.stderr
        assert "In processing pipe" not in done.stderr and "Traceback" not in done.stderr


def test_documented_answer_shapes_load_exactly(tmp_path: Path) -> None:
    """A job three times in one page, a nextLink without its prefix, Retry-After 0 and a past date."""
    faults = Faults(
        strict_get=True,
        repeat_in_page=2,
        next_link="short",
        rate_limit_burst=0.2,
        retry_after_s=0,
    )
    with Simulator(jobs=600, running=5, seed=66, faults=faults) as sim:
        loader = Loader(sim, tmp_path, source_args={"api_version": "v2"})
        loader.load(**LOAD)
        assert_table_is_truth(sim, loader)

        sim.set_faults(retry_after_format="date", retry_after_s=-60)  # a date already past
        sim.world.add_jobs(30, running=3)
        loader.load(**LOAD)
        assert_table_is_truth(sim, loader)
        requests = sim.stats()["requests"]
        assert requests.get("v2jobs 429", 0) > 0, requests
        assert not any(key.startswith("other") for key in requests), requests  # no /jobs followed


def test_a_page_size_the_service_caps_in_silence_is_noticed_and_paging_stays_complete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Simulator(jobs=700, seed=67, faults=Faults(max_page_size=30, oversize_pages="cap")) as sim:
        loader = Loader(sim, tmp_path)
        with caplog.at_level(logging.WARNING, logger="avepoint_dynamics"):
            loader.load(**LOAD)
        assert_table_is_truth(sim, loader)
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "served 30 jobs on page 1" in said and "caps the page size" in said

        sim.world.add_jobs(80, running=4)
        loader.load(**LOAD)
        assert_table_is_truth(sim, loader)


@pytest.mark.parametrize("reading", READINGS)
def test_the_probe_tells_when_times_are_shown_rounded_to_milliseconds(
    reading: str, tmp_path: Path
) -> None:
    """AvePoint's samples show times in milliseconds next to a jobId of 100 ns ticks: the service may
    filter on a finer time than it shows. The probe's windows do not need to hit a time exactly."""
    faults = Faults(window_selects=reading, times_shown="milliseconds", strict_get=True)
    with Simulator(**TENANTS["busy"], seed=68, faults=faults) as sim:
        held = sim.world.ground_truth()
        assert any(len(job["startTime"].partition(".")[2]) > 4 for job in held)  # finer than ms
        loader = Loader(sim, tmp_path, source_args={"api_version": "v2"})
        loader.load(**LOAD)

        assert _findings(loader)["window_selects"] == reading
        shown = [in_milliseconds(job) for job in _visible(sim)]
        assert_rows_equal(loader.rows(), shown)
        sim.world.add_jobs(40, running=5)
        loader.load(**LOAD)
        assert_rows_equal(loader.rows(), [in_milliseconds(job) for job in _visible(sim)])


def test_the_documented_literal_service_runs_as_typed_and_check_deep_tells_its_reading(
    tmp_path: Path,
) -> None:
    """docs/simulator-contract.md's command (20,000 jobs, the newest 400 running, the GET form as
    documented, a job repeated in each page, a short nextLink, times in milliseconds), run as typed."""
    page = (Path(__file__).parent.parent / "docs" / "simulator-contract.md").read_text()
    (command,) = [
        line.strip("`.")
        for line in page.splitlines()
        if line.startswith("`avepoint-simulator --jobs 20000")
    ]
    scripts = Path(sys.executable).parent
    process = subprocess.Popen(
        [str(scripts / command.split()[0]), *command.split()[1:]],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # the JSON line; the export lines follow
        lines = [process.stdout.readline().strip() for _ in range(6)]
        exports = {
            key: shlex.split(value)[0]
            for key, value in (
                line.removeprefix("export ").split("=", 1)
                for line in lines
                if line.startswith("export ")
            )
        }
        env = {**cli_env(), **exports, "SOURCES__AVEPOINT_DYNAMICS__API_VERSION": "v2"}
        shown = subprocess.run(
            [str(scripts / "avepoint-dynamics"), "check", "--deep"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert shown.returncode == 0, shown.stderr
        assert "time window selects:   jobs that started in it" in shown.stdout, shown.stdout
    finally:
        process.terminate()
        process.wait(timeout=15)
