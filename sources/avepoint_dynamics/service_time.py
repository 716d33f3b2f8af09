"""Where a run's new-jobs window ends: the service's time now, read from its own answers.

The ``Date`` of an answer has a resolution of one second; the newest job's start (and, where windows may
select by finish, the newest finish) pins the time below that. A job shown at ``T`` may have started a
little after ``T`` when the service shows times rounded (AvePoint's samples show milliseconds next to a
``jobId`` of 100 ns ticks): the time is then taken as past ``T`` plus the resolution times are shown at.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from .model import PageSource, Window
from .settings import MAX_PAGE_SIZE
from .times import api_time_or_none

logger = logging.getLogger("avepoint_dynamics")

_MICROSECOND = timedelta(microseconds=1)
#: The fractional digits of an API time ("" for none).
_FRACTION = re.compile(r"(?:\.(\d*))?(?:[Zz]|[+-]\d\d:?\d\d)?$")
#: Jobs the clock probe asks for (one request): enough to see how many digits the service shows.
_CLOCK_PROBE_JOBS = 20


def service_now(client: PageSource, selects: str, status: int | None) -> datetime:
    """The service's time now, from one probe: its ``Date``, and the newest job's start.

    Where windows select by finish (or may: the reading is unknown), the jobs that finished in the
    last seconds pin it too: a job that finished after the newest start must be inside this run's
    window.

    Args:
        client: Asks the jobs API.
        selects: What the window selects (``start``, ``overlap``, ``finish``, ``ignored``, ``unknown``).
        status: The run's status filter.

    Example:
        >>> service_now(client, "start", None)
        datetime.datetime(2026, 12, 5, 8, 12, 6, 386000, tzinfo=datetime.timezone.utc)
    """
    if client.query.api_version == "v2" and not client.clock.known:
        # v2 sends an end even here (it requires one): the latest the service's time can be, which
        # needs one answer's Date first (this machine's clock may be days off).
        client.fetch_page(Window(None, None, status), 1, 1)
    probe = client.fetch_page(Window(None, None, status), 1, _CLOCK_PROBE_JOBS)
    past = shown_resolution(probe.jobs, "startTime") - _MICROSECOND
    for job in probe.jobs:
        start = api_time_or_none(job.get("startTime"))
        if start is not None:
            client.clock.observe_start(start + past)
    if selects in ("finish", "unknown") and client.clock.known:
        recent = Window(client.clock.now() - timedelta(seconds=2), None, status)
        for number in range(1, 6):  # the jobs that finished in the last seconds: a page or two
            page = client.fetch_page(recent, number, MAX_PAGE_SIZE)
            past = shown_resolution(page.jobs, "finishTime") - _MICROSECOND
            for job in page.jobs:
                finish = api_time_or_none(job.get("finishTime"))
                if finish is not None:
                    client.clock.observe_start(finish + past)
            if len(page.jobs) < MAX_PAGE_SIZE:
                break
    if not client.clock.known:
        logger.warning(
            "the jobs API's answers carry no Date header; the new-jobs window ends at this "
            "machine's clock, which may be off the service's (lookback_minutes covers some of it)"
        )
    return client.clock.now()


def shown_resolution(jobs: list[dict[str, Any]], key: str) -> timedelta:
    """The finest time step the service shows ``key`` at, judged by the most fractional digits seen.

    Times shown with up to 3 digits on every job (AvePoint's samples: milliseconds) may be rounded
    from a finer time the service filters on; 6 or more digits: the microsecond is exact.

    Example:
        >>> shown_resolution([{"startTime": "2022-08-19T03:12:43.823Z"}], "startTime")
        datetime.timedelta(microseconds=1000)
    """
    shown = [raw for raw in (job.get(key) for job in jobs) if isinstance(raw, str)]
    digits = max((_digits(raw) for raw in shown), default=6)
    if digits >= 6:
        return _MICROSECOND
    return timedelta(seconds=10.0**-digits)


def _digits(raw: str) -> int:
    match = _FRACTION.search(raw)
    return len(match.group(1) or "") if match else 6
