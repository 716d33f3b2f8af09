"""One run of the ``jobs`` resource: plan the ranges, read them, yield typed batches, commit the state.

The order of one run:

1. the state (``incremental``): the cursor and the followed jobs; the ones followed too long are abandoned;
2. the followed jobs' ranges (``following``), weighed by probing their first pages;
3. the service's time, from the ``Date`` of its answers (a probe if nothing was asked yet): the new-jobs
   window is ``[cursor - lookback, service now)``;
4. every range, once per status selection (the configured filter; plus status 2, to find the jobs that
   may move into a final status filter later), page by page (``paging``), into Arrow batches (``rows``);
5. what left the filter, what loaded after being set aside, the duplicate claim of the whole run;
6. the new state, committed by dlt with the load package.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, MutableMapping
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
from .incremental import FollowState, RunTracker, describe_filters, follow_marks
from .model import JobsPage, PageSource, Window
from .paging import WindowReader
from .plan import ReadPlan, plan_reads, plan_rescue
from .rejected import Bounds, RejectedJob, rejected_table, resolved_rejections_table
from .rows import JobRows, fingerprint, left_jobs_table
from .run_log import RUNS_TABLE, RunRecord, runs_table
from .service import ServiceFindings, probe_service
from .settings import IN_PROGRESS_STATUS, MAX_PAGE_SIZE
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
        before = FollowState.load(self.state)
        filters = query.filter_key()
        filters_match = before.filters is None or before.filters == filters
        if not filters_match:
            self._filters_changed(before.filters, filters)
        for job_id in before.abandon_old(query.open_job_max_age):
            logger.warning(
                "job %s is still not final %d days after it started; no longer following it "
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
            selects = self.findings.window_selects or "start" if self.findings else "start"
            reader = WindowReader(client, pool, self.on_page)
            first_pages: dict[Window, JobsPage] = {}
            start = self._new_jobs_start(before)
            follow_ranges: list[Window] = []
            if not query.is_backfill and selects == "start":
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
            now = self._now = self._service_now(client, selects)
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
            if selects == "ignored":
                logger.warning(
                    "this service ignores the time window (check --deep, %s): every run reads "
                    "the whole history",
                    self.findings.checked_at if self.findings else "?",
                )
            tracker = RunTracker(before, plan.coverage, filters_match, query.status_can_be_left)
            logger.info(
                "reading jobs in %s (+%d ranges of followed jobs; windows select by %s; service "
                "time %s)",
                Window(start, end),
                len(follow_ranges),
                selects,
                format_api_time(now),
            )
            yield from self._read(reader, plan, first_pages, tracker)
            missing = tracker.left_jobs()
            if missing and selects in ("overlap", "finish") and not query.is_backfill:
                logger.info("%d followed jobs came in no window: looking for them", len(missing))
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
            "read %s in %s (%s, %s, %s re-read); following %d open and %d set-aside jobs; "
            "%d rejected this run",
            _count(stats.jobs, "job"),
            _count(stats.pages, "page"),
            _count(client.requests_sent, "request"),
            _count(tokens.tokens_fetched if tokens is not None else 0, "token"),
            _count(stats.rereads, "window"),
            len(state.open_jobs),
            len(state.rejected_jobs) + len(state.rejected_windows),
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
        record.jobs_set_aside = len(state.rejected_jobs) + len(state.rejected_windows)
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

    def _findings(self, client: PageSource) -> ServiceFindings | None:
        """How the service reads requests: from the source's state, or learnt now (first run, or stale)."""
        key = f"{self.query.api_version} {self.query.base_url}"
        findings = ServiceFindings.from_dict(self.service_state.get(key))
        if findings is None or findings.stale:
            logger.info("learning how the jobs API at %s reads its requests", self.query.base_url)
            findings = probe_service(client)
            self.service_state[key] = findings.as_dict()
            for line in findings.lines():
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

    def _service_now(self, client: PageSource, selects: str) -> datetime:
        """The service's time, from a one-job probe: its ``Date``, and the newest job's start.

        Where windows select by finish, the jobs that finished in the last seconds pin it too: a job
        that finished after the newest start must be inside this run's window.
        """
        probe = client.fetch_page(Window(None, None, self.load_status), 1, 1)
        for job in probe.jobs:
            start = api_time_or_none(job.get("startTime"))
            if start is not None:
                client.clock.observe_start(start)
        if selects == "finish" and client.clock.known:
            recent = Window(client.clock.now() - timedelta(seconds=2), None, self.load_status)
            for number in range(1, 6):  # the jobs that finished in the last seconds: a page or two
                page = client.fetch_page(recent, number, MAX_PAGE_SIZE)
                for job in page.jobs:
                    finish = api_time_or_none(job.get("finishTime"))
                    if finish is not None:
                        client.clock.observe_start(finish)
                if len(page.jobs) < MAX_PAGE_SIZE:
                    break
        if not client.clock.known:
            logger.warning(
                "the jobs API's answers carry no Date header; the new-jobs window ends at this "
                "machine's clock, which may be off the service's (lookback_minutes covers some of it)"
            )
        return client.clock.now()

    def _filters_changed(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        if self.query.is_backfill:
            logger.warning(
                "this backfill's filters (%s) are not the pipeline's (%s): it loads what they select "
                "and leaves the followed jobs alone",
                describe_filters(new),
                describe_filters(old),
            )
        else:
            logger.warning(
                "the filters changed since the last run (%s -> %s): rows loaded under the old filters "
                "stay in the table; for a table that holds exactly what the new filters select, run "
                "avepoint-dynamics reset --yes and load again",
                describe_filters(old),
                describe_filters(new),
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
                yield self.claim.rows(batch.table, proven=not (reader.stats.may_repeat or strays))
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
