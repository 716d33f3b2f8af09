"""Unit tier, property-based: any sequence of nights ends with the table equal to what the API returns.

Each example is a history (the simulator's own job store, in-process, its clock minutes or hours off this
machine's, its time window selecting by start, by overlap or by finish), a filter, and a sequence of steps:
jobs arrive (some still running), running jobs finish (with any final status), scheduled runs load. After
every run the table must hold exactly the jobs the API returns for the same filters, field by field: no
job lost at a window's edge, none duplicated, each in its latest state. The real transport, the real
DuckDB merge and the faults are the integration tier's (test_scheduled_runs.py, test_reliability.py).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from avepoint_dynamics.claims import DuplicateClaim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .expected import assert_rows_equal
from .inprocess import Destination, make_world, run_once

pytestmark = pytest.mark.unit

FILTERS = st.sampled_from(
    [
        {},
        {"status": 2},
        {"status": 3},
        {"status": 4},
        {"status": 7},
        {"job_type": 1},
        {"job_type": 1, "status": 3},
        {"job_type": 8, "status": 2},
    ]
)
STEP = st.one_of(
    st.tuples(st.just("arrive"), st.integers(1, 25), st.integers(0, 6)),
    st.tuples(st.just("finish"), st.floats(0.0, 1.0), st.sampled_from([None, 3, 4, 7])),
    st.tuples(st.just("run"), st.just(0), st.just(0)),
)


def _matches(job: dict[str, Any], filters: dict[str, Any]) -> bool:
    if "status" in filters and job["status"] != filters["status"]:
        return False
    return not ("job_type" in filters and job["type"] != filters["job_type"])


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 10_000),
    filters=FILTERS,
    steps=st.lists(STEP, min_size=1, max_size=8),
    page_size=st.sampled_from([3, 10, 50]),
    clock_offset_s=st.sampled_from([-7_200.0, -300.0, 0.0, 300.0, 7_200.0]),
    reading=st.sampled_from(
        [
            ("start", "half_open"),
            ("start", "inclusive"),
            ("overlap", "half_open"),
            ("finish", "half_open"),
        ]
    ),
)
def test_any_sequence_of_nights_ends_with_the_table_equal_to_the_api(
    seed: int,
    filters: dict[str, Any],
    steps: list[tuple[str, Any, Any]],
    page_size: int,
    clock_offset_s: float,
    reading: tuple[str, str],
) -> None:
    # The service's clock runs minutes or hours off this machine's: it must not matter.
    world = make_world(jobs=120, seed=seed, running=8, offset_s=clock_offset_s)
    dice = random.Random(seed)
    state: dict[str, Any] = {}
    destination = Destination()

    selects, window = reading  # what the service's time window selects, and how it reads its end
    run_once(
        world, state, destination, selects=selects, window=window, page_size=page_size, **filters
    )
    assert state["service"], "the first run learns how the service reads its window"
    learnt = next(iter(state["service"].values()))
    assert learnt["window_selects"] in (selects, None)
    for action, amount, detail in [*steps, ("run", 0, 0)]:
        if action == "arrive":
            world.add_jobs(amount, running=min(detail, amount))
        elif action == "finish":
            running = [j["jobId"] for j in world.ground_truth() if j["status"] == 2]
            chosen = [job_id for job_id in running if dice.random() < amount]
            if chosen:
                world.finish_running(chosen, status=detail)
        else:
            run_once(
                world,
                state,
                destination,
                selects=selects,
                window=window,
                page_size=page_size,
                **filters,
            )
            truth = [job for job in world.ground_truth() if _matches(job, filters)]
            assert_rows_equal(destination.jobs.rows, truth)


def _a_job_served_twice_in_one_run(destination: Destination) -> str:
    """Two runs; in the second, a job whose start moved between two of its windows comes in both."""
    world = make_world(jobs=200, seed=3, running=0)
    state: dict[str, Any] = {}
    run_once(world, state, destination)
    old = world.ground_truth()[10]
    world.patch_job(old["jobId"], status=2, finishTime=None, durationHours=None)
    state["resource"]["open_jobs"] = {old["jobId"]: old["startTime"]}  # followed, on its own
    twin = dict(old)

    def serve(window: Any, number: int, total: int, jobs: list[dict[str, Any]]) -> Any:
        if window.start is not None and window.start.isoformat() > old["startTime"] and number == 1:
            moved = dict(twin, startTime=window.start.isoformat().replace("+00:00", "Z"))
            return total + 1, [*jobs, moved]  # served again, its start moved into this window
        return total, jobs

    world.add_jobs(5)
    run_once(world, state, destination, serve=serve)
    return str(old["jobId"])


def test_a_job_served_twice_in_one_run_withdraws_the_claim_of_unique_rows() -> None:
    # Each window proves its own ids distinct; the claim must hold for the run.
    destination = Destination()
    job_id = _a_job_served_twice_in_one_run(destination)

    assert destination.claims[-1] is False  # the load deduplicates
    assert destination.jobs.duplicated() == []  # so the job is one row
    assert job_id in destination.jobs.rows


def test_a_wrong_claim_of_unique_rows_leaves_two_rows_of_a_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stand-in destination keeps what a wrong claim leaves, so the tests above can fail.

    The same run with the end-of-run check removed: its claim of unique rows stands, the merge skips
    its deduplication, and the job is in the table twice (as in DuckDB), which ``rows`` refuses.
    """
    monkeypatch.setattr(DuplicateClaim, "final", lambda self: iter(()))
    destination = Destination()
    job_id = _a_job_served_twice_in_one_run(destination)

    assert destination.claims[-1] is True
    assert destination.jobs.duplicated() == [job_id]
    with pytest.raises(AssertionError, match="keys held twice"):
        destination.jobs.rows  # noqa: B018  (the property checks)


def test_open_jobs_read_again_unchanged_are_not_loaded_again() -> None:
    # A wave of jobs running for hours is read on every run; merging the same rows again costs the load.
    world = make_world(jobs=300, seed=5, running=40)
    state: dict[str, Any] = {}
    destination = Destination()
    run_once(world, state, destination)
    loaded = destination.jobs.applied

    run_once(world, state, destination)  # nothing changed
    assert destination.jobs.applied == loaded
    assert len(state["resource"]["open_jobs"]) == 40

    running = sorted(j["jobId"] for j in world.ground_truth() if j["status"] == 2)
    world.finish_running(running[:5], status=4)
    run_once(world, state, destination)
    assert destination.jobs.applied == loaded + 5  # only the five that changed
    assert_rows_equal(destination.jobs.rows, world.ground_truth())
