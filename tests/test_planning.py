"""Unit tier: the decisions of a run (which ranges, which state, which clock), in milliseconds, no socket."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from avepoint_dynamics.following import plan_follow, point_windows
from avepoint_dynamics.incremental import FollowState, RunTracker, tenant_state
from avepoint_dynamics.model import Window
from avepoint_dynamics.plan import _disjoint
from avepoint_dynamics.retries import retry_after_seconds
from avepoint_dynamics.times import ServiceClock

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ---------------------------------------------------------------------- following: which ranges
def test_point_windows_are_whole_seconds_merged_where_they_touch_and_cut_at_the_limit() -> None:
    windows = point_windows([at(0.2), at(0.9), at(1.5), at(10.25), at(20.0)], limit=at(20))

    assert windows == [Window(at(0), at(2)), Window(at(10), at(11))]


def test_a_cluster_whose_span_is_cheap_is_read_as_one_span() -> None:
    starts = [at(i * 30) for i in range(50)]  # a wave of 50 followed jobs
    probed: list[list[Window]] = []

    def cost_of(spans: list[Window]) -> list[int | None]:
        probed.append(spans)
        return [3 for _ in spans]  # 3 pages for the whole span

    ranges = plan_follow(starts, limit=at(10_000), cost_of=cost_of)

    assert ranges == [Window(at(0), at(49 * 30 + 1))]
    assert len(probed) == 1


def test_a_dear_span_is_split_at_its_widest_gap_until_parts_pay() -> None:
    wave = [at(i) for i in range(0, 40, 2)]  # 20 jobs within 40 s
    stray = [at(86_400 * 3), at(86_400 * 3 + 5), at(86_400 * 9)]  # days later
    # cost: 1 page per 100 jobs, 1,000 jobs a day in the history
    density = 1_000 / 86_400

    def cost_of(spans: list[Window]) -> list[int | None]:
        out: list[int | None] = []
        for span in spans:
            assert span.start is not None and span.end is not None
            jobs = (span.end - span.start).total_seconds() * density + 20
            out.append(max(1, int(jobs // 100) + 1))
        return out

    ranges = plan_follow([*wave, *stray], limit=None, cost_of=cost_of)

    assert Window(at(0), at(39)) in ranges  # the wave: one request for all 20
    covered = [s for s in [*wave, *stray] if any(r.contains(s) for r in ranges)]
    assert len(covered) == len(wave) + len(stray)
    assert sum(1 for r in ranges if r.start is not None and r.start >= at(86_400)) == 3


def _history(*busy: tuple[float, float, int]) -> Any:
    """``cost_of`` over a history: jobs spread evenly in each (start s, end s, jobs) stretch, 100 a page."""

    def jobs_in(span: Window) -> float:
        assert span.start is not None and span.end is not None
        low, high = (span.start - T0).total_seconds(), (span.end - T0).total_seconds()
        held = 0.0
        for start, end, jobs in busy:
            overlap = max(0.0, min(high, end) - max(low, start))
            held += jobs * overlap / (end - start)
        return held

    probed: list[Window] = []

    def cost_of(spans: list[Window]) -> list[int | None]:
        probed.extend(spans)
        return [max(1, math.ceil(jobs_in(span) / 100)) for span in spans]

    return cost_of, probed


def test_a_span_that_pays_but_holds_a_busy_day_between_its_jobs_is_read_in_two_parts() -> None:
    # A wave of 2,000 jobs still running, spread over 3.5 days, and last night's 12, with nearly two
    # days of 900 finished jobs between (a third of the span's time): one span is 30 pages, the wave
    # and the night's last hour 20 + 1.
    wave = [at(150 * i) for i in range(2_000)]
    night = [at(464_000 + i * 60) for i in range(12)]
    cost_of, probed = _history(
        (0, 300_000, 2_000), (300_000, 464_000, 900), (464_000, 467_600, 100)
    )

    ranges = plan_follow([*wave, *night], limit=at(470_000), cost_of=cost_of)

    assert ranges == [
        Window(at(0), at(299_851)),
        Window(at(464_000), at(464_000 + 11 * 60 + 1)),
    ]
    assert len(probed) == 3  # the span, then its two parts
    assert sum(cost_of(ranges)) == 20 + 1  # against 30 for the span


def test_a_second_look_that_finds_nothing_to_save_keeps_the_span() -> None:
    # Nothing between the wave and the night: the parts (2,001 and 101 jobs: 21 + 2 pages) cost no less
    # than what is left of the span (2,102 jobs: 22 pages, its first already read).
    wave = [at(2 * i) for i in range(2_000)]
    night = [at(200_000 + i * 60) for i in range(12)]
    cost_of, probed = _history((0, 3_999, 2_001), (200_000, 200_661, 101))

    ranges = plan_follow([*wave, *night], limit=at(210_000), cost_of=cost_of)

    assert ranges == [Window(at(0), at(200_000 + 11 * 60 + 1))]
    assert len(probed) == 3  # what the look cost: the parts' two probes


def test_few_followed_jobs_are_read_one_window_each_without_a_probe() -> None:
    def cost_of(spans: list[Window]) -> list[int | None]:
        raise AssertionError("two jobs are never worth a probe")

    assert plan_follow([at(0), at(5_000)], None, cost_of) == [
        Window(at(0), at(1)),
        Window(at(5_000), at(5_001)),
    ]


def test_a_service_without_totals_is_probed_once_then_read_one_window_each() -> None:
    calls: list[int] = []

    def cost_of(spans: list[Window]) -> list[int | None]:
        calls.append(len(spans))
        return [None for _ in spans]

    starts = [at(i * 100) for i in range(10)]
    ranges = plan_follow(starts, None, cost_of)

    assert calls == [1]
    assert len(ranges) == 10


def test_probes_are_bounded() -> None:
    calls: list[int] = []

    def cost_of(spans: list[Window]) -> list[int | None]:
        calls.append(len(spans))
        return [10_000 for _ in spans]  # always dear: split all the way down

    starts = [at(i * 1_000 + (i % 7) * 13) for i in range(200)]
    ranges = plan_follow(starts, None, cost_of, max_probes=16)

    assert sum(calls) <= 16
    assert all(any(r.contains(s) for r in ranges) for s in starts)


def test_ranges_of_a_run_are_made_disjoint() -> None:
    merged = _disjoint(
        [Window(at(10), at(20)), Window(at(0), at(5)), Window(at(15), at(30)), Window(at(5), at(6))]
    )

    assert merged == [Window(at(0), at(6)), Window(at(10), at(30))]
    assert _disjoint([Window(None, at(5)), Window(at(3), at(9))]) == [Window(None, at(9))]


# ---------------------------------------------------------------------- state and tracker
def test_the_state_round_trips_and_bad_entries_are_dropped() -> None:
    raw: dict[str, Any] = {
        "cursor": "2026-11-30T01:00:00.5Z",
        "service_time": "2026-11-30T01:00:01Z",
        "filters": {"status": 3},
        "open_jobs": {"A": "2026-11-29T23:00:00Z", "B": "not a time"},
        "rejected_jobs": {"C": "2026-11-29T22:00:00Z"},
        "rejected_windows": {"?x": ["2026-11-29T00:00:00Z", "2026-11-29T01:00:00Z"]},
        "abandoned_count": 2,
    }
    state = FollowState.load(raw)
    assert state.cursor == at(0.5) and set(state.open_jobs) == {"A"}

    again: dict[str, Any] = {}
    state.save(again)
    assert FollowState.load(again) == state


def test_each_tenant_keeps_its_own_state() -> None:
    resource: dict[str, Any] = {"cursor": "untenanted"}

    tenant_state(resource, "a")["cursor"] = "A"
    tenant_state(resource, "b")["cursor"] = "B"

    assert resource["tenants"] == {"a": {"cursor": "A"}, "b": {"cursor": "B"}}
    assert tenant_state(resource, None)["cursor"] == "untenanted"


def test_jobs_followed_too_long_are_abandoned_by_the_services_time() -> None:
    day = 86_400
    state = FollowState(
        service_time=at(0),
        open_jobs={"old": at(-31 * day), "young": at(-29 * day)},
        # set aside: by when it was first set aside, not by when it started
        rejected_jobs={"bad": at(-400 * day), "fresh-bad": at(-400 * day)},
        rejected_since={"bad": at(-31 * day), "fresh-bad": at(-1 * day)},
    )

    gone = state.abandon_old(timedelta(days=30))

    assert sorted(gone) == ["bad", "old"]
    assert set(state.open_jobs) == {"young"} and set(state.rejected_jobs) == {"fresh-bad"}
    assert set(state.abandoned_jobs) == {"bad", "old"} and state.abandoned_count == 2


def test_a_run_moves_the_cursor_keeps_what_is_open_and_forgets_what_finished() -> None:
    before = FollowState(
        cursor=at(0), open_jobs={"done": at(-50), "running": at(-40), "gone": at(-30)}
    )
    tracker = RunTracker(before, [Window(at(-60), at(100))])
    tracker.saw_final(["done"])
    tracker.saw_open("running", at(-40))
    tracker.saw_open("new", at(50))

    after = tracker.after(at(100), at(100), {"status": None})

    assert after.cursor == at(100)
    assert set(after.open_jobs) == {"running", "new"}
    assert tracker.left_jobs() == {"gone": at(-30)}  # read its range, did not see it


def test_a_run_keeps_only_the_final_ids_of_followed_jobs() -> None:
    # A full load reads every job final: a set of their ids would grow with the history.
    before = FollowState(cursor=at(0), open_jobs={"done": at(-50)})
    tracker = RunTracker(before, [Window(at(-60), at(100))])
    tracker.saw_final(["done"] + [f"other-{n}" for n in range(1000)])

    assert tracker.final_now == {"done"}
    assert tracker.after(at(100), at(100), {"status": None}).open_jobs == {}


def test_a_set_aside_job_does_not_hold_the_cursor_and_is_read_again_until_it_loads() -> None:
    before = FollowState(cursor=at(0))
    tracker = RunTracker(before, [Window(at(0), at(100))])
    tracker.saw_rejected("BAD", at(10), Window(at(0), at(100)))

    after = tracker.after(at(100), at(100), {})
    assert after.cursor == at(100) and after.rejected_jobs == {"BAD": at(10)}

    fixed = RunTracker(after, [Window(at(10), at(11)), Window(at(100), at(200))])
    assert fixed.resolved_rejections() == ["BAD"]  # its range was read, it was not set aside again
    assert not fixed.after(at(200), at(200), {}).rejected_jobs


def test_a_backfill_leaves_the_cursor_and_adds_the_jobs_it_sees_running() -> None:
    before = FollowState(cursor=at(0), filters={"status": None})
    tracker = RunTracker(before, [Window(at(-1_000), at(-500))])
    tracker.saw_open("old-running", at(-700))

    after = tracker.after(None, at(5), {"status": None})

    assert after.cursor == at(0) and after.open_jobs == {"old-running": at(-700)}


def test_a_backfill_under_other_filters_leaves_the_followed_jobs_alone() -> None:
    before = FollowState(cursor=at(0), filters={"status": None}, open_jobs={"x": at(-700)})
    tracker = RunTracker(before, [Window(at(-1_000), at(-500))], filters_match=False)
    tracker.saw_open("y", at(-600))

    after = tracker.after(None, at(5), {"status": 4})

    assert after.open_jobs == {"x": at(-700)} and after.filters == {"status": None}
    assert tracker.left_jobs() == {}


# ---------------------------------------------------------------------- the service's clock
def test_the_service_clock_comes_from_date_headers_not_this_machine() -> None:
    clock = ServiceClock()
    assert not clock.known

    clock.observe("Mon, 30 Nov 2026 01:00:00 GMT")
    clock.observe("Mon, 30 Nov 2026 00:59:58 GMT")  # an older answer does not move it back

    now = clock.now()
    assert at(0) <= now < at(5)  # years away from this machine's clock, whatever it says


def test_the_newest_start_pins_the_time_below_dates_one_second_resolution() -> None:
    clock = ServiceClock()
    clock.observe("Mon, 30 Nov 2026 01:00:00 GMT")

    clock.observe_start(at(0.75))  # a job that started 0.75 s past the Date: the time is past it
    assert clock.now() > at(0.75)

    clock.observe_start(at(3_600))  # a start an hour ahead is no evidence of the time
    assert clock.now() < at(5)


def test_a_retry_after_date_is_read_against_the_answers_own_date() -> None:
    response = requests.Response()
    response.status_code = 429
    response.headers["Date"] = (
        "Mon, 30 Nov 2026 01:00:00 GMT"  # the service's clock, hours off ours
    )
    response.headers["Retry-After"] = "Mon, 30 Nov 2026 01:00:07 GMT"

    assert retry_after_seconds(response) == 7.0
