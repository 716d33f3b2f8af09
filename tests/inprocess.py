"""The unit tier's stand-ins for the two parts that need a socket or a database.

- ``WorldPages``: the connector's ``PageSource`` answered by the simulator's own job store and world
  (its real filtering, ordering and clock), in-process: no HTTP, no TLS, no token. What it leaves out
  (transport, retries, auth) is what the integration tier tests against the simulator over sockets.
- ``MergedTable``: what dlt's merge does with the batches of a run: replace by key, delete on the
  hard-delete column, and keep both rows of a key when the run claimed its rows unique and was wrong.
  The integration tier loads real DuckDB files.
"""

from __future__ import annotations

import email.utils
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
from avepoint_dynamics import AvePointCredentials
from avepoint_dynamics.dlt_compat import DEDUPLICATED_HINT
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
    """A destination table as dlt's merge (``delete-insert``) keeps it, duplicates included.

    A run's rows are staged, then merged when the run's load ends: rows of the staged keys are deleted,
    and the staged rows inserted, except those flagged deleted (hard delete). dlt first reduces the
    staging rows to one per key (the newest here), unless the table claims they are unique already
    (``deduplicated``, dlt's ``x-stage-data-deduplicated`` hint): then every staged row is inserted, and a
    wrong claim leaves two rows of one key, as it would in DuckDB. Like a table hint in dlt's schema,
    the claim stays as the last run set it.
    """

    key: str
    stored: list[dict[str, Any]] = field(default_factory=list)
    """Every row the table holds, in insert order; two of one key only after a wrong claim."""
    deduplicated: bool = False
    applied: int = 0
    """Rows written (merged or deleted) so far."""
    _staged: list[dict[str, Any]] = field(default_factory=list)

    def stage(self, table: pa.Table) -> None:
        self.applied += table.num_rows
        self._staged.extend(table.to_pylist())

    def merge(self) -> None:
        """End of the load: the staged rows replace the rows of their keys."""
        staged, self._staged = self._staged, []
        if not staged:
            return
        if not self.deduplicated:
            staged = list({row[self.key]: row for row in staged}.values())  # the newest of a key
        keys = {row[self.key] for row in staged}
        self.stored = [row for row in self.stored if row[self.key] not in keys]
        self.stored.extend(
            {k: v for k, v in row.items() if k != DELETED_COLUMN}
            for row in staged
            if not row.get(DELETED_COLUMN)
        )

    def duplicated(self) -> list[str]:
        """Keys held in more than one row."""
        held = Counter(row[self.key] for row in self.stored)
        return sorted(key for key, rows in held.items() if rows > 1)

    @property
    def rows(self) -> dict[str, dict[str, Any]]:
        """The table by key; an ``AssertionError`` if a key has two rows (a dict would hide one)."""
        twice = self.duplicated()
        assert not twice, f"{len(twice)} keys held twice in {self.key!r} table, e.g. {twice[:3]}"
        return {row[self.key]: row for row in self.stored}


@dataclass
class Destination:
    """``jobs`` and ``jobs_rejected``, and the duplicate claims a run made."""

    jobs: MergedTable = field(default_factory=lambda: MergedTable("job_id"))
    rejected: MergedTable = field(default_factory=lambda: MergedTable("rejection_key"))
    claims: list[bool] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    """The run log's rows (``_avepoint_runs``), one per run."""

    def load(self, items: Iterable[Any]) -> None:
        """One run's load: every item it yields (Arrow tables, some wrapped with hints), then the merge."""
        for item in items:
            hints: dict[str, Any] = {}
            table = item
            if hasattr(item, "meta"):  # dlt.mark.with_hints(...) or with_table_name(...)
                table = item.data
                if hasattr(item.meta, "hints"):
                    hints = dict(item.meta.hints)
                else:
                    hints = {"table_name": item.meta.table_name}
            claim = (hints.get("additional_table_hints") or {}).get(DEDUPLICATED_HINT)
            disposition = hints.get("write_disposition")
            if isinstance(disposition, dict) and "deduplicated" in disposition:
                claim = disposition["deduplicated"]
            name = hints.get("table_name")
            if name == "_avepoint_runs":
                self.runs.extend(table.to_pylist())
                continue
            merged = self.rejected if name == "jobs_rejected" else self.jobs
            if claim is not None:
                self.claims.append(bool(claim))
                merged.deduplicated = bool(claim)
            merged.stage(table)
        self.jobs.merge()
        self.rejected.merge()


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
