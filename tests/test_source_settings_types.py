"""Unit tier: the source's settings are typed, so dlt coerces what a provider holds and refuses what it cannot.

Env vars arrive as text: ``"5"`` must reach the source as 5, and ``"abc"`` for a number must fail in dlt's
resolution naming the key (``ConfigValueCannotBeCoercedException``), not deep inside the run.
"""

from __future__ import annotations

import inspect
import typing
from datetime import UTC, datetime
from typing import Any

import pytest
from avepoint_dynamics import AvePointCredentials, ConfigError, avepoint_dynamics, jobs_setup
from dlt.common.configuration.exceptions import ConfigValueCannotBeCoercedException

pytestmark = pytest.mark.unit

ENV = "SOURCES__AVEPOINT_DYNAMICS__"
#: Arguments that are not settings a provider holds (code hands them in).
NOT_SETTINGS = {"credentials", "on_page", "on_run"}


def _credentials() -> AvePointCredentials:
    credentials = AvePointCredentials()
    credentials.client_id = "00000000-0000-0000-0000-000000000001"
    credentials.client_secret = "unit-secret"
    return credentials


def _source(**args: Any) -> Any:
    return avepoint_dynamics(credentials=_credentials(), region="us", **args)


def test_no_setting_of_the_source_is_typed_any() -> None:
    hints = typing.get_type_hints(avepoint_dynamics.__wrapped__)  # type: ignore[attr-defined]
    settings = [
        name for name in inspect.signature(avepoint_dynamics).parameters if name not in NOT_SETTINGS
    ]

    untyped = [name for name in settings if name not in hints or hints[name] is Any]
    assert settings and untyped == []


def test_numbers_from_env_vars_arrive_as_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "PAGE_SIZE": "5",
        "MAX_CONCURRENCY": "3",
        "LOOKBACK_MINUTES": "0",
        "OPEN_JOB_MAX_AGE_DAYS": "7",
        "MAX_ATTEMPTS": "2",
    }.items():
        monkeypatch.setenv(ENV + key, value)

    setup = jobs_setup(_source())

    query = setup.query
    assert (query.page_size, query.max_concurrency, setup.retry.max_attempts) == (5, 3, 2)
    assert (query.lookback.total_seconds(), query.open_job_max_age.days) == (0, 7)


@pytest.mark.parametrize(("given", "code"), [("backup", 1), ("1", 1), ("restore", 2)])
def test_codes_from_env_vars_may_be_numbers_or_names(
    monkeypatch: pytest.MonkeyPatch, given: str, code: int
) -> None:
    monkeypatch.setenv(ENV + "JOB_TYPE", given)

    assert jobs_setup(_source()).query.job_type == code


def test_dates_from_env_vars_are_utc_times(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV + "INITIAL_START_TIME", "2026-01-01")
    monkeypatch.setenv(ENV + "END_TIME", "2026-02-01T06:00:00+02:00")

    query = jobs_setup(_source()).query

    assert query.initial_start_time == datetime(2026, 1, 1, tzinfo=UTC)
    assert query.end_time == datetime(2026, 2, 1, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "value", "type_"),
    [
        ("page_size", "abc", int),
        ("max_concurrency", "2.5", int),
        ("lookback_minutes", "ten", int),
        ("open_job_max_age_days", "a month", int),
        ("max_attempts", "many", int),
        ("allow_external_schedulers", "maybe", bool),
    ],
)
def test_a_value_dlt_cannot_coerce_fails_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, type_: type
) -> None:
    monkeypatch.setenv(ENV + key.upper(), value)

    with pytest.raises(ConfigValueCannotBeCoercedException) as failure:
        _source()

    error = failure.value
    assert (error.field_name, error.field_value, error.hint) == (key, value, type_)
    assert f"`{key}`" in str(error)


def test_a_number_out_of_range_is_still_the_sources_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV + "PAGE_SIZE", "500")

    with pytest.raises(ConfigError) as failure:
        _source()

    assert failure.value.key == "page_size"
    assert "500 is out of range; use a whole number from 1 to 100" in str(failure.value)
