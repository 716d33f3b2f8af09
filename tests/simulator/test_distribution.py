"""The simulator is a distribution of its own, and its server sees it only through ``ServedService``."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

FOLDER = Path(__file__).resolve().parents[2] / "simulator"
PACKAGE = FOLDER / "avepoint_simulator"
#: Import name → distribution name, where they differ.
DISTRIBUTION_OF = {"jwt": "pyjwt"}


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute imports, at any depth of the file)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_its_pyproject_names_its_command_its_dependencies_and_no_pytest_plugin() -> None:
    project = tomllib.loads((FOLDER / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {
        dependency.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for dependency in project["dependencies"]
    }
    third_party = {
        DISTRIBUTION_OF.get(top, top)
        for path in PACKAGE.glob("*.py")
        for top in (name.split(".")[0] for name in _imports(path))
        if top not in sys.stdlib_module_names and top != "avepoint_simulator"
    }

    assert project["name"] == "avepoint-simulator"
    assert project["scripts"] == {"avepoint-simulator": "avepoint_simulator.cli:main"}
    assert "pytest11" not in project.get("entry-points", {})
    # pytest only for the opt-in fixtures (testing.py), an extra; everything else is a dependency.
    assert third_party - {"pytest"} == declared
    assert project["optional-dependencies"]["pytest"] == ["pytest>=8"]
    assert (PACKAGE / "py.typed").is_file()


def test_the_server_does_not_know_the_simulator() -> None:
    assert "avepoint_simulator.simulator" not in _imports(PACKAGE / "server.py")
    assert "avepoint_simulator.simulator" not in _imports(PACKAGE / "service.py")


def test_no_module_imports_the_connector() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) > 5, PACKAGE  # the package's modules, not an empty folder passing
    for path in modules:
        tops = {name.split(".")[0] for name in _imports(path)}
        assert not tops & {"avepoint_dynamics", "avepoint_pipelines"}, path.name
