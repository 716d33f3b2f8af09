"""One run of the ``jobs`` resource: plan the ranges, read them, yield typed batches, commit the state.

The order of one run:

1. the state (``incremental``): the state of the run's filters (the last run's is parked when they
   changed), its cursor and followed jobs; the ones followed too long are abandoned;
2. how the service reads its time window (``service``): kept in the source's state, or learnt now (the
   first run, after answers contradicted it, and while it is unknown);
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
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any, cast

import dlt
import pyarrow as pa

from .auth import TokenProvider
from .claims import DuplicateClaim
from .dlt_compat import current_load_id
from .errors import ConfigError
from .following import plan_follow
from .incremental import (
    FollowState,
    RunTracker,
    describe_filters,
    follow_marks,
    selects_within,
    switch_filters,
)
from .model import JobsPage, PageSource, Window
from .paging import WindowReader
from .plan import ReadPlan, plan_reads, plan_rescue
from .rejected import Bounds, RejectedJob, rejected_table, resolved_rejections_table
from .rows import JobRows, fingerprint, left_jobs_table
from .run_log import RUNS_TABLE, RunRecord, runs_table
from .service import ServiceFindings, probe_service
from .service_time import service_now
from .settings import FINAL_STATUSES, IN_PROGRESS_STATUS
from .setup import JobsSetup
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
        state: This tenant's part of the resource state (changed in place at the end of the run).
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
        self.findings: ServiceFindings | None = None
        self.query = setup.query
        self.state = state
        self.on_page = on_page
        self.on_run = on_run
        #: What this run did (the run log's row), complete once the reading is over.
        self.record = RunRecord(tenant=setup.tenant, backfill=setup.query.is_backfill)
        query = self.query
        #: The configured status filter, and status 2 to find jobs that may move into it later.
        self.load_status = query.status
        self.follow_status = (
            IN_PROGRESS_STATUS if query.status is not None and query.status != 2 else None
        )
        self.claim = DuplicateClaim()
        self._now = datetime.now(UTC)  # replaced by the service's time before anything is read

    def batches(self) -> Iterator[Any]:
        """Arrow tables for ``jobs`` (and ``jobs_rejected``), with their hints; commits the state last."""
        query = self.query
        filters = query.filter_key()
        if not query.is_backfill:
            last = switch_filters(self.state, filters)
            if last is not None:
                self._filters_switched(last, filters)
        before = FollowState.load(self.state)
        filters_match = before.filters is None or before.filters == filters
        if not filters_match:
            self._backfill_filters_differ(before.filters, filters)
        self._history_from(before)
        for job_id in before.abandon_old(query.open_job_max_age):
            logger.warning(
                "job %s is still not finished %d days after it started; no longer checking it "
                "(avepoint-dynamics state lists it)",
                job_id,
                query.open_job_max_age.days,
            )
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
        try:
            self.findings = self._findings(client)
            selects = self._selects()
            reader = WindowReader(client, pool, self.on_page)
            first_pages: dict[Window, JobsPage] = {}
            start = self._new_jobs_start(before)
            # The clock probe needs nothing the followed ranges' probes find: side by side, one round
            # trip less before the reading starts (a nightly run's time is mostly round trips).
            clock = scope.enter_context(ThreadPoolExecutor(1, thread_name_prefix="avepoint-clock"))
            now_read = clock.submit(service_now, client, selects, self.load_status)
            follow_ranges: list[Window] = []
            if not query.is_backfill and selects in ("start", "unknown"):
                selections = [self.load_status] + (
                    [self.follow_status] if self.follow_status is not None else []
                )
                follow_ranges = plan_follow(
                    list(before.followed().values()),
                    start,
                    self._prober(reader, pool, selections, first_pages),
                    reads_per_window=len(selections),
                )
            if not query.is_backfill:
                follow_ranges += [
                    window
                    for window in before.rejected_windows.values()
                    if start is None or (window.start is not None and window.start < start)
                ]
            now = self._now = now_read.result()
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
            plan = plan_reads(selects, query, Window(start, end), follow_ranges)
            if selects == "unknown":
                self._say_safe_way()
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
                    self.findings.checked_at if self.findings else "?",
                )
            tracker = RunTracker(before, plan.coverage, filters_match, query.status_can_be_left)
            earlier = (
                f", and {_count(len(follow_ranges), 'earlier time span')} holding jobs not "
                "finished yet or set aside"
                if follow_ranges
                else ""
            )
            how = (
                ""
                if selects in ("start", "unknown")
                else f"; this service's time filter selects by {selects}"
            )
            logger.info(
                "reading the jobs that started in %s (the service's clock says %s)%s%s",
                Window(start, end),
                format_api_time(now),
                earlier,
                how,
            )
            yield from self._read(reader, plan, first_pages, tracker)
            missing = tracker.left_jobs()
            if missing and selects != "start" and not query.is_backfill:
                logger.info(
                    "%d jobs not finished at the last run came in no time span: looking for them",
                    len(missing),
                )
                rescue = plan_rescue(selects, query, sorted(missing.values()), start)
                yield from self._read(reader, rescue, {}, tracker)
            yield from self._after_reading(tracker, now)
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
        cursor = plan.cursor
        if cursor is not None and before.cursor is not None:
            cursor = max(cursor, before.cursor)  # a cursor never moves back
        state = tracker.after(cursor, now, filters)
        state.save(self.state)
        self._complete_record(reader, client, tokens, tracker, before, state, selects, started)
        stats = reader.stats
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

    def _selects(self) -> str:
        """What the window selects, as the plan reads it: ``unknown`` while the probe could not tell."""
        findings = self.findings
        if findings is None:
            return "start"
        return findings.window_selects or "unknown"

    def _say_safe_way(self) -> None:
        """Once a run: the reading is unknown, what the run does instead and what that costs."""
        findings = self.findings
        assert findings is not None
        logger.warning(
            "how this service's time window selects jobs is unknown (checked %s: %s); %s",
            findings.checked_at,
            "; ".join(note for note in findings.notes if note.startswith("time window"))
            or "could not tell",
            findings.safe_way(self.query.page_size),
        )

    def _findings(self, client: PageSource) -> ServiceFindings | None:
        """How the service reads requests: from the source's state, or learnt now.

        Learnt on the first run, after answers contradicted the findings, and on every run while the
        window's reading is unknown (a busy tenant may show a finished job tomorrow).
        """
        key = f"{self.query.api_version} {self.query.base_url}"
        findings = ServiceFindings.from_dict(self.service_state.get(key))
        if findings is None or findings.stale or findings.window_selects is None:
            logger.info("learning how the jobs API at %s reads its requests", self.query.base_url)
            findings = probe_service(client)
            self.service_state[key] = findings.as_dict()
            for line in findings.lines(safe_way=False):
                logger.info("  %s", line)
        client.start_exclusive = findings.start_bound == "exclusive"
        return findings

    # ------------------------------------------------------------------ planning
    def _new_jobs_start(self, before: FollowState) -> datetime | None:
        query = self.query
        if query.is_backfill or before.cursor is None:
            return query.initial_start_time
        return before.cursor - query.lookback

    def _prober(
        self,
        reader: WindowReader,
        pool: PagePool,
        selections: list[int | None],
        first_pages: dict[Window, JobsPage],
    ) -> Callable[[list[Window]], list[int | None]]:
        """Probes spans by their first pages (kept for the read): the requests each would take."""
        size = self.query.page_size

        def cost_of(spans: list[Window]) -> list[int | None]:
            windows = [Window(s.start, s.end, status) for s in spans for status in selections]
            pages = list(pool.map(reader.fetch_first, windows))
            first_pages.update(zip(windows, pages, strict=True))
            costs: list[int | None] = []
            for index in range(len(spans)):
                mine = pages[index * len(selections) : (index + 1) * len(selections)]
                if any(page.total is None for page in mine):
                    costs.append(None)
                else:
                    costs.append(sum(max(1, math.ceil((p.total or 0) / size)) for p in mine))
            return costs

        return cost_of

    def _backfill_filters_differ(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        logger.warning(
            "this backfill's filters (%s) are not the last run's (%s): it loads what they select "
            "and leaves the followed jobs alone",
            describe_filters(new),
            describe_filters(old),
        )

    def _filters_switched(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Say what a run under other filters than the last run's reads, and what the table keeps."""
        before = FollowState.load(self.state)
        if before.cursor is not None:
            reads = (
                f"it reads on from where the last run under them stopped ({format_api_time(before.cursor)}), "
                "so it also reads what the runs in between skipped"
            )
        else:
            start = self.query.initial_start_time
            since = (
                f"since {format_api_time(start)}" if start is not None else "in the whole history"
            )
            reads = f"no run read under them yet: it reads every job they select {since}"
        if selects_within(old, new):
            after = f"the state built under {describe_filters(old)} is kept for the next run under those"
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

    def _history_from(self, before: FollowState) -> None:
        """Remember where a first run started; say so when ``initial_start_time`` asks for another start."""
        query = self.query
        if query.is_backfill:
            return
        given = format_api_time(query.initial_start_time) if query.initial_start_time else None
        if before.cursor is None:
            self.state["history_from"] = given
            return
        if "history_from" not in self.state:
            return  # a state from before this was kept: where it started is not known
        started = self.state.get("history_from")
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

    # ------------------------------------------------------------------ reading
    def _read(
        self,
        reader: WindowReader,
        plan: ReadPlan,
        first_pages: dict[Window, JobsPage],
        tracker: RunTracker,
    ) -> Iterator[Any]:
        ranges = plan.start_ranges
        rows = JobRows(self.setup.constants, [_bounds(r) for r in ranges] if ranges else None)
        pending: list[dict[str, Any]] = []
        bounds: list[Bounds] = []
        strays = outside = 0
        #: Fingerprints of the open jobs read so far (only when a later read may return them again).
        open_read: dict[str, str] | None = {} if plan.seen_last is not None else None
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
            self._contradicted(
                f"{outside + strays} jobs came back that started outside the time window asked for "
                f"({strays} of them outside every window of this run, loaded anyway)"
            )

    def _contradicted(self, what: str) -> None:
        """The service's answers contradict the findings: say so, and learn again next run."""
        findings = self.findings
        checked = findings.checked_at if findings else "never"
        logger.warning(
            "%s: that contradicts how this service was found to read its window (checked %s); the "
            "next run checks again, or run avepoint-dynamics check --deep",
            what,
            checked,
        )
        if findings is not None:
            findings.stale = True
            key = f"{self.query.api_version} {self.query.base_url}"
            self.service_state[key] = findings.as_dict()

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
