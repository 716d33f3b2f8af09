"""A run's steps as values: where it starts, what it reads, what it leaves (``run`` chains them).

:func:`start_run` parses the stored state under the run's filters (:class:`RunStart`); :func:`plan_run`
decides the new-jobs window, the followed jobs' spans and the requests (:class:`RunPlan`); the reading
(``run.JobsRun``) returns a :class:`Reading`; :func:`commit_run` makes the state the run leaves
(:class:`Committed`), which ``run`` writes back into the resource state once (:func:`write_back`). None of
them sends a request of its own or touches dlt: ``plan_run`` asks through the callables it is given.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import ConfigError
from .following import plan_follow
from .incremental import (
    FollowState,
    RunTracker,
    describe_filters,
    selects_within,
    switch_filters,
)
from .model import JobsPage, Window
from .paging import PagingStats
from .plan import ReadPlan, plan_reads
from .query import JobsQuery
from .settings import IN_PROGRESS_STATUS
from .times import format_api_time

logger = logging.getLogger("avepoint_dynamics")


@dataclass
class RunStart:
    """Where a run starts from: the stored state as the run's filters find it, parsed.

    Attributes:
        stored: A copy of the tenant's stored state with the run's filters' state in place (the last
            run's parked under ``other_filters`` when they changed) and ``history_from`` set; the
            resource state itself is untouched until :func:`commit_run`'s result is written back.
        before: ``stored`` parsed, the jobs followed too long already abandoned.
        filters: The run's filters (``JobsQuery.filter_key()``).
        filters_match: The state was built under the run's filters (a backfill's may differ).
        abandoned: The keys no longer followed from this run on (warned about once, here).
    """

    stored: dict[str, Any]
    before: FollowState
    filters: dict[str, Any]
    filters_match: bool
    abandoned: list[str] = field(default_factory=list)


def start_run(query: JobsQuery, stored: Mapping[str, Any]) -> RunStart:
    """The state a run starts from, read from a copy of the stored one (``stored`` is not changed)."""
    state: dict[str, Any] = copy.deepcopy(dict(stored))
    filters = query.filter_key()
    if not query.is_backfill:
        last = switch_filters(state, filters)
        if last is not None:
            _say_filters_switched(query, state, last, filters)
    before = FollowState.load(state)
    filters_match = before.filters is None or before.filters == filters
    if not filters_match:
        logger.warning(
            "this backfill's filters (%s) are not the last run's (%s): it loads what they select "
            "and leaves the followed jobs alone",
            describe_filters(filters),
            describe_filters(before.filters),
        )
    _history_from(query, state, before)
    abandoned = before.abandon_old(query.open_job_max_age)
    for job_id in abandoned:
        logger.warning(
            "job %s is still not finished %d days after it started; no longer checking it "
            "(avepoint-dynamics state lists it)",
            job_id,
            query.open_job_max_age.days,
        )
    return RunStart(state, before, filters, filters_match, abandoned)


@dataclass
class RunPlan:
    """What a run reads, decided before the reading starts.

    Attributes:
        selects: How the service's window selects jobs, as the plan reads it (``unknown`` included).
        start: The new-jobs window's start (None: the whole history).
        end: Its end: the service's time, or ``end_time`` if earlier; never before ``start``.
        now: The service's time when the run planned (the next state's ``service_time``).
        follow_ranges: The earlier spans read for the followed jobs.
        reads: The requests (``plan.plan_reads``).
        first_pages: Page 1 of the windows probed while planning, for the read to use.
    """

    selects: str
    start: datetime | None
    end: datetime
    now: datetime
    follow_ranges: list[Window]
    reads: ReadPlan
    first_pages: dict[Window, JobsPage]


def plan_run(
    query: JobsQuery,
    before: FollowState,
    selects: str,
    first_pages_of: Callable[[list[Window]], list[JobsPage]],
    service_now: Callable[[], datetime],
) -> RunPlan:
    """Plan a run: the new-jobs window, the followed jobs' spans (weighed by probes), the requests.

    Args:
        query: The run's settings.
        before: The state the run starts from (:attr:`RunStart.before`).
        selects: How the service's window selects jobs (``start``, ``overlap``, ``finish``,
            ``ignored``, ``unknown``).
        first_pages_of: Page 1 of each window, in order (a probe: its total weighs a span).
        service_now: The service's time now; awaited once, after the probes (the caller may ask
            it side by side with them).

    Raises:
        ConfigError: a backfill whose range is empty by the service's time.
    """
    start = new_jobs_start(query, before)
    first_pages: dict[Window, JobsPage] = {}
    follow_ranges: list[Window] = []
    if not query.is_backfill and selects in ("start", "unknown"):
        also = follow_status(query)
        selections = [query.status] + ([also] if also is not None else [])
        size = query.page_size

        def cost_of(spans: list[Window]) -> list[int | None]:
            """The requests each span would take, by its first pages (kept for the read)."""
            windows = [Window(s.start, s.end, status) for s in spans for status in selections]
            pages = first_pages_of(windows)
            first_pages.update(zip(windows, pages, strict=True))
            costs: list[int | None] = []
            for index in range(len(spans)):
                mine = pages[index * len(selections) : (index + 1) * len(selections)]
                if any(page.total is None for page in mine):
                    costs.append(None)
                else:
                    costs.append(sum(max(1, math.ceil((p.total or 0) / size)) for p in mine))
            return costs

        follow_ranges = plan_follow(
            list(before.followed().values()), start, cost_of, reads_per_window=len(selections)
        )
    if not query.is_backfill:
        follow_ranges += [
            window
            for window in before.rejected_windows.values()
            if start is None or (window.start is not None and window.start < start)
        ]
    now = service_now()
    end = now if query.end_time is None else min(query.end_time, now)
    if query.is_backfill and start is not None and end <= start:
        raise ConfigError(
            "initial_start_time",
            f"{format_api_time(start)} is not before the service's time now "
            f"({format_api_time(now)}): the backfill's range is empty",
        )
    if start is not None and end < start:
        # The service's clock is behind where this window starts (a clock set back, or
        # a probe that found only older jobs): nothing new to ask; the cursor stays.
        end = start
    reads = plan_reads(selects, query, Window(start, end), follow_ranges)
    return RunPlan(selects, start, end, now, follow_ranges, reads, first_pages)


def new_jobs_start(query: JobsQuery, before: FollowState) -> datetime | None:
    """Where the new-jobs window starts: ``cursor - lookback``; a backfill's or a first run's start."""
    if query.is_backfill or before.cursor is None:
        return query.initial_start_time
    return before.cursor - query.lookback


def follow_status(query: JobsQuery) -> int | None:
    """Status 2 besides a status filter other than 2: the jobs that may move into it later."""
    return IN_PROGRESS_STATUS if query.status is not None and query.status != 2 else None


@dataclass
class Reading:
    """What the reading of a run saw: every job it followed or resolved, and what it cost."""

    tracker: RunTracker
    stats: PagingStats


@dataclass
class Committed:
    """The state after a run: as stored (``stored``, for the resource state) and parsed (``state``)."""

    stored: dict[str, Any]
    state: FollowState


def commit_run(start: RunStart, plan: RunPlan, reading: Reading) -> Committed:
    """The state the run leaves: a new value; ``start.stored`` is not changed.

    The cursor moves to the new-jobs window's end (never back); a backfill's stays.
    """
    cursor = plan.reads.cursor
    if cursor is not None and start.before.cursor is not None:
        cursor = max(cursor, start.before.cursor)  # a cursor never moves back
    state = reading.tracker.after(cursor, plan.now, start.filters)
    stored = copy.deepcopy(start.stored)
    state.save(stored)
    return Committed(stored, state)


def write_back(target: MutableMapping[str, Any], stored: Mapping[str, Any]) -> None:
    """Make the resource state ``target`` hold ``stored`` (dlt commits it with the load package)."""
    for key in [key for key in target if key not in stored]:
        del target[key]
    for key, value in stored.items():
        if key not in target or target[key] != value:
            target[key] = value


def _say_filters_switched(
    query: JobsQuery, state: Mapping[str, Any], old: dict[str, Any], new: dict[str, Any]
) -> None:
    """Say what a run under other filters than the last run's reads, and what the table keeps."""
    before = FollowState.load(dict(state))
    if before.cursor is not None:
        reads = (
            f"it reads on from where the last run under them stopped ({format_api_time(before.cursor)}), "
            "so it also reads what the runs in between skipped"
        )
    else:
        start = query.initial_start_time
        since = f"since {format_api_time(start)}" if start is not None else "in the whole history"
        reads = f"no run read under them yet: it reads every job they select {since}"
    if selects_within(old, new):
        after = (
            f"the state built under {describe_filters(old)} is kept for the next run under those"
        )
    else:
        after = (
            f"after the load the table holds only what these select: rows loaded under "
            f"{describe_filters(old)} that they do not select are deleted (SQL destinations), and "
            "a run under "
            f"{describe_filters(old)} again reads everything it selects"
        )
    logger.warning(
        "the filters changed since the last run (%s -> %s): %s; %s",
        describe_filters(old),
        describe_filters(new),
        reads,
        after,
    )


def _history_from(query: JobsQuery, state: MutableMapping[str, Any], before: FollowState) -> None:
    """Remember where a first run started; say so when ``initial_start_time`` asks for another start."""
    if query.is_backfill:
        return
    given = format_api_time(query.initial_start_time) if query.initial_start_time else None
    if before.cursor is None:
        state["history_from"] = given
        return
    if "history_from" not in state:
        return  # a state from before this was kept: where it started is not known
    started = state.get("history_from")
    if given is None or given == started:
        return
    if started is not None and given < started:
        advice = f"to load [{given}, {started}) run avepoint-dynamics backfill --from {given} --to {started}"
    else:
        advice = "to start the history there instead: avepoint-dynamics reset --yes, then load"
    logger.warning(
        "initial_start_time %s applies to a first run only: this pipeline's history starts at %s "
        "and its cursor is at %s; %s",
        given,
        started or "the first job",
        format_api_time(before.cursor),
        advice,
    )
