"""What the connector keeps, read from outside it: the tables it writes and its state in a pipeline.

The pipelines, the CLI's ``state`` and ``reset`` and the tests read the connector's state through this
module only; where the state lives inside dlt's pipeline state (``sources.avepoint_dynamics.resources.jobs``,
a tenant's under ``tenants.<name>``) is written down here and nowhere else.

Example:
    >>> state = read_state(pipeline, tenant="contoso")
    >>> state.cursor, len(state.open_jobs), state.set_aside
    ('2026-01-31T00:00:00Z', 3, 0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .incremental import OTHER_FILTERS, set_aside_count
from .run import REJECTED_TABLE
from .run_log import RUNS_TABLE

#: The source's name: its section in dlt's config and in the pipeline's state.
SOURCE_NAME = "avepoint_dynamics"
#: The jobs, one row each, merged on ``job_id`` (``tenant, job_id`` with a tenant).
JOBS_TABLE = "jobs"
#: The resource whose state holds the cursor and the followed jobs.
JOBS_RESOURCE = "jobs"

__all__ = [
    "JOBS_RESOURCE",
    "JOBS_TABLE",
    "REJECTED_TABLE",
    "RUNS_TABLE",
    "SOURCE_NAME",
    "ConnectorState",
    "jobs_state",
    "read_state",
    "service_state",
    "tenant_state_path",
]


@dataclass(frozen=True)
class ConnectorState:
    """One tenant's part of the connector's state, as stored (times as the API's ISO strings).

    Attributes:
        tenant: The tenant read (None: the untenanted state).
        cursor: Where the next scheduled run starts (None before the first).
        service_time: The service's time at the end of the last run.
        filters: The filters of the last run (``job_type``, ``status``, ...).
        open_jobs: The jobs followed until final: job id -> start time.
        abandoned_jobs: The newest jobs no longer followed: job id -> start time.
        abandoned_count: How many jobs were ever abandoned.
        set_aside: How many jobs are set aside in ``jobs_rejected`` now.
        tenants: The tenants kept under this state (untenanted state only).
        other_filters: Earlier runs' states under other filters, by filter id.
        loaded: Whether the ``jobs`` resource has any state at all (a run got that far).
    """

    tenant: str | None = None
    cursor: str | None = None
    service_time: str | None = None
    filters: Mapping[str, Any] | None = None
    open_jobs: Mapping[str, str] = field(default_factory=dict)
    abandoned_jobs: Mapping[str, str] = field(default_factory=dict)
    abandoned_count: int = 0
    set_aside: int = 0
    tenants: tuple[str, ...] = ()
    other_filters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    loaded: bool = False


def read_state(pipeline_or_state: Any, tenant: str | None = None) -> ConnectorState:
    """The connector's state for ``tenant`` in a pipeline (or in its ``pipeline.state`` dict).

    Reads only: a tenant or a pipeline that never ran gives an empty state (``loaded`` False).
    """
    resource = _resource_state(pipeline_or_state)
    state = jobs_state(pipeline_or_state, tenant)
    return ConnectorState(
        tenant=tenant,
        cursor=state.get("cursor"),
        service_time=state.get("service_time"),
        filters=state.get("filters"),
        open_jobs=dict(state.get("open_jobs") or {}),
        abandoned_jobs=dict(state.get("abandoned_jobs") or {}),
        abandoned_count=int(state.get("abandoned_count") or 0),
        set_aside=set_aside_count(dict(state)),
        tenants=tuple(sorted(state.get("tenants") or {})) if not tenant else (),
        other_filters=dict(state.get(OTHER_FILTERS) or {}),
        loaded=JOBS_RESOURCE in _source_state(pipeline_or_state).get("resources", {})
        and (not tenant or tenant in (resource.get("tenants") or {})),
    )


def jobs_state(pipeline_or_state: Any, tenant: str | None = None) -> Mapping[str, Any]:
    """The stored state of the ``jobs`` resource for ``tenant``, as dlt keeps it ({} if none).

    Without a tenant: the untenanted state (which also holds every tenant's under ``tenants``).
    """
    resource = _resource_state(pipeline_or_state)
    if not tenant:
        return resource
    state: Mapping[str, Any] = (resource.get("tenants") or {}).get(tenant) or {}
    return state


def service_state(pipeline_or_state: Any) -> Mapping[str, Any]:
    """How the service reads requests, as the first load learnt it: per API root ({} before)."""
    service: Mapping[str, Any] = _source_state(pipeline_or_state).get("service") or {}
    return service


def tenant_state_path(tenant: str) -> str:
    """Where a tenant's state is inside the source's state, as ``pipeline_drop(state_paths=...)`` takes it."""
    return f"resources.{JOBS_RESOURCE}.tenants.{tenant}"


def _source_state(pipeline_or_state: Any) -> Mapping[str, Any]:
    state = pipeline_or_state if isinstance(pipeline_or_state, Mapping) else pipeline_or_state.state
    source: Mapping[str, Any] = (state.get("sources") or {}).get(SOURCE_NAME) or {}
    return source


def _resource_state(pipeline_or_state: Any) -> Mapping[str, Any]:
    resources: Mapping[str, Any] = _source_state(pipeline_or_state).get("resources") or {}
    resource: Mapping[str, Any] = resources.get(JOBS_RESOURCE) or {}
    return resource
