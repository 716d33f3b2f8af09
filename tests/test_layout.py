"""The layout docs/layout.md draws, read from the code: packages by role, no import cycles, one way down.

Imports are read with :mod:`ast` (every ``import`` in a module, in functions too), so nothing is imported
to check them. The public state surface (``avepoint_dynamics.state``) is checked against the state the
connector itself writes.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from avepoint_dynamics.incremental import FollowState, tenant_state
from avepoint_dynamics.model import Window
from avepoint_dynamics.state import (
    JOBS_RESOURCE,
    SOURCE_NAME,
    jobs_state,
    read_state,
    service_state,
    tenant_state_path,
)
from avepoint_pipelines import MOVED_MODULES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
#: Where each distribution's package lives in the repository (pyproject.toml's package-dir).
PACKAGES = {
    "avepoint_pipelines": ROOT / "pipelines",
    "avepoint_dynamics": ROOT / "sources" / "avepoint_dynamics",
}
ROLES = ("load", "analytics", "cli", "orchestrators")


def _modules(package: str) -> dict[str, Path]:
    """Every module of ``package``: dotted name -> file (a package is its ``__init__``)."""
    folder = PACKAGES[package]
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The modules ``name`` imports, absolute; ``from package import module`` names the module."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                yield submodule if submodule in known else origin


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    known = set(modules)
    return {
        name: {
            target for target in _imports(name, path, known) if target in known and target != name
        }
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _importers(graph: dict[str, set[str]], of: str, into: str) -> list[str]:
    """``module -> target`` for each module under ``of`` that imports something under ``into``."""
    return sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name == of or name.startswith(of + ".")
        for target in targets
        if target == into or target.startswith(into + ".")
    )


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_walk_resolves_relative_imports_the_way_python_does() -> None:
    graph = _graph("avepoint_pipelines")
    # from ..failures import ... in load/run_log.py; from .parser import main in cli/__init__.py
    assert "avepoint_pipelines.failures" in graph["avepoint_pipelines.load.run_log"]
    assert "avepoint_pipelines.cli.parser" in graph["avepoint_pipelines.cli"]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_imports_itself_back(package: str) -> None:
    assert _cycles(_graph(package)) == []


def test_each_role_is_a_package_with_a_one_line_purpose() -> None:
    for role in ROLES:
        init = PACKAGES["avepoint_pipelines"] / role / "__init__.py"
        purpose = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert purpose, f"{init} says nothing of its role"
        assert len(purpose.splitlines()) == 1, f"{init}: one line, not {purpose!r}"
    flat = sorted(p.name for p in PACKAGES["avepoint_pipelines"].glob("*.py"))
    assert flat == ["__init__.py", "failures.py"]  # the rest lives in a role's package


def test_the_orchestrators_take_nothing_from_the_command_line() -> None:
    graph = _graph("avepoint_pipelines")
    assert _importers(graph, "avepoint_pipelines.orchestrators", "avepoint_pipelines.cli") == []


def test_the_load_and_analytics_import_no_caller_of_theirs() -> None:
    graph = _graph("avepoint_pipelines")
    for lower in ("avepoint_pipelines.load", "avepoint_pipelines.analytics"):
        for upper in ("avepoint_pipelines.cli", "avepoint_pipelines.orchestrators"):
            assert _importers(graph, lower, upper) == []


def test_the_connector_imports_neither_the_pipelines_nor_the_simulator() -> None:
    outside = []
    for name, path in _modules("avepoint_dynamics").items():
        for target in _imports(name, path, set()):
            if target.split(".")[0] in ("avepoint_pipelines", "avepoint_simulator"):
                outside.append(f"{name} -> {target}")
    assert outside == []


def test_the_pipelines_use_only_the_connectors_public_surface() -> None:
    graph_known = set(_modules("avepoint_dynamics"))
    public = {"avepoint_dynamics", "avepoint_dynamics.state", "avepoint_dynamics.dlt_compat"}
    public |= {"avepoint_dynamics.config_keys"}  # section_keys: the tenants' config sections
    reached = sorted(
        f"{name} -> {target}"
        for name, path in _modules("avepoint_pipelines").items()
        for target in _imports(name, path, graph_known)
        if target.startswith("avepoint_dynamics") and target not in public
    )
    assert reached == []


# ------------------------------------------------------------------ the public state surface
def _when(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _pipeline_state(
    tenants: dict[str, FollowState], untenanted: FollowState | None
) -> dict[str, Any]:
    """A pipeline state written the way the connector writes it (its own tenant_state and save)."""
    resource: dict[str, Any] = {}
    if untenanted is not None:
        untenanted.save(tenant_state(resource, None))
    for name, follow in tenants.items():
        follow.save(tenant_state(resource, name))
    service = {"https://api.example": {"window_selects": "start"}}
    return {"sources": {SOURCE_NAME: {"resources": {JOBS_RESOURCE: resource}, "service": service}}}


def test_read_state_reads_what_the_connector_wrote_for_each_tenant() -> None:
    window = Window(_when("2026-01-01T00:00:00"), _when("2026-01-02T00:00:00"), None)
    contoso = FollowState(
        cursor=_when("2026-01-31T00:00:00"),
        open_jobs={"j1": _when("2026-01-30T10:00:00"), "j2": _when("2026-01-30T09:00:00")},
        rejected_jobs={"bad": _when("2026-01-29T00:00:00")},
        rejected_windows={"w": window},
        abandoned_count=4,
    )
    fabrikam = FollowState(cursor=_when("2026-02-01T00:00:00"))
    state = _pipeline_state({"contoso": contoso, "fabrikam": fabrikam}, None)

    read = read_state(state, "contoso")
    assert read.loaded
    assert read.cursor is not None and read.cursor.startswith("2026-01-31T00:00:00")
    assert sorted(read.open_jobs) == ["j1", "j2"]
    assert read.set_aside == 2  # one job and one window, a row each in jobs_rejected
    assert read.abandoned_count == 4
    assert read.tenants == ()

    assert read_state(state, "fabrikam").cursor != read.cursor
    assert read_state(state).tenants == ("contoso", "fabrikam")
    assert jobs_state(state, "contoso")["open_jobs"] == dict(read.open_jobs)
    assert dict(service_state(state)) == {"https://api.example": {"window_selects": "start"}}


def test_read_state_of_a_pipeline_that_never_ran_is_empty_not_an_error() -> None:
    states: list[dict[str, Any]] = [
        {},
        {"sources": {}},
        _pipeline_state({"contoso": FollowState()}, None),
    ]
    for state in states:
        read = read_state(state, "fabrikam")
        assert not read.loaded
        assert (read.cursor, read.set_aside, dict(read.open_jobs)) == (None, 0, {})
    assert not read_state({}).loaded
    assert dict(service_state({})) == {}


def test_the_tenant_state_path_is_where_the_connector_keeps_a_tenants_state() -> None:
    state = _pipeline_state({"contoso": FollowState(cursor=_when("2026-01-31T00:00:00"))}, None)
    node: Any = state["sources"][SOURCE_NAME]
    for key in tenant_state_path("contoso").split("."):
        node = node[key]
    assert node == dict(jobs_state(state, "contoso"))


#: Importing Dagster or Airflow starts a process: tests/test_orchestrators.py imports their old paths.
NOT_ORCHESTRATORS = sorted(
    old for old in MOVED_MODULES if ".dagster" not in old and ".airflow" not in old
)


@pytest.mark.parametrize("old", NOT_ORCHESTRATORS)
def test_a_module_path_of_an_earlier_release_imports_the_moved_module(old: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED_MODULES[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED_MODULES[old])
