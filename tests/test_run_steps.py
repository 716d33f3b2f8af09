"""Unit tier: the steps of one run (start, plan, commit) as values, each alone, without a socket.

``JobsRun.batches`` strings them together; here each gets its inputs and is judged by what it returns, and by
what it leaves unchanged (the stored state is written back only once, after the commit).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from avepoint_dynamics.errors import ConfigError
from avepoint_dynamics.incremental import OTHER_FILTERS, FollowState, RunTracker, filters_id
from avepoint_dynamics.model import JobsPage, Window
from avepoint_dynamics.paging import PagingStats
from avepoint_dynamics.query import JobsQuery, build_query
from avepoint_dynamics.steps import (
    Reading,
    RunPlan,
    RunStart,
    commit_run,
    plan_run,
    start_run,
    write_back,
)
from avepoint_dynamics.times import format_api_time

pytestmark = pytest.mark.unit

CURSOR = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
LOOKBACK = timedelta(minutes=10)


def query(**overrides: Any) -> JobsQuery:
    settings: dict[str, Any] = {
        "base_url": "https://api.example.test",
        "api_version": "v1",
        "page_size": 100,
        "job_type": None,
        "status": None,
        "organization_id": None,
        "object_type": None,
        "initial_start_time": None,
        "end_time": None,
        "max_concurrency": 4,
        "lookback_minutes": int(LOOKBACK.total_seconds() // 60),
        **overrides,
    }
    return build_query(**settings)


def stored_state(q: JobsQuery, **open_jobs: datetime) -> dict[str, Any]:
    """A state as a scheduled run under ``q``'s filters stores it."""
    state = FollowState(
        cursor=CURSOR, service_time=CURSOR, filters=q.filter_key(), open_jobs=dict(open_jobs)
    )
    stored: dict[str, Any] = {"history_from": None}
    state.save(stored)
    return stored


def no_probe(windows: list[Window]) -> list[JobsPage]:
    raise AssertionError(f"nothing should be probed, asked for {windows}")


def plan_of(q: JobsQuery, start: RunStart, now: datetime, selects: str = "start") -> RunPlan:
    return plan_run(q, start.before, selects, no_probe, lambda: now)


# ---------------------------------------------------------------------- start_run
def test_start_run_leaves_the_stored_state_alone() -> None:
    q = query()
    stored = stored_state(q, job1=CURSOR - timedelta(hours=1))
    kept = copy.deepcopy(stored)

    start = start_run(q, stored)

    assert stored == kept
    assert start.before.cursor == CURSOR and set(start.before.open_jobs) == {"job1"}
    assert start.filters_match and start.abandoned == []


def test_start_run_under_other_filters_parks_the_last_runs_state_in_its_copy() -> None:
    # The last run's filters: parked, as everything they select stays in the table.
    failed = query(status=4)
    stored = stored_state(failed, job1=CURSOR - timedelta(hours=1))
    kept = copy.deepcopy(stored)

    start = start_run(query(), stored)

    assert stored == kept
    parked = start.stored[OTHER_FILTERS][filters_id(failed.filter_key())]
    assert parked["cursor"] == format_api_time(CURSOR)
    assert start.before.cursor is None and start.before.open_jobs == {}
    assert start.stored["filters"] == query().filter_key()


def test_start_run_abandons_what_was_followed_too_long() -> None:
    q = query(open_job_max_age_days=30)
    old, recent = CURSOR - timedelta(days=31), CURSOR - timedelta(days=1)
    start = start_run(q, stored_state(q, old_job=old, recent_job=recent))

    assert start.abandoned == ["old_job"]
    assert start.before.open_jobs == {"recent_job": recent}
    assert start.before.abandoned_jobs == {"old_job": old}


def test_a_first_run_remembers_where_its_history_starts() -> None:
    begin = datetime(2026, 1, 1, tzinfo=UTC)

    start = start_run(query(initial_start_time=begin), {})

    assert start.stored["history_from"] == format_api_time(begin)
    assert start.before.cursor is None


# ---------------------------------------------------------------------- plan_run
def test_a_scheduled_run_reads_from_cursor_minus_lookback_to_the_services_now() -> None:
    q = query()
    now = CURSOR + timedelta(hours=1)

    plan = plan_of(q, start_run(q, stored_state(q)), now)

    assert (plan.start, plan.end, plan.now) == (CURSOR - LOOKBACK, now, now)
    assert plan.reads.cursor == now
    assert [(w.start, w.end) for w in plan.reads.windows] == [(CURSOR - LOOKBACK, now)]
    assert plan.follow_ranges == [] and plan.first_pages == {}


def test_a_service_clock_behind_the_window_asks_for_nothing_new() -> None:
    q = query()

    plan = plan_of(q, start_run(q, stored_state(q)), CURSOR - timedelta(hours=1))

    assert plan.end == plan.start == CURSOR - LOOKBACK


def test_a_backfill_empty_by_the_services_clock_is_refused() -> None:
    q = query(initial_start_time="2026-12-01", end_time="2026-12-02")

    with pytest.raises(ConfigError) as failure:
        plan_of(q, start_run(q, {}), datetime(2026, 11, 1, tzinfo=UTC))

    assert failure.value.key == "initial_start_time"
    assert "the backfill's range is empty" in str(failure.value)


def test_the_first_pages_probed_while_planning_are_handed_to_the_read() -> None:
    q = query(status=3)  # a final status filter: status 2 is read too, to follow
    wave = {f"job{i}": CURSOR - timedelta(hours=2, seconds=30 * i) for i in range(5)}
    start = start_run(q, stored_state(q, **wave))
    probed: dict[Window, JobsPage] = {}

    def first_pages_of(windows: list[Window]) -> list[JobsPage]:
        pages = [JobsPage([], total=7, number=1, window=window) for window in windows]
        probed.update(zip(windows, pages, strict=True))
        return pages

    plan = plan_run(q, start.before, "start", first_pages_of, lambda: CURSOR + timedelta(hours=1))

    assert probed and plan.first_pages == probed
    assert {window.status for window in probed} == {3, 2}
    assert all(any(r.contains(moment) for r in plan.follow_ranges) for moment in wave.values())


# ---------------------------------------------------------------------- commit_run
def _reading(start: RunStart, plan: RunPlan) -> Reading:
    tracker = RunTracker(start.before, plan.reads.coverage, start.filters_match, False)
    return Reading(tracker, PagingStats())


def test_commit_moves_the_cursor_to_the_windows_end_and_drops_what_finished() -> None:
    q = query()
    now = CURSOR + timedelta(hours=1)
    start = start_run(q, stored_state(q, job1=CURSOR - timedelta(minutes=5)))
    kept = copy.deepcopy(start.stored)
    plan = plan_of(q, start, now)
    reading = _reading(start, plan)
    reading.tracker.saw_final(["job1"])

    committed = commit_run(start, plan, reading)

    assert start.stored == kept
    assert committed.state.cursor == now and committed.state.open_jobs == {}
    assert committed.stored["cursor"] == format_api_time(now)
    assert committed.stored["open_jobs"] == {}
    assert committed.stored["history_from"] is None  # what the state's parser does not know stays


def test_commit_never_moves_the_cursor_back() -> None:
    q = query()
    start = start_run(q, stored_state(q))
    plan = plan_of(q, start, CURSOR - timedelta(hours=1))

    committed = commit_run(start, plan, _reading(start, plan))

    assert committed.state.cursor == CURSOR
    assert committed.stored["cursor"] == format_api_time(CURSOR)


def test_write_back_makes_the_resource_state_the_committed_one() -> None:
    target: dict[str, Any] = {"cursor": "old", "gone": 1, "tenants": {"a": {}}}
    stored = {"cursor": "new", "tenants": {"a": {}}, "filters": {}}

    write_back(target, stored)

    assert target == stored
