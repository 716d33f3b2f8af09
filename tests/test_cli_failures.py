"""Every failure of the CLI names its real cause in one line, with the key, flag, file or command that fixes it.

dlt wraps what failed (``PipelineStepFailed`` around a missing module, config resolution errors, a TOML
file that does not parse) and puts the cause after its first line. Each case runs the real CLI in a
subprocess, as a user types it, and checks the exit code and the whole of stderr.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from avepoint_simulator import Simulator

from .cli_runs import cli
from .conftest import config_env

DESTINATIONS_DLT_KNOWS = ("bigquery", "duckdb", "filesystem", "motherduck", "postgres", "snowflake")


def _only_line(result: subprocess.CompletedProcess[str]) -> str:
    """stderr, which must be exactly one line."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --------------------------------------------------------------------------- messages that stopped at a colon
@pytest.mark.parametrize(
    ("file", "text", "says"),
    [
        (
            "secrets.toml",
            '[sources.avepoint_dynamics]\nregion = "us\n',
            "error: .dlt/secrets.toml is not valid TOML: line 2, column 12: Control characters",
        ),
        (
            "config.toml",
            "[sources.avepoint_dynamics]\npage_size = = 5\n",
            "error: .dlt/config.toml is not valid TOML: line 2, column",
        ),
    ],
)
def test_a_config_file_that_does_not_parse_names_file_line_and_problem(
    tmp_path: Path, file: str, text: str, says: str
) -> None:
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / file).write_text(text)

    result = cli(["check"], None, tmp_path, target=False)

    assert result.returncode == 2
    line = _only_line(result)
    assert line.startswith(says) and line.endswith("; fix the file"), line


def test_a_missing_extra_says_what_to_install(sim: Simulator, tmp_path: Path) -> None:
    """``--destination postgres`` without psycopg2: the extra to install, not dlt's "with exception:".

    psycopg2 is installed in the test venv; a module of that name that fails to import, first on
    PYTHONPATH, stands in for a base install without the postgres extra.
    """
    shadow = tmp_path / "without_psycopg2"
    shadow.mkdir()
    (shadow / "psycopg2.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg2'\", name='psycopg2')\n"
    )
    env = dict(
        PYTHONPATH=str(shadow),
        DESTINATION__POSTGRES__CREDENTIALS="postgresql://loader:pw@127.0.0.1:9/analytics",
        **config_env(sim),
    )

    result = cli(["load", "--destination", "postgres"], None, tmp_path, env, target=False)

    assert result.returncode == 2
    assert _only_line(result) == (
        "error: the postgres extra is not installed (no module named 'psycopg2'): "
        "pip install -e '.[postgres]'"
    )


def test_an_unknown_destination_lists_the_names_dlt_knows(sim: Simulator, tmp_path: Path) -> None:
    result = cli(["load", "--destination", "bogus"], None, tmp_path, config_env(sim), target=False)

    assert result.returncode == 2
    line = _only_line(result)
    assert line.startswith("error: unknown destination 'bogus'; dlt knows: ")
    named = line.split("dlt knows: ", 1)[1]
    for name in DESTINATIONS_DLT_KNOWS:
        assert name in named
    assert "DESTINATION__BOGUS__DESTINATION_TYPE" in line


def test_verbose_shows_the_whole_chain_after_the_line(tmp_path: Path) -> None:
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "secrets.toml").write_text('[sources.avepoint_dynamics]\nregion = "us\n')

    result = cli(["check", "-v"], None, tmp_path, target=False)

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: .dlt/secrets.toml is not valid TOML")
    chain = [line.strip() for line in lines[1:]]
    assert chain[0].startswith(
        "dlt.common.configuration.providers.toml.TomlProviderReadException: A problem"
    )
    assert chain[1].startswith("tomlkit.exceptions.InvalidControlChar: Control characters")
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- messages that blamed the wrong thing
def test_missing_destination_credentials_name_the_destination_key(
    sim: Simulator, tmp_path: Path
) -> None:
    env = config_env(sim)

    result = cli(["load", "--destination", "postgres"], None, tmp_path, env, target=False)

    assert result.returncode == 2
    line = _only_line(result)
    assert line.startswith(
        "error: missing credentials of destination postgres: set DESTINATION__POSTGRES__CREDENTIALS "
        "or [destination.postgres] credentials = ... in .dlt/secrets.toml"
    ), line
    assert "sources.avepoint_dynamics" not in line
    assert sim.stats()["jobs_requests"] == 0


def test_tenants_without_sections_get_one_line_each_naming_their_section(tmp_path: Path) -> None:
    result = cli(["load", "--tenants", "contoso,fabrikam"], None, tmp_path, target=False)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: tenant {tenant}: config error in sources.avepoint_dynamics_{tenant}: tenant "
        f"'{tenant}' has no section of its own: add [sources.avepoint_dynamics_{tenant}] with its "
        f"region and credentials (or SOURCES__AVEPOINT_DYNAMICS_{tenant.upper()}__... env vars); "
        "without it the tenant would load the jobs of [sources.avepoint_dynamics] under its name"
        for tenant in ("contoso", "fabrikam")
    ]


def test_reset_off_a_terminal_says_use_yes(tmp_path: Path) -> None:
    result = cli(
        ["reset", "--duckdb-path", str(tmp_path / "j.duckdb")], None, tmp_path, target=False
    )

    assert result.returncode == 2
    assert (
        _only_line(result)
        == "error: reset: not on a terminal, so there is no one to ask: use --yes"
    )
    assert not (tmp_path / "j.duckdb.dlt").exists()  # refused before anything was touched


def test_no_secret_is_printed_even_with_the_whole_chain(tmp_path: Path) -> None:
    """A destination that refuses the connection: its URL's password appears nowhere, even with -v."""
    password = "hunter2-not-printed"
    env = dict(
        DESTINATION__POSTGRES__CREDENTIALS=f"postgresql://loader:{password}@127.0.0.1:9/analytics",
        SOURCES__AVEPOINT_DYNAMICS__BASE_URL="https://127.0.0.1:9",
        SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__IDENTITY_URL="https://127.0.0.1:9",
        SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_ID="00000000-0000-0000-0000-000000000000",
        SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_SECRET="another-secret-value",
    )

    result = cli(["load", "--destination", "postgres", "-v"], None, tmp_path, env, target=False)

    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    # its first contact is the lease, before anything is read (docs/operations.md)
    assert first.startswith("error: postgres failed at the lease step: OperationalError: ")
    assert "DESTINATION__POSTGRES__CREDENTIALS" in first
    assert password not in result.stderr + result.stdout
    assert "another-secret-value" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- dates: ISO-8601 only
@pytest.mark.parametrize(
    ("args", "flag", "value"),
    [
        (["backfill", "--from", "11/01/2026"], "--from", "11/01/2026"),
        (["backfill", "--from", "13/01/2026"], "--from", "13/01/2026"),
        (["backfill", "--from", "Nov 1 2026"], "--from", "Nov 1 2026"),
        (["backfill", "--from", "2026-11-01", "--to", "1 Dec 2026"], "--to", "1 Dec 2026"),
        (["load", "--initial-start-time", "2026/11/01"], "--initial-start-time", "2026/11/01"),
    ],
)
def test_dates_are_iso_8601_or_refused(
    sim: Simulator, tmp_path: Path, args: list[str], flag: str, value: str
) -> None:
    result = cli(
        [*args, "--duckdb-path", str(tmp_path / "j.duckdb")],
        None,
        tmp_path,
        config_env(sim),
        target=False,
    )

    assert result.returncode == 2
    assert _only_line(result) == (
        f"error: {flag} {value!r} is not an ISO-8601 date or time; "
        "use e.g. 2026-11-01 or 2026-11-01T00:00:00Z"
    )
    assert sim.stats()["jobs_requests"] == 0
    assert not (tmp_path / "j.duckdb").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--from", "2024-02-01", "--to", "2024-01-01"],
            "error: --from 2024-02-01T00:00:00Z is not before --to 2024-01-01T00:00:00Z: "
            "the range [--from, --to) is empty",
        ),
        (
            ["--from", "2024-01-01T10:00:00+02:00", "--to", "2024-01-01T08:00:00Z"],
            "error: --from 2024-01-01T08:00:00Z is not before --to 2024-01-01T08:00:00Z: "
            "the range [--from, --to) is empty",
        ),
        (["--from", "2999-01-01"], "error: --from 2999-01-01T00:00:00Z is not before now ("),
    ],
)
def test_a_reversed_range_names_the_flags(
    sim: Simulator, tmp_path: Path, args: list[str], says: str
) -> None:
    result = cli(
        ["backfill", *args, "--duckdb-path", str(tmp_path / "j.duckdb")],
        None,
        tmp_path,
        config_env(sim),
        target=False,
    )

    assert result.returncode == 2
    assert _only_line(result).startswith(says)
    assert sim.stats()["jobs_requests"] == 0


def test_a_destination_that_cannot_be_opened_says_what_it_said(
    sim: Simulator, tmp_path: Path
) -> None:
    not_duckdb = tmp_path / "jobs.duckdb"
    not_duckdb.write_text("not a database\n")

    result = cli(
        ["load", "--duckdb-path", str(not_duckdb)], None, tmp_path, config_env(sim), target=False
    )

    assert result.returncode == 1
    assert _only_line(result) == (
        f'error: duckdb failed at the lease step: IOException: IO Error: The file "{not_duckdb}" '
        "exists, but it is not a valid DuckDB database file!; check --duckdb-path"
    )
    assert sim.stats()["jobs_requests"] == 0
