"""Failures between the loader and the service, from the CLI: the exit code and the whole message.

A certificate this machine does not trust, a host that never answers, a date in config that is not
ISO-8601, a filter changed between runs: each names its cause and the key that fixes it, in one line.
"""

from __future__ import annotations

import logging
import socket
import subprocess
from pathlib import Path

import pytest
from avepoint_simulator import Simulator

from .cli_runs import cli
from .conftest import Loader, config_env


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_certificate_this_machine_does_not_trust_is_named_a_tls_trust_failure(
    sim: Simulator, tmp_path: Path
) -> None:
    env = config_env(sim)
    del env["SOURCES__AVEPOINT_DYNAMICS__CA_BUNDLE"]  # the simulator's CA is nobody's system CA

    result = cli(["check"], None, tmp_path, env=env)

    assert result.returncode == 2, result.stderr
    (line,) = _errors(result)
    assert line.startswith(
        "error: config error in sources.avepoint_dynamics.ca_bundle: TLS trust failure talking to "
        f"the identity service at {sim.identity_url}: its certificate is not signed by a CA this "
        "machine trusts."
    ), line
    assert "REQUESTS_CA_BUNDLE" in line and "Traceback" not in result.stderr
    assert sim.stats()["requests"].get("token 200") is None


def test_an_api_host_that_never_answers_is_a_wrong_address_said_quickly(
    sim: Simulator, tmp_path: Path
) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = config_env(sim, base_url=f"https://127.0.0.1:{port}")

    result = cli(["load", "--duckdb-path", str(tmp_path / "j.duckdb")], None, tmp_path, env=env)

    assert result.returncode == 4, result.stderr
    (line,) = _errors(result)
    assert line == (
        f"error: cannot connect to the jobs API at https://127.0.0.1:{port} (connection refused); "
        "check base_url and the network"
    )
    retried = [m for m in result.stderr.splitlines() if "retrying page 1" in m]
    assert len(retried) == 2  # three quick attempts, not the patient eight


@pytest.mark.parametrize("value", ["11/01/2026", "Nov 1 2026", "2026-13-01"])
def test_a_date_in_config_is_iso_8601_or_refused(
    sim: Simulator, tmp_path: Path, value: str
) -> None:
    env = config_env(sim, initial_start_time=value)

    result = cli(["load", "--duckdb-path", str(tmp_path / "j.duckdb")], None, tmp_path, env=env)

    # A date's shape with a month 13: which field is wrong, not only "not ISO-8601".
    why = (
        "a valid date or time (month must be in 1..12)"
        if value == "2026-13-01"
        else "an ISO-8601 date or time"
    )
    assert result.returncode == 2
    assert _errors(result) == [
        f"error: config error in sources.avepoint_dynamics.initial_start_time: {value!r} is not "
        f"{why}; use e.g. 2026-11-01 or 2026-11-01T00:00:00Z"
    ]
    assert sim.stats()["jobs_requests"] == 0


def test_a_filter_changed_between_runs_is_said(
    sim: Simulator, loader: Loader, caplog: pytest.LogCaptureFixture
) -> None:
    loader.load()

    with caplog.at_level(logging.WARNING, logger="avepoint_dynamics"):
        loader.load(job_type=1)

    said = [r.getMessage() for r in caplog.records if "filters changed" in r.getMessage()]
    assert said == [
        "the filters changed since the last run (none -> type 1): no run read under them yet: it "
        "reads every job they select in the whole history; after the load the table holds only "
        "what these select: rows loaded under none that they do not select are deleted (SQL "
        "destinations), and a run under none again reads everything it selects"
    ]
