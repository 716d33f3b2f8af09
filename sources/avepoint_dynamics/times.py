"""The API's time format, both ways: UTC ISO-8601 with a varying number of fractional digits."""

from __future__ import annotations

from datetime import UTC, datetime


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


def format_api_time(moment: datetime) -> str:
    """Render a time as the API expects it: UTC, microseconds, ``Z``.

    Example:
        >>> format_api_time(datetime(2024, 6, 15, 3, 0, 1, 500000, tzinfo=timezone.utc))
        '2024-06-15T03:00:01.500000Z'
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch (exact, unlike ``timestamp()`` floats)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The inverse of :func:`to_micros`."""
    from datetime import timedelta

    return _EPOCH + timedelta(microseconds=micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
