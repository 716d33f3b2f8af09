"""The values every part of the connector shares: what to ask for (``Window``) and what came back (``JobsPage``).

Planning, paging and the HTTP client all speak in these; this module imports nothing that talks HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .query import JobsQuery
from .times import ServiceClock, format_api_time


@dataclass(frozen=True)
class Window:
    """What one series of page requests selects: jobs started in ``[start, end)``, with one status filter.

    Attributes:
        start: The window's start (inclusive); None = from the beginning of the history.
        end: The window's end (exclusive); None = no end (only a clock probe asks that).
        status: The ``status`` filter sent with these requests; None = every status. The run decides it
            (the configured filter, or ``2`` to find jobs still in progress), never the client.

    Example:
        >>> str(Window(None, datetime(2026, 12, 1, tzinfo=UTC), status=2))
        '[beginning, 2026-12-01T00:00:00.000000Z) status 2'
    """

    start: datetime | None
    end: datetime | None
    status: int | None = None

    def __str__(self) -> str:
        start = format_api_time(self.start) if self.start else "beginning"
        end = format_api_time(self.end) if self.end else "no end"
        text = f"[{start}, {end})"
        return text if self.status is None else f"{text} status {self.status}"

    def contains(self, moment: datetime) -> bool:
        """Whether a start time lies in ``[start, end)``."""
        after_start = self.start is None or moment >= self.start
        return after_start and (self.end is None or moment < self.end)


@dataclass
class JobsPage:
    """One answer of the jobs API, whichever wrapper it came in.

    Attributes:
        jobs: The job objects, as the API sent them.
        total: The number of jobs the API says match the request (None if it did not say).
        number: The 1-based page number asked for.
        window: What was asked.
        keys: The answer's own fields (``totalCount``, ``jobs``, ... or ``totalNumber``, ``result``).
    """

    jobs: list[dict[str, Any]]
    total: int | None
    number: int
    window: Window | None = None
    keys: tuple[str, ...] = ()


class PageSource(Protocol):
    """What reading needs of the jobs API: one page at a time, and the service's clock.

    :class:`avepoint_dynamics.client.JobsClient` is the one that talks HTTP.
    """

    query: JobsQuery
    clock: ServiceClock
    requests_sent: int
    start_exclusive: bool

    def fetch_page(self, window: Window, number: int, page_size: int | None = None) -> JobsPage:
        """Page ``number`` (1-based) of what ``window`` selects."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
