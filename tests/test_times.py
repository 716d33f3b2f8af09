"""Unit tier: the API's times read one by one and a column at a time agree, for any string the API may send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from avepoint_dynamics.times import api_times_to_arrow, format_api_time, parse_api_time
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

MOMENTS = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)


def _api_text(moment: datetime, digits: int, ticks: int, offset_minutes: int) -> str:
    """How the API may write ``moment``: 0..7 fractional digits (the 7th a .NET tick), Z or an offset."""
    local = moment + timedelta(minutes=offset_minutes)
    fraction = f"{moment.microsecond:06d}{ticks}"[:digits]
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "")
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


@given(
    moment=MOMENTS,
    digits=st.integers(0, 7),
    ticks=st.integers(0, 9),
    offset_minutes=st.sampled_from([0, 0, 60, -300, 330, 840, -720]),
)
def test_one_time_and_a_column_of_them_read_alike(
    moment: datetime, digits: int, ticks: int, offset_minutes: int
) -> None:
    text = _api_text(moment, digits, ticks, offset_minutes)

    one = parse_api_time(text)
    column = api_times_to_arrow([text]).to_pylist()[0]

    assert one == column, text
    assert one.tzinfo is not None and one.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-15T03:00:01Z", datetime(2024, 6, 15, 3, 0, 1, tzinfo=UTC)),
        ("2024-06-15T03:00:01.5Z", datetime(2024, 6, 15, 3, 0, 1, 500_000, tzinfo=UTC)),
        (
            "2024-06-15T03:00:01.1234567Z",
            datetime(2024, 6, 15, 3, 0, 1, 123_456, tzinfo=UTC),
        ),  # cut
        ("2024-06-15T05:00:01.999999+02:00", datetime(2024, 6, 15, 3, 0, 1, 999_999, tzinfo=UTC)),
    ],
)
def test_api_times_are_cut_to_microseconds_in_utc(text: str, expected: datetime) -> None:
    assert parse_api_time(text) == expected
    assert api_times_to_arrow([text]).to_pylist() == [expected]


def test_a_time_without_a_zone_is_utc_one_by_one_and_refused_by_the_column_reader() -> None:
    # The column reader cannot tell; the row path (one by one) reads it as UTC, as the API means it.
    assert parse_api_time("2024-06-15T03:00:01") == datetime(2024, 6, 15, 3, 0, 1, tzinfo=UTC)
    with pytest.raises(pa.ArrowInvalid):
        api_times_to_arrow(["2024-06-15T03:00:01"])


@given(moment=MOMENTS)
def test_formatting_and_parsing_round_trip(moment: datetime) -> None:
    assert parse_api_time(format_api_time(moment)) == moment
