"""The API's times, both ways, and the service's clock: the one place that parses and formats them.

The API sends UTC ISO-8601 with a varying number of fractional digits (0 to 7: .NET ticks). Three readers
must agree on every such string forever: one time (:func:`parse_api_time`), a column of them at once
(:func:`api_times_to_arrow`, for the row batches) and the config's dates (also :func:`parse_api_time`).
Digits past the microsecond are cut, never rounded, everywhere.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pyarrow as pa


def parse_api_time(text: str) -> datetime:
    """Parse an API time (``Z`` or an offset, 0 to 7+ fractional digits; naive means UTC) to aware UTC.

    Comparing these as strings is wrong (``"…:00.5Z" < "…:00Z"``), so every time is parsed before use.

    Raises:
        ValueError: ``text`` is not an ISO-8601 time.

    Example:
        >>> parse_api_time("2024-06-15T03:00:01.1234567Z")
        datetime.datetime(2024, 6, 15, 3, 0, 1, 123456, tzinfo=datetime.timezone.utc)
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


#: The forms a person may write a date or time in (config keys, CLI flags): ISO-8601's extended form.
_USER_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.IGNORECASE,
)
#: Shown when a date or time is refused.
USER_TIME_EXAMPLES = "2026-11-01 or 2026-11-01T00:00:00Z"


def parse_user_time(text: str) -> datetime:
    """A date or time a person wrote (a config value, a CLI flag), as aware UTC: the one parser for both.

    ISO-8601 only: ``11/01/2026`` is 1 November to some and 11 January to others, so it is refused, not
    guessed. A date is its midnight; no offset means UTC; digits beyond microseconds are cut.

    Raises:
        ValueError: ``text`` is not an ISO-8601 date or time (the message says what would be).

    Example:
        >>> parse_user_time("2026-11-01")
        datetime.datetime(2026, 11, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    value = text.strip()
    if not _USER_TIME.fullmatch(value):
        raise ValueError(f"{text!r} is not an ISO-8601 date or time; use e.g. {USER_TIME_EXAMPLES}")
    value = value.replace(",", ".")
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)  # beyond microseconds: cut
    value = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", value)  # +0200 -> +02:00
    try:
        return parse_api_time(value.upper().replace("Z", "+00:00"))
    except ValueError as error:  # the shape is right, a field is not (month 13, hour 25)
        raise ValueError(
            f"{text!r} is not a valid date or time ({error}); use e.g. {USER_TIME_EXAMPLES}"
        ) from None


#: How every time is typed in Arrow (and so in the destination): UTC, microseconds.
ARROW_UTC_MICROS = pa.timestamp("us", tz="UTC")
_ARROW_UTC_NANOS = pa.timestamp("ns", tz="UTC")


def api_times_to_arrow(texts: Sequence[str | None]) -> pa.Array:
    """A column of API times as Arrow UTC microseconds, parsed by Arrow's own (C++) reader.

    Nanoseconds first, so that 7 fractional digits (.NET ticks) parse; then cut to microseconds, as
    :func:`parse_api_time` cuts them. A time without a zone is refused here (``ArrowInvalid``): the caller
    falls back to :func:`parse_api_time` one by one, which reads it as UTC.

    Raises:
        pyarrow.ArrowInvalid: a string is not a zoned ISO-8601 time.
    """
    return pa.array(texts, pa.string()).cast(_ARROW_UTC_NANOS).cast(ARROW_UTC_MICROS, safe=False)


def api_time_or_none(raw: object) -> datetime | None:
    """An API time parsed, a datetime as is, anything else (None, garbage) None: for lenient readers."""
    if isinstance(raw, datetime):
        return raw
    if not isinstance(raw, str):
        return None
    try:
        return parse_api_time(raw)
    except ValueError:
        return None


def format_api_time(moment: datetime) -> str:
    """Render a time as the API expects it: UTC, microseconds, ``Z``; naive means UTC (as when parsed).

    Never this machine's zone: under ``TZ=Asia/Tokyo`` a naive midnight is still midnight UTC.

    Example:
        >>> format_api_time(datetime(2024, 6, 15, 3, 0, 1, 500000, tzinfo=timezone.utc))
        '2024-06-15T03:00:01.500000Z'
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch (exact, unlike ``timestamp()`` floats)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The inverse of :func:`to_micros`."""
    return _EPOCH + timedelta(microseconds=micros)


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP date (``Date``, ``Retry-After``), e.g. ``Thu, 03 Dec 2026 03:37:49 GMT``; None if unusable."""
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class ServiceClock:
    """The service's time, read from the ``Date`` header of its answers; this machine's clock decides nothing.

    A loader's clock can be minutes or hours off the service's. Each answer says what time it is on the
    service (1 s resolution, rounded down). ``now()`` is the newest such time plus the time elapsed here
    since it arrived (measured on the monotonic clock, which nobody sets), so it never runs ahead of the
    service.

    Example:
        >>> clock = ServiceClock()
        >>> clock.observe("Thu, 03 Dec 2026 03:37:49 GMT")
        >>> clock.now()        # 03:37:49 plus the seconds since, whatever this machine's clock says
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._date: datetime | None = None
        self._received = 0.0
        self._started: datetime | None = None

    @property
    def known(self) -> bool:
        """Whether any answer carried a usable ``Date``."""
        return self._date is not None

    def observe(self, header: str | None) -> None:
        """Take the time of one answer (its ``Date`` header); the newest one wins."""
        moment = parse_http_date(header)
        if moment is None:
            return
        received = time.monotonic()
        with self._lock:
            if self._date is None or moment >= self._date + timedelta(
                seconds=received - self._received
            ):
                self._date, self._received = moment, received

    def observe_start(self, moment: datetime) -> None:
        """Take a job's start time: the job has started, so the service's time is past it.

        ``Date`` has a resolution of one second; the newest job's start pins the time below that, so a
        job that started a few milliseconds ago is inside the run's window. A start more than a second
        past ``Date`` (a job scheduled ahead?) is not evidence of the time, and is ignored.
        """
        with self._lock:
            if self._date is None:
                return
            ceiling = self._date + timedelta(seconds=1 + time.monotonic() - self._received)
            if moment < ceiling and (self._started is None or moment > self._started):
                self._started = moment

    def now(self) -> datetime:
        """The service's time now; this machine's clock if no answer carried a ``Date`` yet."""
        with self._lock:
            if self._date is None:
                return datetime.now(UTC)
            estimate = self._date + timedelta(seconds=time.monotonic() - self._received)
            if self._started is not None and self._started >= estimate:
                return self._started + timedelta(microseconds=1)
            return estimate

    def latest(self) -> datetime:
        """The latest the service's time can be now: ``Date`` rounds down, so up to a second past
        :meth:`now`. Before any answer, a day past this machine's clock (whose offset is unknown).

        An open end bound sent as this (v2 requires one) keeps every job that has started.
        """
        if not self.known:
            return datetime.now(UTC) + timedelta(days=1)
        return self.now() + timedelta(seconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
