"""An ordinary day's mistakes, through the CLI in a subprocess: each gets its one clear answer.

A tenant without a section, a misspelt key, a reset or a state of a pipeline that never ran, an alert
during a load, an http:// URL, an initial_start_time given once a cursor exists, set-aside jobs, log
levels and JSON output: none passes in silence, and none loses, duplicates or mislabels a job.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from avepoint_simulator import Simulator

from .cli_runs import cli, cli_command, cli_env
from .conftest import Loader, config_env
from .expected import assert_rows_equal


@pytest.fixture
def world() -> Iterator[Simulator]:
    with Simulator(jobs=400, seed=52) as simulator:
        yield simulator


def _sections(sim: Simulator, *tenants: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for tenant in tenants:
        env.update(config_env(sim, section=f"avepoint_dynamics_{tenant}", lookback_minutes="0"))
    return env


def _table(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


# ---------------------------------------------------------------------- tenants
def test_a_tenant_without_a_section_is_an_error_not_the_default_tenant_twice(
    world: Simulator, tmp_path: Path
) -> None:
    result = cli(["load", "--tenants", "a,b"], world, tmp_path)

    assert result.returncode == 2, result.stderr
    errors = _errors(result)
    assert len(errors) == 2
    for tenant in ("a", "b"):
        assert any(
            f"error: tenant {tenant}: config error in sources.avepoint_dynamics_{tenant}: tenant "
            f"'{tenant}' has no section of its own: add [sources.avepoint_dynamics_{tenant}]" in e
            for e in errors
        ), errors
    assert world.stats()["jobs_requests"] == 0
    assert not (tmp_path / "jobs.duckdb").exists() or not _table(
        tmp_path / "jobs.duckdb",
        "SELECT * FROM information_schema.tables WHERE table_name = 'jobs'",
    )


def test_tenants_sharing_credentials_differ_by_the_filter_they_name(
    world: Simulator, tmp_path: Path
) -> None:
    orgs = [org["id"] for org in world.world.organizations[:2]]
    shared = {"SOURCES__AVEPOINT_DYNAMICS__TENANTS_DIFFER_BY": "organization_id"}
    # a tenant section holding only its filter: the shared credentials, one organization each
    env = {
        **shared,
        "SOURCES__AVEPOINT_DYNAMICS_A__ORGANIZATION_ID": orgs[0],
        "SOURCES__AVEPOINT_DYNAMICS_B__ORGANIZATION_ID": orgs[1],
    }

    result = cli(["load", "--tenants", "a,b"], world, tmp_path, env=env)

    assert result.returncode == 0, result.stderr
    rows = _table(tmp_path / "jobs.duckdb", "SELECT tenant, job_id FROM avepoint.jobs")
    truth = world.world.ground_truth()
    for tenant, org in zip(("a", "b"), orgs, strict=True):
        assert {j for t, j in rows if t == tenant} == {
            job["jobId"] for job in truth if job["organizationId"] == org
        }

    # a section with no credentials and without the named filter: refused, naming the key
    missing = cli(
        ["load", "--tenant", "c"],
        world,
        tmp_path,
        env={**shared, "SOURCES__AVEPOINT_DYNAMICS_C__PAGE_SIZE": "50"},
    )
    assert missing.returncode == 2
    assert (
        "config error in sources.avepoint_dynamics_c.organization_id: tenants share "
        "[sources.avepoint_dynamics]'s credentials and differ by organization_id" in missing.stderr
    )
    # two tenants naming the same organization would load the same jobs twice
    twice = cli(
        ["load", "--tenants", "a,e"],
        world,
        tmp_path,
        env={**env, "SOURCES__AVEPOINT_DYNAMICS_E__ORGANIZATION_ID": orgs[0].upper()},
    )
    assert twice.returncode == 2
    assert _errors(twice) == [
        f"error: config error in sources.avepoint_dynamics_e.organization_id: tenants 'a' and 'e' "
        f"share credentials (tenants_differ_by) and both set organization_id = "
        f"{orgs[0].upper()!r}: they would load the same jobs twice"
    ]
    # and without tenants_differ_by, a section with no credentials of its own borrows nothing
    borrowed = cli(
        ["load", "--tenant", "d"],
        world,
        tmp_path,
        env={"SOURCES__AVEPOINT_DYNAMICS_D__ORGANIZATION_ID": orgs[0]},
    )
    assert borrowed.returncode == 2
    assert "tenant 'd' has no credentials of its own" in borrowed.stderr


# ---------------------------------------------------------------------- misspelt keys
@pytest.mark.parametrize(
    ("toml", "env", "says"),
    [
        (
            'regoin = "us"',
            {},
            "config error in sources.avepoint_dynamics.regoin: unknown key 'regoin' in "
            "[sources.avepoint_dynamics] of config.toml; did you mean region?",
        ),
        (
            "page_sise = 50",
            {},
            "config error in sources.avepoint_dynamics.page_sise: unknown key 'page_sise' in "
            "[sources.avepoint_dynamics] of config.toml; did you mean page_size?",
        ),
        (
            "",
            {"SOURCES__AVEPOINT_DYNAMICS__PAGESIZE": "50"},
            "config error in sources.avepoint_dynamics.pagesize: SOURCES__AVEPOINT_DYNAMICS__PAGESIZE "
            "names no key of this source; did you mean SOURCES__AVEPOINT_DYNAMICS__PAGE_SIZE?",
        ),
        (
            "",
            {"SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENTID": "x"},
            "did you mean SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_ID?",
        ),
    ],
)
def test_a_misspelt_key_is_named_with_the_closest_known_one(
    world: Simulator, tmp_path: Path, toml: str, env: dict[str, str], says: str
) -> None:
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(f"[sources.avepoint_dynamics]\n{toml}\n")

    for command in (["load"], ["check"]):
        result = cli(command, world, tmp_path, env=env)

        assert result.returncode == 2, result.stderr
        assert _errors(result) == [f"error: {says}"] or says in result.stderr, result.stderr
    assert world.stats()["jobs_requests"] == 0


def test_a_misspelt_key_in_a_tenants_section_is_named_too(world: Simulator, tmp_path: Path) -> None:
    env = {**_sections(world, "a"), "SOURCES__AVEPOINT_DYNAMICS_A__LOOKBACK_MINUTS": "5"}

    result = cli(["load", "--tenants", "a"], world, tmp_path, env=env)

    assert result.returncode == 2
    assert (
        "config error in sources.avepoint_dynamics_a.lookback_minuts: "
        "SOURCES__AVEPOINT_DYNAMICS_A__LOOKBACK_MINUTS names no key of this source; did you mean "
        "SOURCES__AVEPOINT_DYNAMICS_A__LOOKBACK_MINUTES?" in result.stderr
    )


# ---------------------------------------------------------------------- state and reset
def test_reset_of_a_pipeline_that_never_ran_says_so_and_creates_nothing(tmp_path: Path) -> None:
    result = cli(["reset", "--yes"], None, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "nothing to forget: no state: pipeline 'avepoint_dynamics' never ran"
    )
    assert "PipelineNeverRan" not in result.stderr and "dlt pipeline" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_plain_reset_forgets_every_tenants_state_and_state_names_them(
    world: Simulator, tmp_path: Path
) -> None:
    env = _sections(world, "a", "b")
    assert cli(["load", "--tenants", "a,b"], world, tmp_path, env=env).returncode == 0

    # the default pipeline never ran here: state says so, and where the tenants' states are
    shown = cli(["state"], world, tmp_path)
    assert shown.returncode == 2 and shown.stdout == ""
    assert "never ran here" in shown.stderr
    assert "tenants loaded there: a, b (state --tenant NAME)" in shown.stderr

    reset = cli(["reset", "--yes"], world, tmp_path)

    assert reset.returncode == 0, reset.stderr
    assert "of its tenants a, b forgotten" in reset.stdout
    for tenant in ("a", "b"):
        state = json.loads(cli(["state", "--tenant", tenant, "--json"], world, tmp_path).stdout)
        assert state["cursor"] is None and state["open_jobs"] == 0


def test_state_json_is_one_object_and_names_the_filters_of_the_last_run(
    world: Simulator, tmp_path: Path
) -> None:
    assert cli(["load", "--status", "4"], world, tmp_path).returncode == 0
    assert cli(["load", "--job-type", "backup"], world, tmp_path).returncode == 0

    result = cli(["state", "--json"], world, tmp_path)

    assert result.returncode == 0
    assert len(result.stdout.strip().splitlines()) == 1
    state = json.loads(result.stdout)
    assert all(re.fullmatch(r"[a-z_]+", key) for key in state)
    assert state["filters"] == {"type": 1, "status": None}
    # the table now holds backups only: the failed jobs of other types are gone, and so is the
    # state of status 4 (a run under it again reads all it selects)
    assert "other_filters" not in state
    types = _table(tmp_path / "jobs.duckdb", "SELECT DISTINCT type FROM avepoint.jobs")
    assert types == [(1,)]
    assert cli(["load"], world, tmp_path).returncode == 0  # wider: the state of backups is kept
    state = json.loads(cli(["state", "--json"], world, tmp_path).stdout)
    assert state["filters"] == {"status": None} and list(state["other_filters"]) == ['{"type": 1}']


# ---------------------------------------------------------------------- alert during a load
def test_alert_while_a_load_holds_the_duckdb_file_answers_busy(
    world: Simulator, tmp_path: Path
) -> None:
    assert cli(["load"], world, tmp_path).returncode == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('holding', flush=True); "
            "sys.stdin.read()",
            str(tmp_path / "jobs.duckdb"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        busy = cli(["alert", "--wait", "0.5"], world, tmp_path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)

    assert busy.returncode == 75, busy.stderr
    assert _errors(busy) == [
        f"error: the DuckDB file {tmp_path / 'jobs.duckdb'} is being written by a load (it holds "
        "the file's lock) and stayed so for --wait 0.5 s; try again when it ends"
    ]
    assert cli(["alert"], world, tmp_path).returncode in (0, 6)  # the lock gone: an answer


# ---------------------------------------------------------------------- http:// against HTTPS
def test_http_against_an_https_service_says_to_use_https(world: Simulator, tmp_path: Path) -> None:
    plain = world.base_url.replace("https://", "http://")

    result = cli(["check", "--base-url", plain], world, tmp_path)

    assert result.returncode == 4
    assert _errors(result) == [
        f"error: cannot connect to the jobs API at {plain} (connection reset; the URL is http://: "
        "if the service speaks HTTPS (AvePoint's does), use https://); check base_url and the network"
    ]
    assert result.stderr.count("retrying page 1") == 2  # three quick attempts, not eight


# ---------------------------------------------------------------------- initial_start_time later
def test_initial_start_time_once_a_cursor_exists_points_at_backfill(
    world: Simulator, tmp_path: Path
) -> None:
    truth = world.world.ground_truth()
    middle = truth[len(truth) // 2]["startTime"][:10]
    assert cli(["load", "--initial-start-time", middle], world, tmp_path).returncode == 0

    again = cli(["load", "--initial-start-time", "2000-01-01"], world, tmp_path)

    assert again.returncode == 0
    said = re.search(r"run avepoint-dynamics (backfill --from \S+ --to \S+)", again.stderr)
    assert said, again.stderr
    assert "initial_start_time 2000-01-01T00:00:00.000000Z applies to a first run only" in (
        again.stderr
    )
    backfill = cli(said.group(1).split(), world, tmp_path)
    assert backfill.returncode == 0, backfill.stderr
    assert_rows_equal(Loader(world, tmp_path, pipeline_name="avepoint_dynamics").rows(), truth)


# ---------------------------------------------------------------------- set aside
def test_the_set_aside_count_is_the_rows_of_jobs_rejected_and_no_hint_warning(
    world: Simulator, tmp_path: Path
) -> None:
    truth = world.world.ground_truth()
    world.world.patch_job(
        truth[10]["jobId"], startTime="not a time"
    )  # in the first run's wide window
    world.world.patch_job(truth[20]["jobId"], totalRecord="many")
    world.world.patch_job(truth[30]["jobId"], finishTime="yesterday")
    env = _sections(world, "a")

    result = cli(["load", "--tenant", "a"], world, tmp_path, env=env)

    assert result.returncode == 0, result.stderr
    rows = _table(tmp_path / "jobs.duckdb", "SELECT count(*) FROM avepoint.jobs_rejected")[0][0]
    assert rows == 3
    assert "3 jobs set aside in jobs_rejected" in result.stdout
    state = json.loads(cli(["state", "--tenant", "a"], world, tmp_path).stdout)
    assert state["set_aside_jobs"] == 3
    assert "several column hints were different" not in result.stderr


# ---------------------------------------------------------------------- logs and JSON
def test_log_level_flag_and_runtime_log_level(world: Simulator, tmp_path: Path) -> None:
    quiet = cli(["load", "--log-level", "WARNING"], world, tmp_path)
    assert quiet.returncode == 0 and " INFO " not in quiet.stderr
    assert (
        quiet.stdout.startswith("read ") and "; loaded " in quiet.stdout
    )  # the summary, not a log line

    world.world.add_jobs(5)
    env_quiet = cli(["load"], world, tmp_path, env={"RUNTIME__LOG_LEVEL": "warning"})
    assert env_quiet.returncode == 0 and " INFO " not in env_quiet.stderr

    world.world.add_jobs(5)
    talkative = cli(["load", "--log-level", "debug"], world, tmp_path)
    assert talkative.returncode == 0 and " DEBUG " in talkative.stderr
    # in words a user knows
    for jargon in ("followed", "windows", "ranges of"):
        assert jargon not in talkative.stderr.replace("avepoint_dynamics", "")

    bad = cli(["load"], world, tmp_path, env={"RUNTIME__LOG_LEVEL": "loud"})
    assert (bad.returncode, _errors(bad)) == (
        2,
        [
            "error: RUNTIME__LOG_LEVEL 'loud' is not a log level; use one of DEBUG, INFO, "
            "WARNING, ERROR, CRITICAL"
        ],
    )


def test_check_json_is_one_object_on_stdout(world: Simulator, tmp_path: Path) -> None:
    plain = cli(["check", "--json"], world, tmp_path)
    deep = cli(["check", "--deep", "--json"], world, tmp_path)

    assert plain.returncode == 0 and deep.returncode == 0
    checked = json.loads(plain.stdout)
    assert checked["total_jobs"] == world.world.total() and checked["ok"] is True
    learnt = json.loads(deep.stdout)
    assert learnt["window_selects"] == "start"
    for answer in (checked, learnt):
        assert all(re.fullmatch(r"[a-z_]+", key) for key in answer)


def test_help_says_what_changed() -> None:
    load = subprocess.run(
        cli_command("load", "--help"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    reset = subprocess.run(
        cli_command("reset", "--help"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "32 export" in " ".join(load.stdout.split())
    assert "--log-level" in load.stdout
    assert "every tenant's" in " ".join(reset.stdout.split())


@pytest.mark.unit
def test_the_first_progress_line_promises_no_eta() -> None:
    import io

    from avepoint_dynamics.model import JobsPage, Window
    from avepoint_pipelines.cli.console import ETA_AFTER_PAGES, ETA_AFTER_S, LiveLine, Progress

    progress = Progress(LiveLine(io.StringIO()), quiet=True)
    progress.started -= 5.0  # signing in and learning the service took 5 s before the first page
    page = JobsPage(jobs=[{}] * 100, total=100_000, number=1, window=Window(None, None))
    progress(page)
    first = progress.line()
    assert "ETA" not in first and "/ 100,000" in first
    assert progress._first is not None
    since = progress._first[0]
    for _ in range(ETA_AFTER_PAGES):
        progress(JobsPage(jobs=[{}] * 100, total=None, number=2, window=Window(None, None)))
    # 300 jobs in ETA_AFTER_S seconds after the first page: the rest at that rate, not the 5 s start's
    expected = (100_000 - 400) / (300 / ETA_AFTER_S)
    assert f"ETA {expected:,.0f} s" in progress.line(since + ETA_AFTER_S)


def test_the_readmes_command_says_where_dlts_own_folder_is(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    command = re.search(r'`python -c "(from dlt\.common\.pipeline import [^"]+)"`', readme)
    assert command, "README names the command that asks dlt"
    code = " ".join(command.group(1).split())  # as typed, its line break is a space

    asked = subprocess.run(
        [sys.executable, "-c", code],
        env={**cli_env(None), "DLT_DATA_DIR": str(tmp_path / "dlt")},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip() == str(tmp_path / "dlt" / "pipelines")


def test_what_runs_leave_behind_is_not_tracked(tmp_path: Path) -> None:
    root = Path(__file__).parent.parent
    ignored = subprocess.run(
        ["git", "check-ignore", "avepoint_demo.duckdb.lock", "bench/results/latest/tenants.json"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ignored.stdout.split() == [
        "avepoint_demo.duckdb.lock",
        "bench/results/latest/tenants.json",
    ]
    from bench.tenants import _parse

    assert Path(_parse([]).out_dir) == root / "bench" / "results" / "latest"
