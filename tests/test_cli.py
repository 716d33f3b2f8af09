"""The ``avepoint-dynamics`` command as a scheduler runs it: a subprocess, env-var config, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from avepoint_simulator import Simulator

from .cli_runs import cli, cli_command, cli_env
from .conftest import Loader
from .expected import assert_rows_equal


def _loader(sim: Simulator, cwd: Path) -> Loader:
    return Loader(sim, cwd, pipeline_name="avepoint_dynamics")


def test_load_state_backfill_reset(sim: Simulator, tmp_path: Path) -> None:
    loaded = cli(["load"], sim, tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    # What was read, and what reached the destination: the world's 3,000 jobs, all new.
    total = len(sim.world.ground_truth())
    assert (
        f"read {total:,} jobs from 30 pages; loaded {total:,} jobs ({total:,} new, 0 updated, 0 deleted)"
        in loaded.stdout
    )
    loader = _loader(sim, tmp_path)
    assert_rows_equal(loader.rows(), sim.world.ground_truth())

    state = json.loads(cli(["state"], sim, tmp_path).stdout)
    running = [j for j in sim.world.ground_truth() if j["status"] == 2]
    assert state["cursor"] == loader.state()["cursor"]
    assert state["open_jobs"] == len(running) > 0
    assert state["open_job_watermark"] == min(loader.state()["open_jobs"].values())

    sim.world.finish_running()
    backfill = cli(["backfill", "--from", "2000-01-01", "--to", "2100-01-01"], sim, tmp_path)
    assert backfill.returncode == 0, backfill.stderr
    after = json.loads(cli(["state"], sim, tmp_path).stdout)
    # the cursor stays; the jobs the backfill saw finish are no longer followed
    assert after["cursor"] == state["cursor"] and after["open_jobs"] == 0
    open_ended = cli(["backfill", "--from", "2000-01-01"], sim, tmp_path)  # up to now
    assert open_ended.returncode == 0, open_ended.stderr
    assert json.loads(cli(["state"], sim, tmp_path).stdout)["cursor"] == state["cursor"]
    assert_rows_equal(
        loader.rows(), sim.world.ground_truth()
    )  # finished jobs updated by the backfill

    refused = cli(["reset"], sim, tmp_path, stdin="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    kept = cli(["reset"], sim, tmp_path, stdin="n\n")
    assert json.loads(cli(["state"], sim, tmp_path).stdout)["cursor"] == state["cursor"], (
        kept.stderr
    )

    reset = cli(["reset", "--yes"], sim, tmp_path)
    assert reset.returncode == 0, reset.stderr
    assert json.loads(cli(["state"], sim, tmp_path).stdout)["cursor"] is None
    sim.reset_stats()
    again = cli(["load", "--quiet"], sim, tmp_path)
    assert again.returncode == 0 and again.stdout == ""
    assert sim.stats()["jobs_requests"] == 1 + 30  # the service's clock, then the whole history
    assert loader.query("SELECT count(*) FROM jobs")[0][0] == 3_000


def test_filters_and_destination_options(sim: Simulator, tmp_path: Path) -> None:
    result = cli(
        ["load", "--job-type", "restore", "--dataset", "other", "--page-size", "25"], sim, tmp_path
    )

    assert result.returncode == 0, result.stderr
    loader = Loader(sim, tmp_path, pipeline_name="avepoint_dynamics", dataset="other")
    assert_rows_equal(loader.rows(), [j for j in sim.world.ground_truth() if j["type"] == 2])


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["load", "--page-size", "0"], 2, "page_size"),
        (["load", "--organization-id", "nope"], 2, "GUID"),
        (["load", "--region", "mars", "--base-url", ""], 2, "region"),
        (["backfill", "--from", "2024-02-01", "--to", "2024-01-01"], 2, "--from"),
    ],
)
def test_exit_codes_and_one_line_errors(
    sim: Simulator, tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    result = cli(args, sim, tmp_path)

    assert result.returncode == code
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0]
    assert "Traceback" not in result.stderr


def test_missing_credentials_say_where_to_put_them(sim: Simulator, tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env(sim).items() if "CLIENT_ID" not in k}
    result = cli(["check"], None, tmp_path, env)
    assert result.returncode == 2
    assert "client_id" in result.stderr and "secrets.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_progress_on_a_terminal(tmp_path: Path) -> None:
    with Simulator(jobs=3_000, seed=12, latency_ms=20) as slow:
        leader, follower = pty.openpty()
        command = cli_command(
            "load",
            "--page-size",
            "20",
            "--max-concurrency",
            "2",
            "--duckdb-path",
            str(tmp_path / "j.duckdb"),
            "--pipelines-dir",
            str(tmp_path / "p"),
        )
        process = subprocess.Popen(
            command, env=cli_env(slow), cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower
        )
        os.close(follower)
        screen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        assert process.wait(timeout=120) == 0
        os.close(leader)
    text = screen.decode(errors="replace")
    assert "\r" in text and "jobs/s" in text and "ETA" in text and "/ 3,000" in text
    # Log lines start on a line of their own, never in the middle of the live line
    # ("... ETA 0 s2026-12-03 ... INFO ..."): the live line is erased first, then drawn again.
    records = list(re.finditer(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) ", text))
    assert any("read 3,000 jobs" in text[m.end() : m.end() + 200] for m in records)
    for record in records:
        before = text[: record.start()]
        assert before == "" or before.endswith(("\n", "\x1b[K")), before[-80:]
    # the final figures stay, on a line of their own
    assert re.search(r"\x1b\[Kpages 150 · jobs 3,000 / 3,000 · [\d,]+ jobs/s\r?\n$", text), text[
        -200:
    ]


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The Quick start's first command: simulator, two real loads, a DuckDB file, a report, a summary."""
    result = cli(["demo", "--jobs", "2000", "--latency-ms", "0"], None, tmp_path)

    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "jobs loaded: 2,120 (the API holds 2,120: equal)" in out
    assert "by status:" in out and "by type:" in out and "newest job:" in out
    assert (tmp_path / "avepoint_demo.duckdb").exists()
    assert (tmp_path / "avepoint_demo_report.html").stat().st_size > 10_000
    assert "[sources.avepoint_dynamics.credentials]" in out
    # The night looks like one: the suggested query's last good backups are hours apart.
    from avepoint_pipelines.cli.demo import SQL_TO_TRY

    with duckdb.connect(str(tmp_path / "avepoint_demo.duckdb"), read_only=True) as con:
        last_good = [row[1] for row in con.execute(SQL_TO_TRY).fetchall()]
        (night_span,) = con.execute(
            "SELECT max(start_time) - min(start_time) FROM "
            "(SELECT start_time FROM avepoint.jobs ORDER BY start_time DESC LIMIT 120)"
        ).fetchone() or (None,)
    assert len(last_good) >= 4 and None not in last_good
    assert max(last_good) - min(last_good) > timedelta(hours=1)
    assert night_span is not None and night_span > timedelta(hours=8)


def test_one_job_one_page_one_package(tmp_path: Path) -> None:
    with Simulator(jobs=1, seed=5) as tiny:
        result = cli(["load"], tiny, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "read 1 job from 1 page; loaded 1 job (1 new, 0 updated, 0 deleted) into duckdb:avepoint "
        "(1 package)"
    )


def test_quiet_hides_dlt_warnings_too(sim: Simulator, tmp_path: Path) -> None:
    """dlt warns on every filesystem load ("Falling back to `append`"); ``-q`` shows none of it."""
    files = {"DESTINATION__FILESYSTEM__BUCKET_URL": (tmp_path / "files").as_uri()}

    def load(*flags: str) -> subprocess.CompletedProcess[str]:
        return cli(
            ["load", "--destination", "filesystem", *flags], sim, tmp_path, files, target=False
        )

    talkative = load()
    assert talkative.returncode == 0, talkative.stderr
    assert " WARNING dlt: " in talkative.stderr  # the warning this test hides

    sim.world.add_jobs(3)
    quiet = load("-q")

    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")


def test_state_lives_beside_the_duckdb_file_and_says_where(sim: Simulator, tmp_path: Path) -> None:
    """Without --pipelines-dir, a folder's state belongs to that folder's database, not ~/.dlt."""
    shared, first, second = tmp_path / "dlt_global", tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
    # dlt's global folder (~/.dlt, /var/dlt as root), where every folder's pipeline of a name would meet
    env = {"DLT_DATA_DIR": str(shared)}

    # no --duckdb-path, no --pipelines-dir: the defaults are what this test is about
    assert cli(["load", "-q"], sim, first, env, target=False).returncode == 0
    here = json.loads(cli(["state"], sim, first, env, target=False).stdout)
    elsewhere = cli(["state"], sim, second, env, target=False)

    beside = first / "avepoint_dynamics.duckdb.dlt"
    assert here["pipelines_dir"] == str(beside)
    assert here["state_file"] == str(beside / "avepoint_dynamics" / "state.json")
    assert Path(here["state_file"]).is_file() and here["cursor"] is not None
    # another folder, another database: not this one's cursor, and no state made up for it
    assert elsewhere.returncode == 2 and elsewhere.stdout == ""
    assert "pipeline 'avepoint_dynamics' never ran here" in elsewhere.stderr
    assert str(second / "avepoint_dynamics.duckdb.dlt") in elsewhere.stderr
    assert not (second / "avepoint_dynamics.duckdb.dlt").exists()
    assert not (shared / "pipelines").exists()


def test_help_shows_every_default_and_only_the_options_a_command_uses() -> None:
    from avepoint_pipelines.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in {"": parser, **commands.choices}.items():
        for action in command._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and ("default" in action.help or "required" in action.help), (
                name,
                action.option_strings,
                action.help,
            )
    options = {name: set(sub._option_string_actions) for name, sub in commands.choices.items()}
    loading_only = {"--duckdb-memory-limit", "--duckdb-threads", "--fail-on-rejected"}
    for name in ("state", "reset", "check", "report", "demo"):
        assert not options[name] & loading_only, name
    assert not options["state"] & {"--dataset", "--region", "--tenants", "--page-size"}
    assert not options["check"] & {"--tenants", "--tenant", "--page-size", "--max-concurrency"}

    backfill = subprocess.run(
        cli_command("backfill", "--help"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--from DATE" in backfill.stdout and "FROM_" not in backfill.stdout
    assert "(default: duckdb)" in backfill.stdout
    refused = subprocess.run(
        cli_command("state", "--duckdb-memory-limit", "1GB"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "error: unrecognized arguments: --duckdb-memory-limit 1GB (see avepoint-dynamics --help)"
    ]


def test_version() -> None:
    from importlib.metadata import version

    result = subprocess.run(
        cli_command("--version"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == (
        f"avepoint-dynamics {version('avepoint-dynamics-dlt')} (dlt {version('dlt')})"
    )


def test_the_simulators_export_lines_point_the_cli_at_it(tmp_path: Path) -> None:
    """``avepoint-simulator`` prints export lines; pasted into a shell, ``avepoint-dynamics check`` works."""
    bin_dir = Path(sys.executable).parent
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
    env = {**clean, "PATH": f"{bin_dir}{os.pathsep}{clean.get('PATH', '')}"}
    simulator = subprocess.Popen(
        [str(bin_dir / "avepoint-simulator"), "--jobs", "250", "--seed", "3"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert simulator.stdout is not None
        printed = [simulator.stdout.readline() for _ in range(7)]
        exports = "".join(line for line in printed if line.startswith("export "))
        assert exports.count("export SOURCES__AVEPOINT_DYNAMICS__") == 5

        checked = subprocess.run(
            ["bash", "-c", f"{exports}\navepoint-dynamics check"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        simulator.terminate()
        simulator.wait(timeout=30)

    assert checked.returncode == 0, checked.stderr
    assert "holds 250 jobs; nothing was loaded" in checked.stdout
