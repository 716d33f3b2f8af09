"""A date a person writes is read one way, whether it comes as a CLI flag or as a config key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from avepoint_dynamics import ConfigError
from avepoint_dynamics.query import _time
from avepoint_pipelines.cli.commands import iso_moment
from avepoint_pipelines.failures import UsageError

pytestmark = pytest.mark.unit

ACCEPTED = {
    "2026-11-01": datetime(2026, 11, 1, tzinfo=UTC),
    " 2026-11-01 ": datetime(2026, 11, 1, tzinfo=UTC),
    "2026-11-01T02:30": datetime(2026, 11, 1, 2, 30, tzinfo=UTC),
    "2026-11-01 02:30:15": datetime(2026, 11, 1, 2, 30, 15, tzinfo=UTC),
    "2026-11-01t02:30:15z": datetime(2026, 11, 1, 2, 30, 15, tzinfo=UTC),
    "2026-11-01T02:30:15.1234567Z": datetime(2026, 11, 1, 2, 30, 15, 123456, tzinfo=UTC),
    "2026-11-01T02:30:15,5Z": datetime(2026, 11, 1, 2, 30, 15, 500000, tzinfo=UTC),
    "2026-11-01T02:30:00+0200": datetime(2026, 11, 1, 0, 30, tzinfo=UTC),
    "2026-11-01T02:30:00-05:30": datetime(2026, 11, 1, 8, 0, tzinfo=UTC),
}
REFUSED = ["11/01/2026", "Nov 1 2026", "20261101", "2026-13-01", "2026-11-01T25:00", "yesterday"]


@pytest.mark.parametrize("text", sorted(ACCEPTED))
def test_a_flag_and_a_config_key_read_a_date_the_same(text: str) -> None:
    assert iso_moment("--from", text) == ACCEPTED[text]
    assert _time("initial_start_time", text) == ACCEPTED[text]


@pytest.mark.parametrize("text", REFUSED)
def test_a_flag_and_a_config_key_refuse_the_same_and_say_how_to_write_it(text: str) -> None:
    with pytest.raises(UsageError) as flag:
        iso_moment("--from", text)
    with pytest.raises(ConfigError) as key:
        _time("initial_start_time", text)
    assert str(flag.value).startswith(f"--from {text!r} is not")
    assert key.value.key == "initial_start_time"
    assert f"{text!r} is not" in str(key.value)
    for message in (str(flag.value), str(key.value)):  # and what would be read
        assert "use e.g. 2026-11-01 or 2026-11-01T00:00:00Z" in message
