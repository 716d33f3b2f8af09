"""The command blocks of the three paths README's "Where to go next" links, run as written.

As in ``tests/test_readme.py`` (whose helpers these are): a fresh folder, ``~`` in it, the source's settings
as env vars pointing at the simulator. The dbt block runs with ``.venv/dbt/bin`` first on ``PATH``, in a
project whose ``packages.yml`` and vars are the page's own blocks (the package's path made absolute). The
wheel's block runs entirely as typed, its venvs and installs included, in a copy of the repository.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import yaml
from avepoint_simulator import Simulator

from .conftest import config_env
from .expected import api_time, assert_rows_equal
from .test_orchestrators import dagster_installed  # noqa: F401  (the fixture)
from .test_readme import (
    ANALYSTS,
    ORCHESTRATORS,
    ROOT,
    VENV_BIN,
    as_run_here,
    bash,
    duckdb_rows,
    readme_blocks,
    user_env,
)

DBT_BIN = ROOT / ".venv" / "dbt" / "bin"
INSTALLING = ROOT / "docs" / "installing.md"


def _day(sim: Simulator) -> list[dict[str, object]]:
    start, end = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 9, 2, tzinfo=UTC)
    return [j for j in sim.world.ground_truth() if start <= api_time(j["startTime"]) < end]  # type: ignore[operator]


@pytest.mark.usefixtures("dagster_installed")
def test_the_scheduler_interval_blocks_load_exactly_the_day(sim: Simulator, tmp_path: Path) -> None:
    cli, dagster = readme_blocks("## Scheduler intervals", page=ORCHESTRATORS)
    env = user_env(tmp_path / "home", VENV_BIN, **config_env(sim))

    bash(as_run_here(cli), tmp_path, env)
    assert_rows_equal(duckdb_rows(tmp_path / "avepoint_dynamics.duckdb"), _day(sim))

    sim.world.finish_running()  # the day again, from Dagster's partition: the service's answer now
    bash(as_run_here(dagster), tmp_path, env)
    assert_rows_equal(duckdb_rows(tmp_path / "avepoint_dynamics.duckdb"), _day(sim))


def test_the_dbt_blocks_build_the_package_after_a_load(sim: Simulator, tmp_path: Path) -> None:
    if not (DBT_BIN / "dbt").exists():
        pytest.skip(f"dbt not installed in {DBT_BIN.parent}: scripts/test installs it")
    packages, variables = readme_blocks("## dbt", "yaml", page=ANALYSTS)
    (commands,) = readme_blocks("## dbt", page=ANALYSTS)
    env = user_env(tmp_path / "home", DBT_BIN, **config_env(sim), DO_NOT_TRACK="1")
    env["PATH"] = f"{DBT_BIN}{os.pathsep}{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    bash(["avepoint-dynamics load"], tmp_path, env)  # the docs' load: avepoint_dynamics.duckdb

    project = tmp_path / "analytics"
    project.mkdir()
    listed = yaml.safe_load(packages)["packages"]
    assert listed[0]["local"].endswith("/dbt/avepoint_dynamics")
    listed[0]["local"] = str(ROOT / "dbt" / "avepoint_dynamics")
    (project / "packages.yml").write_text(yaml.safe_dump({"packages": listed}), encoding="utf-8")
    settings = {"name": "analytics", "config-version": 2, "profile": "analytics"}
    settings.update(yaml.safe_load(variables))
    (project / "dbt_project.yml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    database = tmp_path / "avepoint_dynamics.duckdb"
    profile = {"type": "duckdb", "path": str(database), "schema": "analytics"}
    profiles = {"analytics": {"target": "dev", "outputs": {"dev": profile}}}
    (project / "profiles.yml").write_text(yaml.safe_dump(profiles), encoding="utf-8")

    done = bash(as_run_here(commands), project, {**env, "DBT_PROFILES_DIR": str(project)})

    assert "PASS freshness of avepoint_dynamics.jobs" in done.stdout
    with duckdb.connect(str(database), read_only=True) as con:
        (total,) = con.execute(
            "SELECT sum(total) FROM analytics.avepoint_daily_success_rate"
        ).fetchone()  # type: ignore[misc]
    assert total == len(sim.world.ground_truth())


def test_the_wheel_block_builds_checks_and_installs_as_typed(tmp_path: Path) -> None:
    (block,) = readme_blocks("## Build, check, install", page=INSTALLING)
    source = tmp_path / "repository"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("sources", "pipelines", "simulator"):
        ignore = shutil.ignore_patterns("*.egg-info", "__pycache__", "build")
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    # A user's python3, not a venv's: the one this suite's venvs were made from.
    python3 = shutil.which("python3", path=os.environ.get("PATH", "").replace(str(VENV_BIN), ""))
    assert python3 is not None
    env = user_env(tmp_path / "home", Path(python3).parent)

    done = bash(block.strip().splitlines(), source, env)

    assert done.stdout.count("PASSED") == 4
    assert "avepoint-dynamics 0.1.0 (dlt " in done.stdout
    assert (tmp_path / "home" / "avepoint" / "bin" / "avepoint-dynamics").exists()
