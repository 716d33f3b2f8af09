"""Runnable pipelines around the ``avepoint_dynamics`` source, by role (docs/layout.md).

- :mod:`avepoint_pipelines.load`: a load, from its target to its run log (one way through: ``run_load``).
- :mod:`avepoint_pipelines.analytics`: the analyst views, freshness, the alert and the report.
- :mod:`avepoint_pipelines.cli`: the ``avepoint-dynamics`` command and the demo.
- :mod:`avepoint_pipelines.orchestrators`: Dagster and Airflow.
- :mod:`avepoint_pipelines.failures`: what went wrong, in one line, for the CLI and the orchestrators.

The module paths of releases before these packages (``avepoint_pipelines.dagster_defs``,
``avepoint_pipelines.airflow_dag``, ...) still import, as the module at its new path, with a
``DeprecationWarning``: a DAG file or a ``dagster -m`` line written for them keeps working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

#: Old module path -> where the module lives now.
MOVED_MODULES = {
    "avepoint_pipelines.avepoint_pipeline": "avepoint_pipelines.load.pipeline",
    "avepoint_pipelines.tenant_runs": "avepoint_pipelines.load.tenant_runs",
    "avepoint_pipelines.dagster_defs": "avepoint_pipelines.orchestrators.dagster_defs",
    "avepoint_pipelines.dagster_daily": "avepoint_pipelines.orchestrators.dagster_daily",
    "avepoint_pipelines.airflow_dag": "avepoint_pipelines.orchestrators.airflow_dag",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module at its new one (the same module object)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED_MODULES[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {new}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        # importlib returns what sys.modules holds after exec_module: the module itself, not a copy.
        sys.modules[module.__name__] = importlib.import_module(new)


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
