"""Time as the simulator keeps it: integer ticks of 100 ns since the Unix epoch, UTC.

100 ns is .NET's tick, the finest unit AvePoint's 7-digit fractional seconds can carry, so every
time string the simulator serves maps to exactly one integer and back: bounds are exact.
"""

from __future__ import annotations

import datetime as dt
import re
import time

__all__ = [
    "TICKS_PER_SECOND",
    "ServiceClock",
    "format_compact",
    "format_ticks",
    "parse_time",
    "ticks_from_datetime",
]

TICKS_PER_SECOND = 10_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?$"
)


def ticks_from_datetime(value: dt.datetime) -> int:
    """Convert a datetime (naive = UTC) to ticks."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10


def _seconds_part(ticks: int) -> tuple[dt.datetime, int]:
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    return _EPOCH + dt.timedelta(seconds=seconds), fraction


def format_ticks(ticks: int) -> str:
    """Format ticks as AvePoint does: UTC, 'Z', only the fractional digits that are not zero.

    >>> format_ticks(17184240011230000)
    '2024-06-15T04:00:01.123Z'
    """
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    # isoformat of a naive whole second is "YYYY-MM-DDTHH:MM:SS", ~4x faster than strftime (hot path).
    text = (_NAIVE_EPOCH + dt.timedelta(seconds=seconds)).isoformat()
    if fraction:
        text += "." + f"{fraction:07d}".rstrip("0")
    return text + "Z"


def format_compact(ticks: int) -> str:
    """Format the whole seconds as ``yyyymmddHHMMSS`` (the middle of a jobId)."""
    text = (_NAIVE_EPOCH + dt.timedelta(seconds=ticks // TICKS_PER_SECOND)).isoformat()
    return text[0:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16] + text[17:19]


def parse_time(text: str) -> int:
    """Parse an ISO-8601 time as a client may send it, to ticks.

    Accepts 'Z', a numeric offset or no zone (taken as UTC), a date alone (midnight), and any
    number of fractional digits. Digits beyond the 7th round UP to the next tick: a job at tick
    ``t`` is ``>= x`` exactly when ``t >= ceil(x)``, and ``< x`` exactly when ``t < ceil(x)``,
    so both bounds of the half-open window stay exact.

    Args:
        text: The time string.

    Returns:
        Ticks since the epoch.

    Raises:
        ValueError: When the text is not such a time.
    """
    match = _ISO.match(text.strip())
    if not match:
        raise ValueError(f"not an ISO-8601 time: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    moment = dt.datetime(
        int(year),
        int(month),
        int(day),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        tzinfo=dt.UTC,
    )
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad UTC offset: {zone!r}")
        moment -= sign * dt.timedelta(hours=hours, minutes=minutes)
    ticks = ticks_from_datetime(moment)
    if fraction:
        head, tail = fraction[:7].ljust(7, "0"), fraction[7:]
        ticks += int(head)
        if tail.strip("0"):
            ticks += 1
    return ticks


class ServiceClock:
    """The service's own clock: this machine's wall clock plus an offset.

    A real service's clock is not its client's: ``offset_s`` makes the simulator's clock run ahead
    (positive) or behind (negative) the machine the client runs on. Every time the simulator shows a
    client comes from here: job start and finish times, the HTTP ``Date`` header, token and client
    assertion expiry checks.

    Args:
        offset_s: Seconds added to the wall clock.
    """

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset_s = float(offset_s)

    def seconds(self) -> float:
        """Seconds since the epoch on the service's clock."""
        return time.time() + self.offset_s

    def ticks(self) -> int:
        """Ticks since the epoch on the service's clock."""
        return ticks_from_datetime(dt.datetime.now(dt.UTC)) + round(
            self.offset_s * TICKS_PER_SECOND
        )
