"""How this tenant's service reads a request, learnt from its own answers (``check --deep``).

Nothing published says what the jobs API's time window selects: v1 names its bounds ``startTime`` /
``endTime``, v2 ``startTime`` / ``finishTime``. The connector's windows, cursor and re-reads assume it
selects jobs by their start. A handful of probe requests (15 to 25, nothing loaded) learn instead:

- what the window selects (``start``, ``overlap``: jobs that ran during it, ``finish``, or ``ignored``),
  whether each bound is inclusive, and whether a window returns running jobs. The test windows are
  made from one finished job the service returns: around its start, around its finish, strictly
  inside its run, and a window decades ago;
- the order of the answers (newest or oldest first) and whether it is stable (the same page twice,
  and two half pages against one whole);
- the largest page size honoured (asking 101 and 1,000: refused, capped or served) and whether the
  total is reported;
- the answer's wrapper and fields, and any job field the connector does not know yet.

The probe looks past the newest page: a busy tenant at night shows only running jobs there, so it asks
for the jobs of each final status (then the next pages) to find a finished one. Its windows reach a
second on each side of a moment: times may come with 0 to 7 fractional digits, or rounded to
milliseconds from a finer time the service filters on.

Where the tenant holds too few jobs to decide, the finding says "could not tell" (None). A load whose
service's reading is unknown reads the safe way (``plan``), and checks again on its next run.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import ApiError
from .model import JobsPage, PageSource, Window
from .rows import JOB_FIELD_NAMES
from .settings import FINAL_STATUSES, IN_PROGRESS_STATUS, MAX_PAGE_SIZE
from .times import api_time_or_none, format_api_time

logger = logging.getLogger(__name__)

_US = timedelta(microseconds=1)
_FAR_PAST = datetime(1990, 1, 1, tzinfo=UTC)
#: What each reading of the window answers for (around the start, around the finish, inside the run).
_SIGNATURES = {
    (True, False, False): "start",
    (True, True, True): "overlap",
    (False, True, False): "finish",
}


@dataclass
class ServiceFindings:
    """What ``check --deep`` learnt about a tenant's jobs API (None: could not tell).

    Attributes:
        checked_at: The service's time of the check (ISO-8601).
        api_version: ``v1`` or ``v2``.
        base_url: The API root probed.
        window_selects: ``start``, ``overlap``, ``finish`` or ``ignored``.
        start_bound: ``inclusive`` or ``exclusive``.
        end_bound: ``inclusive`` or ``exclusive``.
        running_in_windows: Whether a window returns jobs still running.
        order: ``newest first``, ``oldest first`` or ``unordered``.
        stable_order: The same request answers in the same order, and pages line up.
        total_reported: Answers carry the number of matching jobs.
        max_page_size: The largest page size known to be served as asked.
        oversize_pages: What a larger one gets: ``refused``, ``capped`` or ``served``.
        wrapper: The answer's fields.
        job_fields: The fields of the jobs served.
        unknown_fields: Job fields the connector does not know yet (they load as text columns).
        notes: Why something could not be told.
        running_jobs: Jobs running at the check (asked when the window's reading is unknown: what
            reading the safe way costs).
        probe_requests: Requests the check took.
        stale: A run's answers contradicted these findings: the next run checks again.
    """

    checked_at: str
    api_version: str
    base_url: str
    window_selects: str | None = None
    start_bound: str | None = None
    end_bound: str | None = None
    running_in_windows: bool | None = None
    order: str | None = None
    stable_order: bool | None = None
    total_reported: bool | None = None
    max_page_size: int | None = None
    oversize_pages: str | None = None
    wrapper: list[str] = field(default_factory=list)
    job_fields: list[str] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    running_jobs: int | None = None
    probe_requests: int = 0
    stale: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (kept in the source's state)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> ServiceFindings | None:
        """Findings from the state; None when absent or unreadable."""
        if not isinstance(raw, dict):
            return None
        known = {name for name in cls.__dataclass_fields__}
        try:
            return cls(**{key: value for key, value in raw.items() if key in known})
        except TypeError:
            return None

    def lines(self, safe_way: bool = True) -> list[str]:
        """The findings as a person reads them, one per line.

        Args:
            safe_way: Add what loads do while the window's reading is unknown (a run says it once,
                as a warning of its own).
        """

        def told(value: Any, text: str | None = None) -> str:
            return "could not tell" if value is None else (text or str(value))

        return [
            f"time window selects:   {told(self.window_selects, _SELECTS.get(self.window_selects or ''))}",
            f"window bounds:         start {told(self.start_bound)}, end {told(self.end_bound)}",
            f"running jobs returned: {told(self.running_in_windows, _yes(self.running_in_windows))}",
            f"order:                 {told(self.order)}"
            + (
                ""
                if self.stable_order is None
                else (", stable" if self.stable_order else ", NOT stable")
            ),
            f"total reported:        {told(self.total_reported, _yes(self.total_reported))}",
            f"largest page size:     {told(self.max_page_size)}"
            + (f" (larger ones {self.oversize_pages})" if self.oversize_pages else ""),
            f"answer fields:         {', '.join(self.wrapper) or 'could not tell'}",
            f"unknown job fields:    {', '.join(self.unknown_fields) or 'none'}",
            *(f"note: {note}" for note in self.notes),
            *([self.safe_way()] if safe_way and self.window_selects is None else []),
        ]

    def safe_way(self, page_size: int = MAX_PAGE_SIZE) -> str:
        """What loads do, and cost, while the window's reading is unknown (one line)."""
        running = "every running job" if self.running_jobs is None else f"the {self.running_jobs}"
        pages = (
            "one request a page"
            if self.running_jobs is None
            else _plural(max(1, math.ceil(self.running_jobs / page_size)), "request")
        )
        return (
            "while this is unknown, loads read the safe way (exact whether windows select by start, "
            f"overlap or finish): the windows by start time, plus {running} running jobs read "
            f"without a window (+{pages} at page size {page_size}), plus "
            f"{_plural(self.probe_requests, 'request')} to check again on each run"
        )


_SELECTS = {
    "start": "jobs that started in it (what the connector assumes)",
    "overlap": "jobs that ran during it (started before its end, not finished before its start)",
    "finish": "jobs that finished in it (running jobs are in no window)",
    "ignored": "every job, whatever the window",
}


def _plural(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


def _yes(value: bool | None) -> str:
    return "yes" if value else "no"


def probe_service(client: PageSource) -> ServiceFindings:
    """Learn how the service reads requests, with about 15 to 25 requests; nothing is loaded.

    Args:
        client: Asks the jobs API (its configured filters apply to every probe).

    Raises:
        ApiError, AuthError: the service failed for good (any probe but the page-size one).

    Example:
        >>> probe_service(client).window_selects
        'start'
    """
    size = MAX_PAGE_SIZE
    sent_before = client.requests_sent
    base = client.fetch_page(Window(None, None), 1, size)
    findings = ServiceFindings(
        checked_at=format_api_time(client.clock.now()),
        api_version=client.query.api_version,
        base_url=client.query.base_url,
        wrapper=list(base.keys),
        total_reported=base.total is not None,
    )
    fields = sorted({key for job in base.jobs for key in job})
    findings.job_fields = fields
    findings.unknown_fields = [name for name in fields if name not in JOB_FIELD_NAMES]
    _order(client, base, findings)
    _page_sizes(client, base, findings)
    _window(client, base, findings)
    if findings.window_selects is None:
        findings.running_jobs = client.fetch_page(
            Window(None, None, IN_PROGRESS_STATUS), 1, 1
        ).total
    findings.probe_requests = client.requests_sent - sent_before
    return findings


def _order(client: PageSource, base: JobsPage, findings: ServiceFindings) -> None:
    starts = [api_time_or_none(job.get("startTime")) for job in base.jobs]
    known = [moment for moment in starts if moment is not None]
    if len(set(known)) < 2:
        findings.notes.append("order: fewer than two jobs with distinct start times")
    elif all(a >= b for a, b in itertools.pairwise(known)):
        findings.order = "newest first"
    elif all(a <= b for a, b in itertools.pairwise(known)):
        findings.order = "oldest first"
    else:
        findings.order = "unordered"
    if len(base.jobs) < 4:
        findings.notes.append("stable order: fewer than 4 jobs")
        return
    again = client.fetch_page(Window(None, None), 1, len(base.jobs))
    half = len(base.jobs) // 2
    first = client.fetch_page(Window(None, None), 1, half)
    second = client.fetch_page(Window(None, None), 2, half)
    ids = [job.get("jobId") for job in base.jobs]
    repeated = [job.get("jobId") for job in again.jobs] == ids
    halves = [job.get("jobId") for job in (*first.jobs, *second.jobs)] == ids[: 2 * half]
    findings.stable_order = repeated and halves


#: Answers to an oversize page that say nothing of page sizes: a proxy's limit, a validation
#: error of another kind, a server failing. Decided by the status code, never by the text.
_UNTELLING = (413, 422)


def _page_sizes(client: PageSource, base: JobsPage, findings: ServiceFindings) -> None:
    findings.max_page_size = min(MAX_PAGE_SIZE, max(len(base.jobs), 1))
    if base.total is not None and base.total <= MAX_PAGE_SIZE:
        findings.notes.append(
            f"page sizes over {MAX_PAGE_SIZE}: the tenant holds {base.total} jobs, too few to tell"
        )
        return
    findings.max_page_size = MAX_PAGE_SIZE
    for asked in (MAX_PAGE_SIZE + 1, 1_000):
        try:
            page = client.fetch_page(Window(None, None), 1, asked)
        except ApiError as error:
            if error.status == 400:
                findings.oversize_pages = "refused"
                return
            # 413, 422, a 5xx or a dropped connection after every retry: it tells nothing of page
            # sizes, and a probe never fails a load.
            what = f"HTTP {error.status}" if error.status is not None else "no answer"
            findings.notes.append(f"page sizes over {MAX_PAGE_SIZE}: asking {asked} got {what}")
            return
        available = asked if base.total is None else min(asked, base.total)
        if len(page.jobs) < available:
            findings.oversize_pages = "capped"
            findings.max_page_size = max(findings.max_page_size, len(page.jobs))
            return
        findings.max_page_size = asked
    findings.oversize_pages = "served"


#: Test windows reach this far on each side of a moment: robust to times sent with 0 to 7 digits, or
#: rounded to milliseconds from a finer time the service filters on.
_AROUND = timedelta(seconds=1)
#: A probe job must have run at least this long (three disjoint windows fit in its run).
_MIN_RUN = timedelta(seconds=3)
#: Pages read (status filters first, then the newest pages) to find a finished and a running job.
_SEARCH_PAGES = 4


def _window(client: PageSource, base: JobsPage, findings: ServiceFindings) -> None:
    probe = _finished_job(base.jobs) or _finished_job(_search(client, base, "finished"))
    if probe is None:
        findings.notes.append(
            "time window: no finished job that ran at least 3 s among the newest jobs, the jobs of "
            "each final status and the newest pages"
        )
        return
    job_id, start, finish = probe.job_id, probe.start, probe.finish

    def has(window: Window) -> tuple[bool, int | None]:
        page = client.fetch_page(window, 1, MAX_PAGE_SIZE)
        return any(job.get("jobId") == job_id for job in page.jobs), page.total

    far, far_total = has(Window(_FAR_PAST, _FAR_PAST + _US))
    if base.total is not None and far_total == base.total and base.total > 0:
        findings.window_selects = "ignored"
        return
    del far
    signature = (
        has(Window(start - _AROUND, start + _AROUND))[0],
        has(Window(finish - _AROUND, finish + _AROUND))[0],
        has(Window(start + _AROUND, finish - _AROUND))[0],
    )
    selects = _SIGNATURES.get(signature)
    if selects is None:
        findings.notes.append(f"time window: answers fit no known reading {signature}")
        return
    findings.window_selects = selects
    _bounds(probe, selects, findings, has)
    running = _running_job(base.jobs) or _running_job(_search(client, base, "running"))
    if running is None:
        findings.notes.append("running jobs in windows: no running job found")
        if selects == "finish":
            findings.running_in_windows = False  # a window by finish never holds a running job
        return
    running_id, running_start = running
    page = client.fetch_page(
        Window(running_start - _AROUND, running_start + _AROUND), 1, MAX_PAGE_SIZE
    )
    findings.running_in_windows = any(job.get("jobId") == running_id for job in page.jobs)


def _bounds(
    probe: _ProbeJob,
    selects: str,
    findings: ServiceFindings,
    has: Callable[[Window], tuple[bool, int | None]],
) -> None:
    """Whether each bound is inclusive: windows that start, or end, exactly at the job's moment.

    Only a moment sent with at most 6 digits can be hit exactly. A service that filters on a finer
    time than it shows misses both tests: that reads as "exclusive", which costs a duplicate that
    the rows drop, never a job.
    """
    if not probe.exact:
        findings.notes.append("window bounds: the probe job's times have more than 6 digits")
        return
    low_moment = probe.finish if selects in ("finish", "overlap") else probe.start
    high_moment = probe.start if selects in ("start", "overlap") else probe.finish
    findings.start_bound = (
        "inclusive" if has(Window(low_moment, low_moment + _US))[0] else "exclusive"
    )
    findings.end_bound = (
        "inclusive" if has(Window(high_moment - _US, high_moment))[0] else "exclusive"
    )


def _search(client: PageSource, base: JobsPage, kind: str) -> list[dict[str, Any]]:
    """More jobs to find a finished (or running) one in: by status filter, then the newest pages.

    A busy tenant at night shows only running jobs on its first pages; asking by status finds a
    finished job in one request (where the service honours the filter), the next pages otherwise.
    """
    statuses = sorted(FINAL_STATUSES) if kind == "finished" else [IN_PROGRESS_STATUS]
    pick = _finished_job if kind == "finished" else _running_job
    found: list[dict[str, Any]] = []
    for status in statuses:
        page = client.fetch_page(Window(None, None, status), 1, MAX_PAGE_SIZE)
        found.extend(page.jobs)
        if pick(page.jobs) is not None:
            return found
    if len(base.jobs) < MAX_PAGE_SIZE:
        return found  # the first page held every job
    for number in range(2, 2 + _SEARCH_PAGES):
        page = client.fetch_page(Window(None, None), number, MAX_PAGE_SIZE)
        found.extend(page.jobs)
        if pick(page.jobs) is not None or len(page.jobs) < MAX_PAGE_SIZE:
            break
    return found


@dataclass(frozen=True)
class _ProbeJob:
    """A finished job the window tests are made from."""

    job_id: str
    start: datetime
    finish: datetime
    exact: bool  # both times came with at most 6 fractional digits


def _finished_job(jobs: list[dict[str, Any]]) -> _ProbeJob | None:
    for job in jobs:
        start = api_time_or_none(job.get("startTime"))
        finish = api_time_or_none(job.get("finishTime"))
        status = job.get("status")
        if start is None or finish is None or status not in FINAL_STATUSES:
            continue
        if finish - start >= _MIN_RUN and isinstance(job.get("jobId"), str):
            exact = _exact(job.get("startTime")) and _exact(job.get("finishTime"))
            return _ProbeJob(str(job["jobId"]), start, finish, exact is not None)
    return None


def _running_job(jobs: list[dict[str, Any]]) -> tuple[str, datetime] | None:
    for job in jobs:
        start = api_time_or_none(job.get("startTime"))
        if start is not None and job.get("status") not in FINAL_STATUSES and job.get("jobId"):
            return str(job["jobId"]), start
    return None


def _exact(raw: Any) -> datetime | None:
    """A time the API sent with at most microsecond digits (so a window can hit it exactly)."""
    if not isinstance(raw, str):
        return None
    fraction = raw.split(".", 1)[1].rstrip("Zz") if "." in raw else ""
    fraction = fraction.split("+", 1)[0].split("-", 1)[0]
    if len(fraction.rstrip("0")) > 6:
        return None
    return api_time_or_none(raw)
