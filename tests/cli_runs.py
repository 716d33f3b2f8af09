"""The ``avepoint-dynamics`` command in a subprocess, configured by env vars for a simulator.

The one way the suite runs the CLI: ``cli()`` runs a command to its end, ``cli_command()`` is the argv for
a test that drives the process itself (a signal, a terminal), ``cli_env()`` the environment for either.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from avepoint_simulator import Simulator

from .conftest import config_env

#: The command as a scheduler runs it, from this interpreter (no PATH lookup).
CLI = (sys.executable, "-m", "avepoint_pipelines.cli")

#: Commands that take --duckdb-path and --pipelines-dir.
TARGETED = ("load", "backfill", "state", "reset", "alert")

#: What of the developer's environment would change a run: dlt config of sources, destinations and the
#: runtime, dlt's scheduler interval, and CA bundles that requests and OpenSSL read before our own.
NOT_INHERITED = (
    "SOURCES__",
    "DESTINATION__",
    "RUNTIME__",
    "DLT_INTERVAL_",
    "DLT_ALLOW_EXTERNAL_SCHEDULERS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_",
)


def cli_env(sim: Simulator | None = None, *sections: str, **keys: str) -> dict[str, str]:
    """This process's environment without the developer's dlt config, plus ``sim``'s.

    ``sim`` is configured in each of ``sections`` (by default ``avepoint_dynamics``; a tenant's is
    ``avepoint_dynamics_<tenant>``) with the source settings ``keys`` (``max_attempts="2"``);
    ``lookback_minutes`` is 0 unless given, so a run reads exactly the jobs it has not read.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    if sim is not None:
        for section in sections or ("avepoint_dynamics",):
            env.update(config_env(sim, section, **{"lookback_minutes": "0", **keys}))
    return env


def tenants_env(sims: Mapping[str, Simulator], **keys: str) -> dict[str, str]:
    """``cli_env`` with each tenant's simulator in the tenant's own section (``--tenants a,b``)."""
    env = cli_env()
    for tenant, sim in sims.items():
        env.update(cli_env(sim, f"avepoint_dynamics_{tenant}", **keys))
    return env


def cli_command(*args: str, cwd: Path | None = None) -> list[str]:
    """The argv of ``avepoint-dynamics ARGS``.

    With ``cwd``, a command that writes (``TARGETED``) gets its DuckDB file and pipelines folder there,
    unless ``args`` name a DuckDB file of their own.
    """
    where: list[str] = []
    if cwd is not None and args and args[0] in TARGETED and "--duckdb-path" not in args:
        where = [
            "--duckdb-path",
            str(cwd / "jobs.duckdb"),
            "--pipelines-dir",
            str(cwd / "pipelines"),
        ]
    return [*CLI, *args, *where]


def cli(
    args: list[str],
    sim: Simulator | None,
    cwd: Path,
    env: dict[str, str] | None = None,
    *,
    settings: dict[str, str] | None = None,
    target: bool = True,
    stdin: str = "",
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``avepoint-dynamics ARGS`` in ``cwd`` to its end (its DuckDB file and pipelines folder there).

    ``env`` is laid over ``cli_env(sim, **settings)``. ``stdin`` is what the command reads (by default nothing: not a
    terminal, as under a scheduler). ``timeout`` only stops a hung test; it is no assertion.
    """
    return subprocess.run(
        cli_command(*args, cwd=cwd if target else None),
        env={**cli_env(sim, **(settings or {})), **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )
