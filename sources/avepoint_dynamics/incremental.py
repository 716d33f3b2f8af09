"""The state between scheduled runs: where the last run stopped, and which jobs are followed until final.

State (``dlt.current.resource_state()`` of ``jobs``; per tenant under ``tenants.<name>``; committed
atomically with the load package)::

    {"cursor": "2026-11-29T08:00:00.000000Z",        # end of the last new-jobs window, service time
     "service_time": "2026-11-29T08:00:00.000000Z",  # the service's clock when the last run planned
     "filters": {"type": 1, "status": null},          # the filters the state was built under
     "open_jobs": {"DCIB2026...": "2026-11-29T07:58:12.345000Z"},      # not final yet: read again
     "open_fingerprints": {"DCIB2026...": "9f86d081884c7d65"},        # as last loaded
     "rejected_jobs": {"DCIB2026...": "2026-11-28T02:00:00.000000Z"},  # set aside: read again
     "rejected_since": {"DCIB2026...": "2026-11-29T08:00:00.000000Z"}, # first set aside (service time)
     "rejected_windows": {"?a1b2...": ["2026-11-28T00:00:00.000000Z", "2026-11-29T00:00:00.000000Z"]},
     "abandoned_jobs": {"DCIB2025...": "2025-10-01T02:00:00.000000Z"}, "abandoned_count": 1,
     "history_from": null,                            # initial_start_time of the first run (null: all)
     "other_filters": {"{\"status\": 4}": {"cursor": ..., "open_jobs": ..., ...}}}

A state belongs to the filters it was built under: the cursor says "every job these filters select that
started before it was read". A scheduled run under other filters (a one-off ``--status 4``, or a filter
changed for good) parks the state of the last run's filters under ``other_filters`` and goes on from the
state of its own filters: where the last run under them stopped, or, the first time, from
``initial_start_time`` (the whole history they select). A run back under earlier filters therefore
re-reads everything the runs in between skipped.

Every time in it is the service's (its ``Date`` header and the start times it serves): a loader clock
that is hours off decides nothing. A run reads ``[cursor - lookback, service now)`` for new jobs, and the
spans that hold the followed jobs (``following``); it then commits what it saw.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .model import Window
from .settings import FINAL_STATUSES
from .times import api_time_or_none, format_api_time, parse_api_time

logger = logging.getLogger(__name__)

#: Abandoned jobs kept by id in the state (the newest); older ones are only counted.
ABANDONED_KEPT = 1_000
#: A set-aside job without a usable start time is re-read through the window it came in, if that
#: window is no longer than this; a wider one would make every run re-read a large part of the history.
MAX_REJECTED_WINDOW_S = 86_400
#: The keys of one filter set's state (``tenants``, ``other_filters`` are not a filter set's).
FILTER_STATE_KEYS = (
    "cursor",
    "service_time",
    "filters",
    "open_jobs",
    "open_fingerprints",
    "rejected_jobs",
    "rejected_since",
    "rejected_windows",
    "rejected_unfollowed",
    "abandoned_jobs",
    "abandoned_count",
    "history_from",
)
#: Where the states of the filter sets other than the last run's are parked.
OTHER_FILTERS = "other_filters"


def tenant_state(
    resource_state: MutableMapping[str, Any], tenant: str | None
) -> MutableMapping[str, Any]:
    """The part of the resource state that belongs to ``tenant`` (the whole of it without a tenant).

    ``load --tenant a`` and ``load --tenant b`` on one pipeline share the ``jobs`` resource; each keeps
    its own cursor and followed jobs under ``tenants.<name>``.
    """
    if not tenant:
        return resource_state
    tenants = resource_state.setdefault("tenants", {})
    state: MutableMapping[str, Any] = tenants.setdefault(tenant, {})
    return state


@dataclass
class FollowState:
    """The state of one tenant's jobs resource, parsed (times as datetimes, never strings)."""

    cursor: datetime | None = None
    service_time: datetime | None = None
    filters: dict[str, Any] | None = None
    open_jobs: dict[str, datetime] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    """The content of each open job as last loaded: read again unchanged, it is not loaded again."""
    rejected_jobs: dict[str, datetime] = field(default_factory=dict)
    rejected_since: dict[str, datetime] = field(default_factory=dict)
    """When each set-aside job was first set aside (service time): followed that long at most."""
    rejected_windows: dict[str, Window] = field(default_factory=dict)
    rejected_unfollowed: dict[str, Window] = field(default_factory=dict)
    """Set aside without a start time in a window too wide to re-read each run: kept (and counted)
    until a run reads their whole window (the backfill their warning names)."""
    abandoned_jobs: dict[str, datetime] = field(default_factory=dict)
    abandoned_count: int = 0

    @classmethod
    def load(cls, state: MutableMapping[str, Any]) -> FollowState:
        """Parse a stored state; entries that do not parse are dropped (a state is never fatal)."""
        windows = _windows(state.get("rejected_windows"))
        filters = state.get("filters")
        open_jobs = _times(state.get("open_jobs"))
        prints = {
            str(key): str(value)
            for key, value in dict(state.get("open_fingerprints") or {}).items()
            if key in open_jobs
        }
        return cls(
            cursor=api_time_or_none(state.get("cursor")),
            service_time=api_time_or_none(state.get("service_time")),
            filters=dict(filters) if isinstance(filters, dict) else None,
            open_jobs=open_jobs,
            fingerprints=prints,
            rejected_jobs=_times(state.get("rejected_jobs")),
            rejected_since=_times(state.get("rejected_since")),
            rejected_windows=windows,
            rejected_unfollowed=_windows(state.get("rejected_unfollowed")),
            abandoned_jobs=_times(state.get("abandoned_jobs")),
            abandoned_count=int(state.get("abandoned_count") or 0),
        )

    def save(self, state: MutableMapping[str, Any]) -> None:
        """Write back into the resource state (dlt commits it with the load package)."""
        if self.cursor is not None:
            state["cursor"] = format_api_time(self.cursor)
        if self.service_time is not None:
            state["service_time"] = format_api_time(self.service_time)
        state["filters"] = self.filters
        state["open_jobs"] = _iso(self.open_jobs)
        state["open_fingerprints"] = {
            key: value for key, value in sorted(self.fingerprints.items()) if key in self.open_jobs
        }
        state["rejected_jobs"] = _iso(self.rejected_jobs)
        followed_keys = self.rejected_jobs.keys() | self.rejected_windows.keys()
        state["rejected_since"] = _iso(
            {key: moment for key, moment in self.rejected_since.items() if key in followed_keys}
        )
        state["rejected_windows"] = _window_lists(self.rejected_windows)
        state["rejected_unfollowed"] = _window_lists(self.rejected_unfollowed)
        newest = sorted(self.abandoned_jobs.items(), key=lambda item: item[1])[-ABANDONED_KEPT:]
        state["abandoned_jobs"] = _iso(dict(newest))
        state["abandoned_count"] = self.abandoned_count

    def followed(self) -> dict[str, datetime]:
        """Every followed job with a start time: open, and set aside."""
        return {**self.rejected_jobs, **self.open_jobs}

    def abandon_old(self, max_age: Any) -> list[str]:
        """Stop following what has been followed too long, by the last run's service time.

        An open job: ``max_age`` after it started (a job that never reaches a final status). A set-aside
        job: ``max_age`` after it was first set aside (a history loaded today may hold old bad jobs).

        Returns:
            The keys abandoned now (each is warned about once, here).
        """
        if self.service_time is None:
            return []
        limit = self.service_time - max_age
        gone = [job_id for job_id, start in self.open_jobs.items() if start < limit]
        for job_id in gone:
            self.abandoned_jobs[job_id] = self.open_jobs.pop(job_id)
        for key in list(self.rejected_jobs.keys() | self.rejected_windows.keys()):
            since = self.rejected_since.get(key)
            if since is not None and since < limit:
                start = self.rejected_jobs.pop(key, None)
                window = self.rejected_windows.pop(key, None)
                moment = start or (window.start if window is not None else None)
                if moment is not None:
                    self.abandoned_jobs[key] = moment
                gone.append(key)
        self.abandoned_count += len(gone)
        return gone


@dataclass
class RunTracker:
    """What one run saw, and what the state becomes once the run has read everything.

    Args:
        before: The state the run started from.
        ranges: The time ranges the run reads completely (every status selection of each).
        filters_match: The run's filters are the state's: what it does not see may be resolved.
        status_can_be_left: The run's status filter selects a status jobs leave (2 or undocumented):
            a followed job that left it must leave the table.
    """

    before: FollowState
    ranges: list[Window]
    filters_match: bool = True
    status_can_be_left: bool = False
    open_now: dict[str, datetime] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    final_now: set[str] = field(default_factory=set)
    rejected_now: dict[str, datetime | None] = field(default_factory=dict)
    rejected_window_of: dict[str, Window] = field(default_factory=dict)
    rejected: int = 0

    def saw_open(self, job_id: str, start: datetime, fingerprint: str | None = None) -> None:
        """A job read in this run that is not final: follow it (``fingerprint``: as loaded now)."""
        self.open_now[job_id] = start
        if fingerprint is not None:
            self.fingerprints[job_id] = fingerprint

    def saw_final(self, job_ids: Iterable[str]) -> None:
        """Jobs read in this run in a final status: no longer followed.

        Only the followed ones are kept: nothing asks about the others, and a set of every final id
        of a full load grows with the history (~130 MB at 1,000,000 jobs).
        """
        followed = self.before.open_jobs
        if followed:
            self.final_now.update(job_id for job_id in job_ids if job_id in followed)

    def saw_rejected(self, key: str, start: datetime | None, window: Window) -> None:
        """A job set aside in this run (``key``: its id, or a stand-in when it has none)."""
        self.rejected += 1
        self.rejected_now[key] = start
        if start is None:
            self.rejected_window_of[key] = window

    def covers(self, window: Window) -> bool:
        """Whether this run read the whole of ``window``."""
        return window.end is not None and any(
            (r.start is None or (window.start is not None and r.start <= window.start))
            and (r.end is None or window.end <= r.end)
            for r in self.ranges
        )

    def covered(self, start: datetime) -> bool:
        """Whether this run read the whole range a job that started at ``start`` belongs to."""
        return any(window.contains(start) for window in self.ranges)

    def left_jobs(self) -> dict[str, datetime]:
        """Followed open jobs this run read the range of and did not see open, final, or set aside.

        With the filters unchanged that means: no longer returned under the filters (a status filter
        they moved out of, or a retention purge).
        """
        if not self.filters_match:
            return {}
        seen = self.open_now.keys() | self.final_now | self.rejected_now.keys()
        return {
            job_id: start
            for job_id, start in self.before.open_jobs.items()
            if job_id not in seen and self.covered(start)
        }

    def resolved_rejections(self) -> list[str]:
        """Set-aside jobs whose range this run read and that were not set aside again: they loaded."""
        if not self.filters_match:
            return []
        gone = [
            key
            for key, start in self.before.rejected_jobs.items()
            if key not in self.rejected_now and self.covered(start)
        ]
        gone += [
            key
            for key, window in self.before.rejected_windows.items()
            if key not in self.rejected_now
            and window.start is not None
            and self.covered(window.start)
        ]
        gone += [
            key
            for key, window in self.before.rejected_unfollowed.items()
            if key not in self.rejected_now and self.covers(window)
        ]
        return gone

    def after(
        self, cursor: datetime | None, service_time: datetime, filters: dict[str, Any]
    ) -> FollowState:
        """The state to commit: the cursor moves to ``cursor`` (None: a backfill, it stays)."""
        before = self.before
        state = FollowState(
            cursor=cursor if cursor is not None else before.cursor,
            service_time=service_time,
            filters=filters if (self.filters_match or before.filters is None) else before.filters,
            abandoned_jobs=dict(before.abandoned_jobs),
            abandoned_count=before.abandoned_count,
            rejected_since=dict(before.rejected_since),
        )
        if not self.filters_match and before.filters is not None and cursor is None:
            # A backfill under other filters neither resolves nor adds followed jobs.
            state.open_jobs = dict(before.open_jobs)
            state.rejected_jobs = dict(before.rejected_jobs)
            state.rejected_windows = dict(before.rejected_windows)
            state.rejected_unfollowed = dict(before.rejected_unfollowed)
            return state
        left = self.left_jobs()
        for job_id, start in before.open_jobs.items():
            done = job_id in self.final_now or job_id in left or job_id in self.rejected_now
            if not done:
                state.open_jobs[job_id] = start
        state.open_jobs.update(self.open_now)
        state.fingerprints = {
            key: value
            for key, value in {**before.fingerprints, **self.fingerprints}.items()
            if key in state.open_jobs
        }
        resolved = set(self.resolved_rejections())
        for key, start in before.rejected_jobs.items():
            if key not in resolved:
                state.rejected_jobs[key] = start
        for key, window in before.rejected_windows.items():
            if key not in resolved:
                state.rejected_windows[key] = window
        for key, window in before.rejected_unfollowed.items():
            if key not in resolved and key not in self.rejected_now:
                state.rejected_unfollowed[key] = window
        for key, moment in self.rejected_now.items():
            state.open_jobs.pop(key, None)
            state.rejected_since.setdefault(key, service_time)
            if moment is not None:
                state.rejected_jobs[key] = moment
            else:
                window = self.rejected_window_of[key]
                if _followable(window):
                    state.rejected_windows[key] = window
                else:
                    state.rejected_unfollowed[key] = window
                    logger.warning(
                        "job %s was set aside without a usable start time, read in the time span %s "
                        "(over a day long); "
                        "it is not read again automatically: once AvePoint fixes it, run "
                        "avepoint-dynamics backfill --from %s --to %s",
                        key,
                        window,
                        format_api_time(window.start) if window.start else "<first day>",
                        format_api_time(window.end) if window.end else "<now>",
                    )
        for key in state.rejected_jobs:
            state.open_jobs.pop(key, None)
        return state


def _windows(raw: Any) -> dict[str, Window]:
    windows: dict[str, Window] = {}
    for key, pair in dict(raw or {}).items():
        if isinstance(pair, list | tuple) and len(pair) == 2:
            end = api_time_or_none(pair[1])
            if end is not None:
                windows[str(key)] = Window(api_time_or_none(pair[0]), end)
    return windows


def _window_lists(windows: dict[str, Window]) -> dict[str, list[str | None]]:
    return {
        key: [format_api_time(w.start) if w.start else None, format_api_time(w.end)]
        for key, w in sorted(windows.items())
        if w.end is not None
    }


def set_aside_count(state: MutableMapping[str, Any]) -> int:
    """How many jobs are set aside in ``jobs_rejected`` now, by a stored state (one row each)."""
    return sum(
        len(state.get(key) or {})
        for key in ("rejected_jobs", "rejected_windows", "rejected_unfollowed")
    )


def _followable(window: Window) -> bool:
    if window.start is None or window.end is None:
        return False
    return (window.end - window.start).total_seconds() <= MAX_REJECTED_WINDOW_S


def _times(raw: Any) -> dict[str, datetime]:
    return {
        str(key): moment
        for key, value in dict(raw or {}).items()
        if (moment := api_time_or_none(value)) is not None
    }


def _iso(times: dict[str, datetime]) -> dict[str, str]:
    return {key: format_api_time(moment) for key, moment in sorted(times.items())}


def filters_id(filters: dict[str, Any]) -> str:
    """A filter set as a key of ``other_filters``: its JSON, keys sorted, unset filters left out."""
    return json.dumps({k: v for k, v in filters.items() if v is not None}, sort_keys=True)


def selects_within(narrow: dict[str, Any], wide: dict[str, Any]) -> bool:
    """Whether every job ``narrow`` selects is selected by ``wide`` (each filter ``wide`` sets, equal)."""
    return all(narrow.get(key) == value for key, value in wide.items() if value is not None)


def switch_filters(
    state: MutableMapping[str, Any], filters: dict[str, Any]
) -> dict[str, Any] | None:
    """Make ``state`` the state of ``filters``: park the last run's, bring back (or start) theirs.

    Args:
        state: One tenant's state, changed in place (committed by dlt only if the run loads).
        filters: The run's filters (``JobsQuery.filter_key()``).

    Returns:
        The last run's filters when they were others (the state was switched), else None.
    """
    last = state.get("filters")
    if not isinstance(last, dict) or filters_id(last) == filters_id(filters):
        return None
    parked: MutableMapping[str, Any] = state.setdefault(OTHER_FILTERS, {})
    parked[filters_id(last)] = {key: state.pop(key) for key in FILTER_STATE_KEYS if key in state}
    for key in [k for k in parked if not _within(k, filters)]:
        # After this run the table holds only what ``filters`` select (the runner deletes the rest):
        # a state of filters that select more no longer describes it.
        del parked[key]
    mine = parked.pop(filters_id(filters), None)
    if isinstance(mine, dict):
        state.update({key: value for key, value in mine.items() if key in FILTER_STATE_KEYS})
    state["filters"] = dict(filters)
    return dict(last)


def _within(key: str, filters: dict[str, Any]) -> bool:
    try:
        return selects_within(dict(json.loads(key)), filters)
    except (ValueError, TypeError):
        return False


def other_filters(state: MutableMapping[str, Any]) -> list[dict[str, Any]]:
    """The filter sets with a parked state (earlier runs under other filters)."""
    found = []
    for key in dict(state.get(OTHER_FILTERS) or {}):
        try:
            found.append(dict(json.loads(key)))
        except (ValueError, TypeError):
            continue
    return found


def describe_filters(filters: dict[str, Any] | None) -> str:
    """Filters as a user reads them: ``status 3, type 1`` or ``none``."""
    if not filters:
        return "none"
    shown = [f"{key} {value}" for key, value in sorted(filters.items()) if value is not None]
    return ", ".join(shown) or "none"


def follow_marks(jobs: list[dict[str, Any]]) -> tuple[dict[str, datetime], list[str]]:
    """From jobs read only to be followed (never loaded): the open ones with their start, and the final ids.

    A job whose id or start time cannot be read is skipped here: it is loaded (or set aside) from the
    read that selects it under the run's filters.
    """
    open_jobs: dict[str, datetime] = {}
    final: list[str] = []
    for job in jobs:
        job_id, raw_start, status = job.get("jobId"), job.get("startTime"), job.get("status")
        if not isinstance(job_id, str) or not job_id or not isinstance(raw_start, str):
            continue
        try:
            start = parse_api_time(raw_start)
        except ValueError:
            continue
        if isinstance(status, int) and not isinstance(status, bool) and status in FINAL_STATUSES:
            final.append(job_id)
        else:
            open_jobs[job_id] = start
    return open_jobs, final
