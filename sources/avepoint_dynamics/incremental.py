"""The resource state between scheduled runs: where the last run stopped and which jobs are still open.

State (``dlt.current.resource_state()`` of ``jobs``, committed atomically with the load package)::

    {"cursor": "2026-11-29T08:00:00.000000Z",          # end of the last complete scheduled window
     "open_jobs": {"DCIB2026...": "2026-11-29T07:58:12.345000Z"}}   # seen running: read again until final

A run reads ``[cursor - lookback, now)`` for new jobs, plus a one-second window around each open job older
than that, so a job that runs for days reaches its final state at the cost of one small request per run,
whatever the size of the history.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .client import Window
from .query import JobsQuery
from .rows import JobBatch
from .times import format_api_time, parse_api_time

logger = logging.getLogger(__name__)

_SECOND = timedelta(seconds=1)


@dataclass
class RunPlan:
    """The windows one run reads; ``new_jobs`` is the frozen window of new jobs (its end is the run's start)."""

    new_jobs: Window
    open_job_windows: list[Window]
    is_backfill: bool
    previous_open: dict[str, datetime] = field(default_factory=dict)

    @property
    def windows(self) -> list[Window]:
        return [*self.open_job_windows, self.new_jobs]


def plan_run(query: JobsQuery, state: MutableMapping[str, Any], now: datetime) -> RunPlan:
    """Decide what to read: a backfill reads its bounded range; a scheduled run reads from its state.

    Example:
        >>> plan_run(query, {"cursor": "2026-11-28T08:00:00.000000Z"}, now).new_jobs
        Window(start=datetime(2026, 11, 28, 7, 50, ...), end=now)   # 10 minutes of lookback
    """
    if query.is_backfill:
        assert query.end_time is not None
        return RunPlan(Window(query.initial_start_time, query.end_time), [], is_backfill=True)
    cursor = _time_or_none(state.get("cursor"))
    start = cursor - query.lookback if cursor is not None else query.initial_start_time
    open_jobs = {
        job_id: moment
        for job_id, raw in dict(state.get("open_jobs") or {}).items()
        if (moment := _time_or_none(raw)) is not None
    }
    return RunPlan(
        Window(start, now),
        _around(open_jobs.values(), start),
        is_backfill=False,
        previous_open=open_jobs,
    )


def _around(starts: Any, limit: datetime | None) -> list[Window]:
    """One-second windows around each open job below ``limit``, merged where they touch."""
    if limit is None:
        return []
    windows: list[Window] = []
    for moment in sorted(starts):
        low = moment.replace(microsecond=0)
        high = min(low + _SECOND, limit)
        if low >= limit:
            continue
        if windows and low <= windows[-1].end:
            windows[-1] = Window(windows[-1].start, max(high, windows[-1].end))
        else:
            windows.append(Window(low, high))
    return windows


@dataclass
class RunTracker:
    """Collects what the state needs from each batch, and writes the state once the run read everything."""

    plan: RunPlan
    open_now: dict[str, datetime] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    earliest_rejected: datetime | None = None
    rejected_without_time: int = 0
    rejected: int = 0

    def add(self, batch: JobBatch) -> None:
        self.open_now.update(batch.open_jobs)
        if batch.table is not None and self.plan.previous_open:
            ids = batch.table.column("job_id").to_pylist()
            self.seen.update(job_id for job_id in ids if job_id in self.plan.previous_open)
        for job in batch.rejected:
            self.rejected += 1
            moment = _time_or_none(job.start_time)
            if moment is None:
                self.rejected_without_time += 1
                continue
            if job.job_id:
                self.open_now[job.job_id] = moment  # read it again next run
            if self.earliest_rejected is None or moment < self.earliest_rejected:
                self.earliest_rejected = moment

    def commit(self, state: MutableMapping[str, Any]) -> None:
        """Advance the cursor and replace the open-job list; never moves past a job that was not loaded."""
        if not self.rejected_without_time:
            # A rejected job with no usable start time cannot be placed: the cursor stays, the window is
            # read again next run (merge on job_id makes that harmless).
            cursor = self.plan.new_jobs.end
            if self.earliest_rejected is not None:
                cursor = min(cursor, self.earliest_rejected)
            state["cursor"] = format_api_time(cursor)
        for job_id in self.plan.previous_open.keys() - self.seen - self.open_now.keys():
            logger.warning(
                "open job %s is no longer returned by the API (purged?); forgetting it", job_id
            )
        state["open_jobs"] = {
            job_id: format_api_time(t) for job_id, t in sorted(self.open_now.items())
        }


def _time_or_none(raw: Any) -> datetime | None:
    if isinstance(raw, datetime):
        return raw
    if not isinstance(raw, str):
        return None
    try:
        return parse_api_time(raw)
    except ValueError:
        return None
