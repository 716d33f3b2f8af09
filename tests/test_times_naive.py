"""Unit tier: a time without a zone is UTC both ways, whatever zone the loader's machine is in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from avepoint_dynamics.times import format_api_time, parse_api_time

pytestmark = pytest.mark.unit


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's local zone is Asia/Tokyo (UTC+9) for the test, and back after it."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    assert time.localtime(0).tm_hour == 9, "the zone did not take: the test would prove nothing"
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tokyo")
def test_a_naive_midnight_is_formatted_as_utc_midnight() -> None:
    assert format_api_time(datetime(2026, 12, 1)) == "2026-12-01T00:00:00.000000Z"


@pytest.mark.usefixtures("tokyo")
@pytest.mark.parametrize(
    "text", ["2026-12-01T00:00:00", "2026-12-01T23:59:59.999999", "2026-06-15T03:00:01.1234567"]
)
def test_parse_and_format_agree_on_naive_times(text: str) -> None:
    naive = datetime.fromisoformat(text)
    parsed = parse_api_time(text)
    assert parsed == naive.replace(tzinfo=UTC)
    assert format_api_time(naive) == format_api_time(parsed)
    assert parse_api_time(format_api_time(naive)) == parsed


@pytest.mark.usefixtures("tokyo")
def test_an_aware_time_keeps_its_instant() -> None:
    moment = datetime.fromisoformat("2026-12-01T09:00:00+09:00")
    assert format_api_time(moment) == "2026-12-01T00:00:00.000000Z"
