"""One run of the ``jobs`` resource: plan the ranges, read them, yield typed batches, commit the state.

The order of one run:

1. the state (``incremental``): the state of the run's filters (the last run's is parked when they
   changed), its cursor and followed jobs; the ones followed too long are abandoned;
2. how the service reads its time window (``service``): kept in the source's state, or learnt side by side
   with this run's reading, which then goes the safe way (``learning``: the first run, after answers
   contradicted it, and while it is unknown);
3. the followed jobs' ranges (``following``; where the window selects by start, or may), weighed by
   probing their first pages (kept for the read), and the windows of set-aside jobs without a start;
4. the service's time, from the ``Date`` of its answers (a probe if nothing was asked yet): the new-jobs
   window is ``[cursor - lookback, service now)`` (a backfill: ``[initial_start_time, end_time)``);
5. the requests (``plan``): every range, once per status selection (the configured filter; plus status 2,
   to find the jobs that may move into a final status filter later), page by page (``paging``), into
   Arrow batches (``rows``); followed jobs no range returned are looked for where they may be;
6. what left the filter, what loaded after being set aside, the duplicate claim of the whole run;
7. the new state, written into the resource state (dlt commits it with the load package), and last the
   run's row for ``_avepoint_runs``.

Steps 1, 3, 4 and 7 are values (``steps``: ``start_run``, ``plan_run``, ``commit_run``); this module makes
the requests, reads, and yields.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any, cast

import dlt
import pyarrow as pa

from .auth import TokenProvider
from .claims import DuplicateClaim
from .dlt_compat import current_load_id
from .incremental import (
    FollowState,
    RunTracker,
    follow_marks,
)
from .learning import ServiceLearning
from .model import JobsPage, PageSource, Window
from .paging import WindowReader
from .plan import ReadPlan, plan_rescue
from .rejected import Bounds, RejectedJob, rejected_table, resolved_rejections_table
from .rows import JobRows, fingerprint, left_jobs_table
from .run_log import RUNS_TABLE, RunRecord, runs_table
from .service import ServiceFindings
from .service_time import service_now
from .settings import FINAL_STATUSES
from .setup import JobsSetup
from .steps import Reading, RunPlan, RunStart, commit_run, plan_run, start_run, write_back
from .stopping import InPool, PagePool, run_scope
from .times import api_time_or_none, format_api_time, from_micros, to_micros

logger = logging.getLogger("avepoint_dynamics")

#: Jobs that cannot become rows, one row each (the ``jobs`` resource's table variant: see the source).
REJECTED_TABLE = "jobs_rejected"
#: Jobs converted to one Arrow table at a time: big enough for fast columnar loading, small for memory.
BATCH_JOBS = 5_000


class JobsRun:
    """One run of the ``jobs`` resource (see the module's docstring).

    Args:
        setup: The source's validated settings.
        state: This tenant's part of the resource state (written once, at the end of the run).
        on_page: Called with every page fetched (progress).
        on_run: Called with the run's record once it is read (also yielded to ``_avepoint_runs``).
        pages: Where pages come from; default: the jobs API over HTTP (``setup.connect()``).
        service_state: Where the findings about the service are kept, by API version and host.
    """

    def __init__(
        self,
        setup: JobsSetup,
        state: MutableMapping[str, Any],
        on_page: Callable[[JobsPage], None] | None = None,
        pages: PageSource | None = None,
        service_state: MutableMapping[str, Any] | None = None,
        on_run: Callable[[RunRecord], None] | None = None,
    ) -> None:
        self.setup = setup
        self._pages = pages
        #: Where the findings about the service are kept (the source's state: they outlive a reset).
        self.service_state: MutableMapping[str, Any] = (
            service_state if service_state is not None else {}
        )
        #: The findings this run planned with, or learnt (:attr:`ServiceLearning.findings`).
        self.learning = ServiceLearning(setup.query, self.service_state)
        self.query = setup.query
        self.state = state
        self.on_page = on_page
        self.on_run = on_run
        #: What this run did (the run log's row), complete once the reading is over.
        self.record = RunRecord(tenant=setup.tenant, backfill=setup.query.is_backfill)
        self.claim = DuplicateClaim()
        self._now = datetime.now(UTC)  # replaced by the service's time before anything is read
        #: How the run read the window when that is not its plan's (it learnt while reading).
        self._read_as: str | None = None
        self._said_learnt = False

    def batches(self) -> Iterator[Any]:
        """Arrow tables for ``jobs`` (and ``jobs_rejected``), with their hints; commits the state last.

        Four steps, each a value handed to the next: :func:`start_run` (the stored state, parsed),
        :func:`plan_run` (the ranges and requests), the reading (batches, then a :class:`Reading`),
        :func:`commit_run` (the new state, written back into the resource state only here).
        """
        query = self.query
        start = start_run(query, self.state)
        tokens: TokenProvider | None = None
        client: PageSource
        if self._pages is not None:
            client = self._pages
        else:
            tokens, client = self.setup.connect()
        started = time.monotonic()
        # A stop (Ctrl-C, SIGTERM) abandons the requests in flight and ends every wait: stopping.py.
        scope = ExitStack()
        stop = scope.enter_context(run_scope())
        pool = scope.enter_context(PagePool(query.max_concurrency, stop))
        client = cast(PageSource, InPool(client, pool))
        learning = self.learning
        try:
            # The clock probe and the service probe need nothing the reading finds: side by side, their
            # round trips overlap the first pages (a nightly run's time is mostly round trips).
            side = scope.enter_context(ThreadPoolExecutor(2, thread_name_prefix="avepoint-side"))
            alongside = not query.is_backfill and query.initial_start_time is None
            if not alongside:
                learning.begin(client, side, alongside=False)  # the plan needs the findings
            # Every request from here on, the probes that weigh the followed ranges included.
            client.start_exclusive = learning.start_exclusive
            selects = learning.selects
            reader = WindowReader(client, pool, self.on_page)
            now_read = side.submit(service_now, client, selects, query.status)
            plan = plan_run(
                query,
                start.before,
                selects,
                lambda windows: list(pool.map(reader.fetch_first, windows)),
                now_read.result,
            )
            self._now = plan.now
            # After the plan's requests (on a first run, the clock's alone: a service that refuses
            # the run does it once, not once per thread), side by side with the reading's.
            learning.begin(client, side)
            self._say_plan(plan)
            reading = yield from self._read_run(reader, start, plan)
            if learning.alongside:
                self._say_learnt(learning.finish())
        except BaseException:
            pool.abandon()
            raise
        finally:
            scope.close()
            client.close()
            if tokens is not None:
                tokens.close()
        # Arrow's allocator keeps the pages of every freed batch for reuse; nothing here reuses them and
        # DuckDB's load comes next, with its own allocator: hand them back (~50 MB at 100,000 jobs, bench/).
        pa.default_memory_pool().release_unused()
        committed = commit_run(start, plan, reading)
        write_back(self.state, committed.stored)
        state, tracker = committed.state, reading.tracker
        self._complete_record(
            reader, client, tokens, tracker, start.before, state, self._read_as or selects, started
        )
        stats = reading.stats
        logger.info(
            "read %s in %s (%s, %s; %s read again because answers changed while paging); "
            "checked again next run: %d jobs not finished yet, %d set aside; %d set aside this run",
            _count(stats.jobs, "job"),
            _count(stats.pages, "page"),
            _count(client.requests_sent, "request"),
            _count(tokens.tokens_fetched if tokens is not None else 0, "token"),
            _count(stats.rereads, "time span"),
            len(state.open_jobs),
            len(state.rejected_jobs) + len(state.rejected_windows) + len(state.rejected_unfollowed),
            tracker.rejected,
        )
        if self.on_run is not None:
            self.on_run(self.record)
        yield dlt.mark.with_table_name(runs_table(self.record), RUNS_TABLE)

    def _read_run(
        self, reader: WindowReader, start: RunStart, plan: RunPlan
    ) -> Generator[Any, None, Reading]:
        """Yield the run's batches; then return what the reading saw (for :func:`commit_run`)."""
        query = self.query
        tracker = RunTracker(
            start.before, plan.reads.coverage, start.filters_match, query.status_can_be_left
        )
        reads, last = plan.reads, plan.reads.seen_last
        open_read: dict[str, str] | None = {} if last is not None else None
        if (
            last is not None
            and self.learning.alongside
            and plan.start is None
            and not plan.follow_ranges
            and query.status is None
        ):
            # The whole history in one window while the service is learnt side by side: the running
            # jobs are read without a window only if the service's window leaves them out (by finish,
            # or unknown); by start, by overlap or ignored, that one window returned them already.
            # Every job that one window returns started before its end, whatever the reading: its
            # range bounds the rows (a job set aside for its start is looked for there next run).
            head = replace(
                reads,
                windows=[w for w in reads.windows if w != last],
                start_ranges=[Window(plan.start, plan.end)],
            )
            yield from self._read(reader, head, plan.first_pages, tracker, open_read)
            learnt = self._say_learnt(self.learning.finish())
            if learnt is not None and learnt.window_selects in ("start", "overlap", "ignored"):
                self._read_as = learnt.window_selects
            else:
                tail = replace(reads, windows=[last], start_ranges=None)
                yield from self._read(reader, tail, plan.first_pages, tracker, open_read)
        else:
            yield from self._read(reader, reads, plan.first_pages, tracker, open_read)
        missing = tracker.left_jobs()
        if missing and plan.selects != "start" and not query.is_backfill:
            logger.info(
                "%d jobs not finished at the last run came in no time span: looking for them",
                len(missing),
            )
            rescue = plan_rescue(plan.selects, query, sorted(missing.values()), plan.start)
            yield from self._read(reader, rescue, {}, tracker)
        yield from self._after_reading(tracker, plan.now)
        return Reading(tracker, reader.stats)

    def _say_plan(self, plan: RunPlan) -> None:
        """What the run reads, and what the service's reading of its window costs."""
        selects = plan.selects
        known = self.learning.findings or self.learning.stored
        if selects == "unknown" and known is not None and known.window_selects is None:
            self.learning.say_safe_way(known)
        self._say_reading(selects)
        earlier = (
            f", and {_count(len(plan.follow_ranges), 'earlier time span')} holding jobs not "
            "finished yet or set aside"
            if plan.follow_ranges
            else ""
        )
        how = (
            ""
            if selects in ("start", "unknown")
            else f"; this service's time filter selects by {selects}"
        )
        logger.info(
            "reading the jobs that started in %s (the service's clock says %s)%s%s",
            Window(plan.start, plan.end),
            format_api_time(plan.now),
            earlier,
            how,
        )

    def _say_learnt(self, learnt: ServiceFindings | None) -> ServiceFindings | None:
        """What learning side by side found, said once: the safe way's cost, or its warnings."""
        if learnt is not None and not self._said_learnt:
            self._said_learnt = True
            if learnt.window_selects is None:
                if not self.learning.said_safe_way:
                    self.learning.say_safe_way(learnt)
            else:
                self._say_reading(learnt.window_selects)
        return learnt

    def _say_reading(self, selects: str) -> None:
        """Warnings a reading of the window brings: what a run cannot read, or reads every time."""
        query = self.query
        if selects == "finish" and query.api_version == "v2":
            logger.warning(
                "this service's window selects jobs by finish time, and v2 requests carry "
                "both bounds (its page requires them): running jobs are in no window, so "
                "they load once they finish; api_version 'v1' reads them without a window"
            )
        if selects == "ignored":
            logger.warning(
                "this service ignores the time window (check --deep, %s): every run reads "
                "the whole history",
                self.learning.findings.checked_at if self.learning.findings else "?",
            )

    def _complete_record(
        self,
        reader: WindowReader,
        client: PageSource,
        tokens: TokenProvider | None,
        tracker: RunTracker,
        before: FollowState,
        state: FollowState,
        selects: str,
        started: float,
    ) -> None:
        """What the run did, for its row of the run log (``jobs_deleted`` was counted as it went)."""
        record, stats = self.record, reader.stats
        record.jobs_read, record.pages = stats.jobs, stats.pages
        record.jobs_yielded = self.claim.distinct_jobs() - record.jobs_deleted
        record.jobs_rejected = tracker.rejected
        record.jobs_set_aside = (
            len(state.rejected_jobs) + len(state.rejected_windows) + len(state.rejected_unfollowed)
        )
        record.requests = client.requests_sent
        record.token_requests = tokens.tokens_fetched if tokens is not None else 0
        for tally in (getattr(client, "tally", None), getattr(tokens, "tally", None)):
            if tally is not None:
                record.retries += tally.retries
                record.rate_limited += tally.rate_limited
        record.cursor_before, record.cursor_after = before.cursor, state.cursor
        record.window_reading = selects
        record.load_id = current_load_id()
        finished = client.clock.now()
        record.finished_at = finished
        record.started_at = finished - timedelta(seconds=time.monotonic() - started)

    # ------------------------------------------------------------------ reading
    def _read(
        self,
        reader: WindowReader,
        plan: ReadPlan,
        first_pages: dict[Window, JobsPage],
        tracker: RunTracker,
        open_read: dict[str, str] | None = None,
    ) -> Iterator[Any]:
        """Yield the batches of ``plan``'s reads.

        ``open_read``: the fingerprints of the open jobs read so far, shared by the parts of one reading
        (default: a new one when the plan ends with a read that may return them again).
        """
        ranges = plan.start_ranges
        rows = JobRows(self.setup.constants, [_bounds(r) for r in ranges] if ranges else None)
        pending: list[dict[str, Any]] = []
        bounds: list[Bounds] = []
        strays = outside = 0
        if open_read is None and plan.seen_last is not None:
            open_read = {}
        for item in chain(reader.read_all(plan.windows, first_pages), [None]):
            if item is not None:
                window, page_jobs = item
                if window in plan.follow_only:
                    open_jobs, final = follow_marks(page_jobs)  # only to follow: never loaded
                    for job_id, start in open_jobs.items():
                        tracker.saw_open(job_id, start)
                    tracker.saw_final(final)
                    continue
                page_jobs = self._changed(page_jobs, tracker)
                if window == plan.seen_last:
                    page_jobs = [job for job in page_jobs if not _read_before(job, open_read)]
                else:
                    _remember_open(page_jobs, open_read)
                pending.extend(page_jobs)
                if ranges is not None:
                    bounds.extend([_bounds(_range_of(window, ranges))] * len(page_jobs))
                if len(pending) < BATCH_JOBS:
                    continue
            if not pending:
                continue
            batch = rows.to_batch(pending, bounds if ranges is not None else None)
            if batch.open_jobs:
                for job in pending:
                    key = job.get("jobId")
                    if isinstance(key, str) and key in batch.open_jobs:
                        tracker.saw_open(key, batch.open_jobs[key], fingerprint(job))
            pending, bounds = [], []
            tracker.saw_final(batch.final_ids)
            outside += batch.outside
            strays += batch.strays
            if batch.table is not None:
                repeats = reader.stats.may_repeat or strays
                yield self.claim.rows(batch.table, proven=not repeats)
            if batch.rejected:
                yield self._rejected(batch.rejected, tracker)
        if outside or strays:
            self.learning.contradicted(
                f"{outside + strays} jobs came back that started outside the time window asked for "
                f"({strays} of them outside every window of this run, loaded anyway)"
            )

    def _changed(self, jobs: list[dict[str, Any]], tracker: RunTracker) -> list[dict[str, Any]]:
        """The jobs of a page minus the open ones read again exactly as they were last loaded.

        A wave of 2,000 jobs running for hours is read on every run; merging the same 2,000 rows again
        each time costs the load, not the reading.
        """
        known = tracker.before.fingerprints
        if not known:
            return jobs
        kept = []
        for job in jobs:
            job_id = job.get("jobId")
            last = known.get(job_id) if isinstance(job_id, str) else None
            if last is not None and last == fingerprint(job):
                assert isinstance(job_id, str)
                tracker.saw_open(job_id, tracker.before.open_jobs[job_id], last)
            else:
                kept.append(job)
        return kept

    def _rejected(self, rejected: list[RejectedJob], tracker: RunTracker) -> Any:
        for job in rejected:
            logger.warning("job %s set aside in jobs_rejected: %s", job.key, job.reason)
            window = Window(None, None)
            if job.bounds is not None:
                low, high = job.bounds
                window = Window(from_micros(low) if low is not None else None, from_micros(high))
            tracker.saw_rejected(job.key, api_time_or_none(job.start_time), window)
        return dlt.mark.with_table_name(
            rejected_table(rejected, self._now, self.setup.constants), REJECTED_TABLE
        )

    def _after_reading(self, tracker: RunTracker, now: datetime) -> Iterator[Any]:
        """Rows that leave the tables, and the final word on duplicates."""
        constants = self.setup.constants
        left = tracker.left_jobs()
        if left and self.query.status_can_be_left:
            logger.info(
                "%d jobs left status %s since the last run: removed", len(left), self.query.status
            )
            self.record.jobs_deleted = len(left)
            yield self.claim.rows(left_jobs_table(left, constants), proven=True)
        elif left and self.query.status is None:
            for job_id in sorted(left):
                logger.warning(
                    "open job %s is no longer returned by the API (purged by retention, or the filters "
                    "changed since it was read); forgetting it, its last loaded row stays",
                    job_id,
                )
        resolved = tracker.resolved_rejections()
        if resolved:
            logger.info(
                "%d set-aside jobs loaded this run: removed from jobs_rejected", len(resolved)
            )
            yield dlt.mark.with_table_name(
                resolved_rejections_table(resolved, constants), REJECTED_TABLE
            )
        yield from self.claim.final()


def _remember_open(jobs: list[dict[str, Any]], open_read: dict[str, str] | None) -> None:
    """Keep the fingerprints of the jobs not final yet (a later read of running jobs returns them)."""
    if open_read is None:
        return
    for job in jobs:
        job_id = job.get("jobId")
        if isinstance(job_id, str) and job.get("status") not in FINAL_STATUSES:
            open_read[job_id] = fingerprint(job)


def _read_before(job: dict[str, Any], open_read: dict[str, str] | None) -> bool:
    """The job was read earlier in this run exactly as it is now (a copy the load would merge away)."""
    job_id = job.get("jobId")
    return (
        open_read is not None
        and isinstance(job_id, str)
        and open_read.get(job_id) == fingerprint(job)
    )


def _count(number: int, thing: str) -> str:
    """``1 page``, ``2,000 pages``."""
    return f"{number:,} {thing}{'' if number == 1 else 's'}"


def _range_of(window: Window, ranges: list[Window]) -> Window:
    """The run's range a window (or a slice of it) belongs to."""
    for range_ in ranges:
        if (
            range_.start is None or (window.start is not None and window.start >= range_.start)
        ) and (range_.end is None or (window.end is not None and window.end <= range_.end)):
            return range_
    return window


def _bounds(window: Window) -> Bounds:
    assert window.end is not None, "a range of a run always ends"
    return (to_micros(window.start) if window.start is not None else None, to_micros(window.end))
