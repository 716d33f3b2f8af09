"""Unit tier: a run that must learn the service does it side by side with its reading (learning.py).

In-process (``inprocess.WorldPages``: the simulator's job store, no socket). The probe's requests are the
ones asked at the API's largest page size; the run's own at the run's (10 here).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from avepoint_dynamics.model import JobsPage, Window
from avepoint_dynamics.run import JobsRun
from avepoint_dynamics.settings import IN_PROGRESS_STATUS, MAX_PAGE_SIZE

from .expected import assert_rows_equal
from .inprocess import Destination, WorldPages, make_world, setup_for

pytestmark = pytest.mark.unit

PAGE = 10


class Recorded(WorldPages):
    """Pages of a world, each request noted as ``(window, number, page size asked)``.

    ``hold_probe``: the service probe's page-size request (101 jobs, which only the probe asks) waits
    until the run has asked for a page of the history (set when it did), as a slow service would.
    """

    def __init__(self, *args: Any, hold_probe: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[tuple[Window, int, int | None]] = []
        self.run_asked = threading.Event()
        self.probe_waited_for_the_run: bool | None = None
        self._hold = hold_probe

    def fetch_page(self, window: Window, number: int, page_size: int | None = None) -> JobsPage:
        with self._lock:
            self.asked.append((window, number, page_size))
        if _is_run((window, number, page_size)) and window.end is not None:
            self.run_asked.set()  # a page of the history (the clock's reads have no window)
        if page_size == PAGE_SIZE_PROBE and self._hold:
            # Generous: only a probe that runs before the reading (one after the other) waits it out.
            self.probe_waited_for_the_run = self.run_asked.wait(timeout=60)
        return super().fetch_page(window, number, page_size)


#: The page size only the service probe asks (the largest page size honoured: 101, then 1,000).
PAGE_SIZE_PROBE = MAX_PAGE_SIZE + 1


def _is_run(asked: tuple[Window, int, int | None]) -> bool:
    """A request of the run's reading: asked at the run's page size (the probes ask other sizes)."""
    return asked[2] in (None, PAGE)


def _probed(pages: Recorded) -> list[int]:
    return [i for i, asked in enumerate(pages.asked) if asked[2] in (PAGE_SIZE_PROBE, 1_000)]


def _first_run(
    selects: str, hold_probe: bool = False, **settings: Any
) -> tuple[Recorded, Destination, dict[str, Any], Any]:
    world = make_world(jobs=300, seed=7, running=12)
    setup = setup_for(page_size=PAGE, **settings)
    pages = Recorded(world, setup.query, selects=selects, hold_probe=hold_probe)
    destination = Destination()
    service: dict[str, Any] = {}
    state: dict[str, Any] = {}
    run = JobsRun(setup, state, pages=pages, service_state=service)
    destination.load(run.batches())
    return pages, destination, service, world


def _running_reads(pages: Recorded) -> list[tuple[Window, int, int | None]]:
    return [
        asked
        for asked in pages.asked
        if _is_run(asked) and asked[0] == Window(None, None, IN_PROGRESS_STATUS)
    ]


def test_the_first_run_reads_while_the_probe_learns_not_after_it() -> None:
    pages, destination, service, world = _first_run("start", hold_probe=True)

    assert pages.probe_waited_for_the_run is True  # the reading started before the probe ended
    assert_rows_equal(destination.jobs.rows, world.ground_truth())
    (findings,) = service.values()
    assert findings["window_selects"] == "start"  # learnt, and kept for the next run


@pytest.mark.parametrize("selects", ["start", "overlap"])
def test_by_start_or_overlap_the_whole_history_window_held_the_running_jobs_already(
    selects: str,
) -> None:
    pages, destination, _, world = _first_run(selects)

    assert _running_reads(pages) == []  # the safe way's read of the running jobs was not needed
    assert_rows_equal(destination.jobs.rows, world.ground_truth())
    assert [run["window_reading"] for run in destination.runs] == [selects]
    run_pages = sum(1 for asked in pages.asked if _is_run(asked) and asked[0].end is not None)
    assert run_pages == -(-len(world.ground_truth()) // PAGE)  # the history's pages, no more


def test_by_finish_the_running_jobs_are_read_without_a_window_on_that_same_run() -> None:
    pages, destination, service, world = _first_run("finish")

    assert len(_running_reads(pages)) == 2  # 12 running jobs, 10 a page
    assert_rows_equal(destination.jobs.rows, world.ground_truth())
    assert [run["window_reading"] for run in destination.runs] == ["unknown"]  # the safe way
    (findings,) = service.values()
    assert findings["window_selects"] == "finish"


def test_under_a_status_filter_the_running_jobs_are_read_to_be_followed() -> None:
    pages, destination, _, world = _first_run("start", status=4)

    assert len(_running_reads(pages)) == 2  # they may fail later: followed from this run on
    failed = [job for job in world.ground_truth() if job["status"] == 4]
    assert_rows_equal(destination.jobs.rows, failed)


def test_a_backfill_learns_first_and_reads_its_range_only() -> None:
    world = make_world(jobs=300, seed=8, running=12)
    history = world.ground_truth()
    start = history[100]["startTime"]
    end = history[200]["startTime"]
    setup = setup_for(page_size=PAGE, initial_start_time=start, end_time=end)
    pages = Recorded(world, setup.query)
    destination = Destination()
    service: dict[str, Any] = {}
    destination.load(JobsRun(setup, {}, pages=pages, service_state=service).batches())

    first_page = min(i for i, a in enumerate(pages.asked) if _is_run(a) and a[0].end is not None)
    assert _probed(pages) and max(_probed(pages)) < first_page  # learnt first: the plan needs it
    assert _running_reads(pages) == []
    assert sorted(destination.jobs.rows) == sorted(job["jobId"] for job in history[100:200])


def test_a_run_with_what_was_learnt_probes_nothing() -> None:
    world = make_world(jobs=300, seed=9, running=12)
    setup = setup_for(page_size=PAGE, lookback_minutes=0)
    destination = Destination()
    service: dict[str, Any] = {}
    state: dict[str, Any] = {}
    first = Recorded(world, setup.query)
    destination.load(JobsRun(setup, state, pages=first, service_state=service).batches())
    world.add_jobs(5)
    again = Recorded(world, setup.query)
    destination.load(JobsRun(setup, state, pages=again, service_state=service).batches())

    assert _probed(first) and _probed(again) == []
    assert _running_reads(again) == []
    assert_rows_equal(destination.jobs.rows, world.ground_truth())
