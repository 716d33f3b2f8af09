"""The unit tier's stand-ins for the two parts that need a socket or a database.

- ``WorldPages``: the connector's ``PageSource`` answered by the simulator's own job store and world
  (its real filtering, ordering and clock), in-process: no HTTP, no TLS, no token. What it leaves out
  (transport, retries, auth) is what the integration tier tests against the simulator over sockets.
- ``MergedTable``: what dlt's merge does with the batches of a run: upsert by key, delete on the
  hard-delete column. The integration tier loads real DuckDB files.
"""

from __future__ import annotations

import email.utils
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
from avepoint_dynamics import AvePointCredentials
from avepoint_dynamics.model import JobsPage, Window
from avepoint_dynamics.query import JobsQuery, build_query
from avepoint_dynamics.rejected import DELETED_COLUMN
from avepoint_dynamics.retries import RetryPolicy
from avepoint_dynamics.run import JobsRun
from avepoint_dynamics.setup import JobsSetup
from avepoint_dynamics.times import ServiceClock
from avepoint_simulator import JobFilter, World
from avepoint_simulator.jobs_store import JobStore
from avepoint_simulator.times import ServiceClock as SimulatorClock
from avepoint_simulator.times import ticks_from_datetime


def make_world(jobs: int, seed: int, running: int | None = None, offset_s: float = 0.0) -> World:
    """A simulated job history in memory, its clock ``offset_s`` ahead of this machine's."""
    clock = SimulatorClock(offset_s)
    store = JobStore(jobs, seed, clock.ticks(), history_days=20, running=running)
    return World(store, seed, clock)


class WorldPages:
    """Pages of jobs from a simulated world, in-process (see the module's docstring).

    Args:
        world: The history.
        query: The run's settings (page size, filters).
        serve: Optional hook that may change what a page holds (a job served twice, say).
        selects: What the service's window selects (``start``, ``overlap``, ``finish``).
        window: ``half_open``, ``inclusive`` (end) or ``ignored``, as the simulator's fault setting.
    """

    def __init__(
        self,
        world: World,
        query: JobsQuery,
        serve: Any = None,
        selects: str = "start",
        window: str = "half_open",
    ) -> None:
        self.world = world
        self.query = query
        self.clock = ServiceClock()
        self.requests_sent = 0
        self.start_exclusive = False
        self._selects = selects
        self._window = window
        self.windows: list[tuple[Window, int]] = []
        self._serve = serve
        self._lock = threading.Lock()

    def fetch_page(self, window: Window, number: int, page_size: int | None = None) -> JobsPage:
        size = page_size or self.query.page_size
        with self._lock:
            self.requests_sent += 1
            self.windows.append((window, number))
        start, end = window.start, window.end
        if start is not None and self.start_exclusive:  # what the connector sends
            start -= timedelta(microseconds=1)
        low, high = _ticks(start), _ticks(end)
        if self._window == "inclusive" and high is not None:  # what the service does with it
            high += 1
        if self._window == "ignored":
            low = high = None
        flt = JobFilter(
            start=low,
            end=high,
            type=self.query.job_type,
            status=window.status,
            organization_id=self.query.organization_id,
            object_type=self.query.object_type,
        )
        total, jobs = self.world.query(
            flt, (number - 1) * size, size, newest_first=True, selects=self._selects
        )
        seconds = self.world.now_ticks() / 10_000_000
        self.clock.observe(email.utils.formatdate(seconds, usegmt=True))
        if self._serve is not None:
            total, jobs = self._serve(window, number, total, jobs)
        keys = ("jobs", "nextLink", "pageIndex", "pageSize", "totalCount")
        return JobsPage(jobs=jobs, total=total, number=number, window=window, keys=keys)

    def close(self) -> None:
        """Nothing to release."""


def _ticks(moment: datetime | None) -> int | None:
    return None if moment is None else ticks_from_datetime(moment)


@dataclass
class MergedTable:
    """A destination table as dlt's merge keeps it: one row per key, the newest wins, deletes delete."""

    key: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: int = 0
    """Rows written (merged or deleted) so far."""

    def apply(self, table: pa.Table) -> None:
        self.applied += table.num_rows
        for row in table.to_pylist():
            if row.get(DELETED_COLUMN):
                self.rows.pop(row[self.key], None)
            else:
                self.rows[row[self.key]] = {k: v for k, v in row.items() if k != DELETED_COLUMN}


@dataclass
class Destination:
    """``jobs`` and ``jobs_rejected``, and the duplicate claims a run made."""

    jobs: MergedTable = field(default_factory=lambda: MergedTable("job_id"))
    rejected: MergedTable = field(default_factory=lambda: MergedTable("rejection_key"))
    claims: list[bool] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    """The run log's rows (``_avepoint_runs``), one per run."""

    def load(self, items: Iterable[Any]) -> None:
        """Apply every item a run yields (Arrow tables, some wrapped with hints)."""
        for item in items:
            hints: dict[str, Any] = {}
            table = item
            if hasattr(item, "meta"):  # dlt.mark.with_hints(...) or with_table_name(...)
                table = item.data
                if hasattr(item.meta, "hints"):
                    hints = dict(item.meta.hints)
                else:
                    hints = {"table_name": item.meta.table_name}
            claim = (hints.get("additional_table_hints") or {}).get("x-stage-data-deduplicated")
            disposition = hints.get("write_disposition")
            if isinstance(disposition, dict) and "deduplicated" in disposition:
                claim = disposition["deduplicated"]
            if claim is not None:
                self.claims.append(bool(claim))
            if hints.get("table_name") == "_avepoint_runs":
                self.runs.extend(table.to_pylist())
            elif hints.get("table_name") == "jobs_rejected":
                self.rejected.apply(table)
            else:
                self.jobs.apply(table)


def setup_for(**settings: Any) -> JobsSetup:
    """A run's settings, validated as the source validates them (defaults: lookback 0, page size 10)."""
    values: dict[str, Any] = {
        "base_url": "https://in-process.invalid",
        "api_version": "v1",
        "page_size": 10,
        "job_type": None,
        "status": None,
        "organization_id": None,
        "object_type": None,
        "initial_start_time": None,
        "end_time": None,
        "max_concurrency": 4,
        "lookback_minutes": 0,
    }
    tenant = settings.pop("tenant", None)
    values.update(settings)
    query = build_query(**values)
    credentials = AvePointCredentials()
    credentials.client_id = "unit"
    credentials.client_secret = "unit"
    return JobsSetup(query, credentials, "https://in-process.invalid", True, RetryPolicy(), tenant)


def run_once(
    world: World,
    state: dict[str, Any],
    destination: Destination,
    serve: Any = None,
    selects: str = "start",
    window: str = "half_open",
    **settings: Any,
) -> WorldPages:
    """One run of the jobs resource against ``world``, its batches applied to ``destination``.

    ``state["resource"]`` is the resource's state, ``state["service"]`` the source's findings about the
    service; ``selects`` and ``window`` say how the service reads its time window.
    """
    setup = setup_for(**settings)
    pages = WorldPages(world, setup.query, serve, selects=selects, window=window)
    service = state.setdefault("service", {})
    resource_state = state.setdefault("resource", {})
    destination.load(JobsRun(setup, resource_state, pages=pages, service_state=service).batches())
    return pages
