"""An external scheduler's interval (dlt's ``TimeIntervalContext``) turns a run into a bounded backfill.

dlt 1.x hands a scheduler's interval to whatever runs in its process: ``DLT_INTERVAL_START`` /
``DLT_INTERVAL_END`` (UTC ISO-8601), Airflow's ``data_interval_start`` / ``data_interval_end`` while an
Airflow task runs, or one set in code (``TimeIntervalContext(interval=...)``, ``dlt.current.interval.set``).
A dlt incremental joins it only when allowed: its own ``allow_external_schedulers`` flag, else the
process-wide one (``DLT_ALLOW_EXTERNAL_SCHEDULERS``, or the context's). The source does the same, with its
own ``allow_external_schedulers`` key in place of the incremental's flag.

Joined, the run reads exactly ``[start, end)`` as ``backfill`` does: the cursor stays where the
scheduled runs put it, and rows are the service's current answer, so a day loaded again never regresses.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from dlt.extract.incremental.context import get_interval_context

from .errors import ConfigError
from .query import SERVICE_NOW, JobsQuery

logger = logging.getLogger(__name__)

KEY = "allow_external_schedulers"


def scheduler_interval(allow: bool | None) -> tuple[datetime, datetime] | None:
    """The interval this run joins, in UTC, or None (a scheduled run, nothing changes).

    Args:
        allow: The source's ``allow_external_schedulers``; None defers to dlt's process-wide flag.

    Returns:
        ``(start, end)`` when the run may join and the scheduler gave a non-empty interval. An empty
        one (start == end: Airflow's manually triggered runs, dlt's event runs) is no interval, as dlt's
        ``dlt.current.interval.is_empty`` reads it.

    Raises:
        ConfigError: joining is allowed but no scheduler gave an interval (dlt raises the same for its
            incrementals: ``ExternalSchedulerNotAvailable``).
    """
    context = get_interval_context()
    join = allow if allow is not None else bool(context and context.allow_external_schedulers)
    if not join:
        return None
    interval = context.interval if context else None
    if interval is None:
        raise ConfigError(
            KEY,
            "is on but no scheduler gave this run an interval: set DLT_INTERVAL_START and "
            "DLT_INTERVAL_END, run it as an Airflow task, or set allow_external_schedulers false",
        )
    start, end = interval.start.astimezone(UTC), interval.end.astimezone(UTC)
    if start >= end:
        logger.info(
            "the scheduler's interval is empty (%s): a scheduled run, from the cursor", _iso(start)
        )
        return None
    return start, end


def join_interval(query: JobsQuery, interval: tuple[datetime, datetime]) -> JobsQuery:
    """``query`` bounded to the scheduler's interval, clipped by its own range as dlt clips incrementals.

    A configured ``initial_start_time`` later than the interval's start, or an ``end_time`` earlier than
    its end, wins (dlt's ``_join_external_scheduler`` does the same with ``initial_value`` / ``end_value``).

    Raises:
        ConfigError: the clipped range is empty (the interval lies wholly outside the configured one).
    """
    start, end = interval
    if query.initial_start_time is not None and query.initial_start_time > start:
        start = query.initial_start_time
    if query.end_time is not None and query.end_time != SERVICE_NOW and query.end_time < end:
        end = query.end_time
    if end <= start:
        raise ConfigError(
            "initial_start_time",
            f"the scheduler's interval [{_iso(interval[0])}, {_iso(interval[1])}) and the configured "
            "range (initial_start_time, end_time) do not overlap: nothing to load",
        )
    logger.info(
        "joined the scheduler's interval: a bounded backfill of [%s, %s), the cursor stays",
        _iso(start),
        _iso(end),
    )
    return replace(query, initial_start_time=start, end_time=end)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
