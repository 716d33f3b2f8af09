"""Several AvePoint tenants into one dataset: one source (own config section, own state) per tenant.

Each tenant reads ``[sources.avepoint_dynamics_<tenant>]`` (``SOURCES__AVEPOINT_DYNAMICS_<TENANT>__...``),
keeps its incremental state apart (``tenants.<tenant>`` of the ``jobs`` resource state, where ``load
--tenant`` and ``avepoint_dynamics(tenant=...)`` keep it too), and adds a ``tenant`` column to its rows,
which share the ``jobs`` table (primary key ``tenant, job_id``). Tenants run one after another, each in a run of its
own, so one tenant's failure costs nothing already loaded for the others.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from avepoint_dynamics import ConfigError, avepoint_dynamics

from .avepoint_pipeline import (
    Target,
    exclusive_run,
    finish_pending,
    load_file_format,
    make_pipeline,
)
from .views import refresh_views_after_load

logger = logging.getLogger(__name__)

_TENANT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
SOURCE_NAME = "avepoint_dynamics"


@dataclass
class TenantResult:
    """How one tenant's run went."""

    tenant: str
    load_info: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def section_of(tenant: str) -> str:
    """The config section and source (state) name of a tenant: ``avepoint_dynamics_<tenant>``.

    Raises:
        ConfigError: the name is not lower-case letters, digits and underscores.
    """
    if not _TENANT_NAME.match(tenant):
        raise ConfigError(
            "tenants", f"{tenant!r} is not a tenant name; use lower-case letters, digits and _"
        )
    return f"{SOURCE_NAME}_{tenant}"


def tenant_source(tenant: str, **source_args: Any) -> Any:
    """The ``avepoint_dynamics`` source of one tenant, configured from its own section."""
    # Only the config section is the tenant's: the source keeps its name, so the tenant's state sits where
    # `load --tenant <name>` and `avepoint_dynamics(tenant=<name>)` keep it (tenants.<name>).
    return avepoint_dynamics.clone(section=section_of(tenant))(tenant=tenant, **source_args)


def run_tenants(
    tenants: list[str], target: Target | None = None, **source_args: Any
) -> list[TenantResult]:
    """Load every tenant into ``target``; a failing tenant is reported, the others still load.

    Example:
        >>> results = run_tenants(["contoso", "fabrikam"])
        >>> [(r.tenant, r.ok) for r in results]
        [('contoso', True), ('fabrikam', False)]
    """
    for tenant in tenants:
        section_of(tenant)  # every name valid before anything runs
    if len(set(tenants)) != len(tenants):
        raise ConfigError("tenants", f"tenant names repeat: {tenants}")
    target = target or Target()
    pipeline = make_pipeline(target)
    with exclusive_run(pipeline):
        return _run_each(pipeline, tenants, target, source_args)


def _run_each(
    pipeline: Any, tenants: list[str], target: Target, source_args: dict[str, Any]
) -> list[TenantResult]:
    results: list[TenantResult] = []
    for tenant in tenants:
        result = TenantResult(tenant)
        try:
            finish_pending(pipeline)
            source = tenant_source(tenant, **source_args)
            result.load_info = pipeline.run(source, loader_file_format=load_file_format(target))
        except Exception as error:  # reported per tenant; the others go on
            # The caller reports it (the CLI in one line per tenant); dlt's lookup trace is long.
            logger.debug("tenant %s failed: %s: %s", tenant, type(error).__name__, error)
            result.error = error
            # A package the failed run left behind would swallow the next tenant's run (dlt loads it
            # and returns without extracting). Its state went with it: the tenant re-reads next time.
            if pipeline.has_pending_data:
                pipeline.drop_pending_packages()
                logger.warning("dropped the package tenant %s left pending", tenant)
        results.append(result)
    if any(result.ok for result in results):
        refresh_views_after_load(pipeline)
    return results
