"""The ``avepoint-dynamics`` command in a subprocess, configured by env vars for a simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from avepoint_simulator import Simulator

from .conftest import config_env

#: Commands that take --duckdb-path and --pipelines-dir.
TARGETED = ("load", "backfill", "state", "reset", "alert")


def cli_env(sim: Simulator | None, **extra: str) -> dict[str, str]:
    """This process's environment without any dlt source config, plus the simulator's and ``extra``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "RUNTIME__"))}
    config = config_env(sim, lookback_minutes="0") if sim is not None else {}
    return {**clean, **config, **extra}


def cli(
    args: list[str],
    sim: Simulator | None,
    cwd: Path,
    env: dict[str, str] | None = None,
    target: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``avepoint-dynamics ARGS`` in ``cwd`` (its DuckDB file and pipelines folder there)."""
    where = ["--duckdb-path", str(cwd / "jobs.duckdb"), "--pipelines-dir", str(cwd / "pipelines")]
    extra = where if target and args[0] in TARGETED else []
    return subprocess.run(
        [sys.executable, "-m", "avepoint_pipelines.cli", *args, *extra],
        env={**cli_env(sim), **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
