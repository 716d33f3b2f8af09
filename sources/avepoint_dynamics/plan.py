"""Which requests a run makes, by how this tenant's service reads its time window (``service``).

Every run reads the jobs that changed since the last one. What that takes depends on what the window
selects:

- ``start`` (assumed until learnt otherwise): the new-jobs window ``[cursor - lookback, now)``, plus the
  ranges that hold the followed jobs (``following``). Each range is read with the configured status
  filter, and, under a final status filter, with status 2 too: the jobs that may move into it later.
- ``overlap``: a window returns every job that ran during it, running ones included: the new-jobs window
  alone returns every job that changed since the last run. Followed jobs need no ranges of their own.
- ``finish``: a window returns the jobs that finished in it and never a running one: the new-jobs window
  by finish time, plus one request for status 2 without any window (the jobs running now).
- ``ignored``: every request returns everything: the whole history, every run.
- ``unknown`` (the probe could not tell): the ``start`` reads, plus one read of status 2 without any
  window (every job running now). Exact under every reading: by start, the ``start`` reads suffice; by
  overlap or finish, a job that changed since the last run either runs now (the running read) or
  finished after the new-jobs window's start, so that window returns it (by finish: it finished in it;
  by overlap: it ran during it). Followed jobs no window returned are looked for as under ``finish``.
  The cost: the running jobs' pages on every run. A running job the start reads returned too is kept
  once (unless it changed between the two reads: then the load deduplicates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .following import point_windows
from .model import Window
from .query import JobsQuery
from .settings import IN_PROGRESS_STATUS


@dataclass
class ReadPlan:
    """The reads of one run.

    Attributes:
        windows: What to read, in order.
        follow_only: Reads whose jobs are only followed, never loaded (status 2 under a final filter).
        start_ranges: Ranges by start time every loaded job must lie in (``start`` windows); None when the
            service selects otherwise, so a job's start says nothing of the window it came from.
        coverage: Ranges by start time whose every job this run sees, if it still matches the
            filters: a followed job in them that was not seen has left the filters (or was purged).
        cursor: Where the next scheduled run starts (the new-jobs window's end); None for a backfill.
        seen_last: A read whose jobs the earlier reads of the run may have returned already (the
            running jobs, under ``unknown``): a job already read as it is now is not read twice.
    """

    windows: list[Window]
    follow_only: set[Window] = field(default_factory=set)
    start_ranges: list[Window] | None = None
    coverage: list[Window] = field(default_factory=list)
    cursor: datetime | None = None
    seen_last: Window | None = None


def plan_reads(
    selects: str,
    query: JobsQuery,
    new_jobs: Window,
    follow_ranges: list[Window],
) -> ReadPlan:
    """The reads of a run, given the service's reading of the window.

    Args:
        selects: ``start``, ``overlap``, ``finish``, ``ignored`` or ``unknown`` (see the module's
            docstring).
        query: The run's settings (status filter, backfill).
        new_jobs: ``[cursor - lookback, service now)`` (a backfill: its range).
        follow_ranges: The ranges of the followed jobs (``start`` windows only).

    Example:
        >>> plan_reads("finish", query, Window(t0, t1), []).windows
        [Window(t0, t1, status=None), Window(None, None, status=2)]
    """
    cursor = None if query.is_backfill else new_jobs.end
    status = query.status
    follow_status = IN_PROGRESS_STATUS if status is not None and status != 2 else None
    if selects == "finish":
        windows = (
            [] if status == IN_PROGRESS_STATUS else [Window(new_jobs.start, new_jobs.end, status)]
        )
        running = Window(None, None, IN_PROGRESS_STATUS)
        windows.append(running)
        follow_only: set[Window] = {running} if follow_status is not None else set()
        return ReadPlan(windows, follow_only, None, [Window(None, None)], cursor)
    if selects in ("overlap", "ignored"):
        whole = Window(None, new_jobs.end) if selects == "ignored" else new_jobs
        windows = [Window(whole.start, whole.end, status)]
        follow_only = set()
        if follow_status is not None:
            discover = Window(whole.start, whole.end, follow_status)
            windows.append(discover)
            follow_only.add(discover)
        return ReadPlan(windows, follow_only, None, [Window(None, new_jobs.end)], cursor)
    if selects == "unknown":
        return _safe_plan(status, follow_status, _disjoint([*follow_ranges, new_jobs]), cursor)
    ranges = _disjoint([*follow_ranges, new_jobs])
    windows = []
    follow_only = set()
    for range_ in ranges:
        windows.append(Window(range_.start, range_.end, status))
        if follow_status is not None:
            discover = Window(range_.start, range_.end, follow_status)
            windows.append(discover)
            follow_only.add(discover)
    return ReadPlan(windows, follow_only, ranges, ranges, cursor)


def _safe_plan(
    status: int | None, follow_status: int | None, ranges: list[Window], cursor: datetime | None
) -> ReadPlan:
    """The reads while the window's reading is unknown: by start time, then every running job.

    The running jobs come last: a job that finishes between two reads is then seen running first,
    and followed, never the other way round.
    """
    running = Window(None, None, IN_PROGRESS_STATUS)
    windows = (
        [] if status == IN_PROGRESS_STATUS else [Window(r.start, r.end, status) for r in ranges]
    )
    windows.append(running)
    follow_only = {running} if follow_status is not None else set()
    return ReadPlan(windows, follow_only, None, [Window(None, None)], cursor, seen_last=running)


def plan_rescue(
    selects: str, query: JobsQuery, missing: list[datetime], new_jobs_start: datetime | None
) -> ReadPlan:
    """Reads that find followed jobs the run's reads did not return (``overlap``, ``finish``, ``unknown``).

    A service may date a job's finish a little before the moment it showed it finished (a clock, a
    rounding): then the job is in no window of the next run, and no longer running. Found by its start
    (``overlap``: it ran during the second it started), or by its finish, which lies after its start
    (``finish``: the jobs that finished between the oldest such start and the new-jobs window).

    Args:
        selects: ``overlap``, or ``finish`` / ``unknown`` (by finish: exact under every reading, as the
            job started in the window).
        query: The run's settings.
        missing: Start times of the followed jobs not seen.
        new_jobs_start: Where the new-jobs window started (the rescue window ends there).
    """
    if selects == "overlap":
        windows = [Window(w.start, w.end, query.status) for w in point_windows(missing, None)]
    else:
        earliest = min(missing)
        ends_after = new_jobs_start is None or earliest < new_jobs_start
        windows = [Window(earliest, new_jobs_start, query.status)] if ends_after else []
    return ReadPlan(windows, set(), None, [Window(None, None)], None)


def _disjoint(windows: list[Window]) -> list[Window]:
    """The union of time ranges as disjoint ranges in time order (empty ones dropped)."""
    ordered = sorted(
        (w for w in windows if w.start is None or w.end is None or w.start < w.end),
        key=lambda w: (w.start is not None, w.start or datetime.min),
    )
    merged: list[Window] = []
    for window in ordered:
        last = merged[-1] if merged else None
        touches = last is not None and (
            last.end is None or (window.start is not None and window.start <= last.end)
        )
        if last is not None and touches:
            end = None if last.end is None or window.end is None else max(last.end, window.end)
            merged[-1] = Window(last.start, end)
        else:
            merged.append(Window(window.start, window.end))
    return merged
