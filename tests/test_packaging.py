"""The connector's distribution ships the connector and the pipelines only; the simulator is a tool apart."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject(folder: Path) -> dict[str, Any]:
    return tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.unit
def test_the_connectors_distribution_carries_no_simulator_and_no_pytest_plugin() -> None:
    project = _pyproject(ROOT)
    setuptools = project["tool"]["setuptools"]

    assert "avepoint_simulator" not in setuptools["packages"]
    assert "avepoint_simulator" not in setuptools["package-dir"]
    assert "avepoint_simulator" not in project["tool"]["setuptools"]["package-data"]
    assert set(project["project"]["scripts"]) == {"avepoint-dynamics"}
    assert "pytest11" not in project["project"].get("entry-points", {})


def test_the_demo_without_the_simulator_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['avepoint_simulator'] = None\n"  # as if it were not installed
        "from avepoint_pipelines.cli import main\n"
        "raise SystemExit(main(['demo']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "pip install -e ./simulator" in line
