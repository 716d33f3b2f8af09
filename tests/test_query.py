"""Unit tier: every config key is validated (or normalized) before any request, one line naming the key.

``build_query`` and ``resolve_hosts`` take what dlt hands over (toml values, env var strings, arguments);
the source adds its own keys (credentials, ``max_attempts``, ``tenant``). Each case below says what a
user wrote and what the connector makes of it. That nothing is *sent* before a bad key fails is the
integration tier's question (test_jobs_source.py: ``test_invalid_config_fails_before_any_request``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from avepoint_dynamics import AvePointCredentials, ConfigError, avepoint_dynamics, jobs_setup
from avepoint_dynamics.query import SERVICE_NOW, base_url_from, build_query, resolve_hosts
from avepoint_dynamics.settings import REGIONS

pytestmark = pytest.mark.unit

ORG = "69cb1ecc-f8e8-439b-8077-a4b7fd45e87f"


def query(**overrides: Any) -> Any:
    """``build_query`` with every key at the source's default unless overridden."""
    values: dict[str, Any] = {
        "base_url": "https://api.example.test",
        "api_version": "v1",
        "page_size": 100,
        "job_type": None,
        "status": None,
        "organization_id": None,
        "object_type": None,
        "initial_start_time": None,
        "end_time": None,
        "max_concurrency": 8,
        "lookback_minutes": 10,
    }
    values.update(overrides)
    return build_query(**values)


def refused(key: str, **overrides: Any) -> str:
    """The one-line message of the ConfigError ``overrides`` cause, checked to name ``key``."""
    with pytest.raises(ConfigError) as failure:
        query(**overrides)
    message = str(failure.value)
    assert failure.value.key == key, message
    assert message.startswith(f"config error in sources.avepoint_dynamics.{key}: "), message
    assert "\n" not in message
    return message


def test_the_defaults_make_a_scheduled_run_of_every_job() -> None:
    q = query()

    assert (q.api_version, q.page_size, q.max_concurrency) == ("v1", 100, 8)
    assert q.lookback == timedelta(minutes=10) and q.open_job_max_age == timedelta(days=30)
    assert q.job_type is q.status is q.organization_id is q.object_type is None
    assert not q.is_backfill and q.filters() == {} and q.filter_key() == {"status": None}


# ---------------------------------------------------------------------- api_version
@pytest.mark.parametrize(("given", "version"), [(None, "v1"), ("v2", "v2"), (" V2 ", "v2")])
def test_api_version_is_v1_or_v2_in_any_case(given: Any, version: str) -> None:
    assert query(api_version=given).api_version == version


@pytest.mark.parametrize("given", ["v3", "1", "latest"])
def test_another_api_version_is_refused(given: str) -> None:
    assert "is not supported; use 'v1' or 'v2'" in refused("api_version", api_version=given)


# ---------------------------------------------------------------------- numbers in ranges
@pytest.mark.parametrize(
    ("key", "low", "high"),
    [
        ("page_size", 1, 100),
        ("max_concurrency", 1, 64),
        ("lookback_minutes", 0, 7 * 24 * 60),
        ("open_job_max_age_days", 1, 3650),
    ],
)
def test_numbers_take_their_whole_range_and_nothing_past_it(key: str, low: int, high: int) -> None:
    attribute = {"lookback_minutes": "lookback", "open_job_max_age_days": "open_job_max_age"}
    for value in (low, high, str(high), f" {low} "):  # env vars arrive as text
        got = getattr(query(**{key: value}), attribute.get(key, key))
        if isinstance(got, timedelta):
            unit = "minutes" if key == "lookback_minutes" else "days"
            got = got // timedelta(**{unit: 1})
        assert got == int(str(value).strip()), (key, value)
    for value in (low - 1, high + 1):
        message = refused(key, **{key: value})
        assert f"{value} is out of range; use a whole number from {low} to {high}" in message


@pytest.mark.parametrize("value", ["ten", "2.5", 2.5, 2.0, True, "", None])
@pytest.mark.parametrize("key", ["page_size", "max_concurrency", "lookback_minutes"])
def test_numbers_that_are_not_whole_numbers_are_refused(key: str, value: Any) -> None:
    # 2.5 is not silently cut to 2, and True is not 1
    message = refused(key, **{key: value})

    assert f"{value!r} is not a whole number from" in message


# ---------------------------------------------------------------------- codes by number or name
@pytest.mark.parametrize(
    ("given", "code"),
    [
        (None, None),
        ("", None),
        (0, None),  # 0 = all types: no filter sent
        ("all", None),
        (1, 1),
        ("1", 1),
        ("backup", 1),
        ("Dry Run", 4),
        ("dry-run", 4),
        ("audit_backup", 16),
        (32, 32),
    ],
)
def test_job_type_by_code_or_name(given: Any, code: int | None) -> None:
    q = query(job_type=given)

    assert q.job_type == code
    assert q.filters() == ({} if code is None else {"type": code})


@pytest.mark.parametrize("given", [3, 64, "nightly", -1, "-1"])
def test_a_job_type_nobody_documented_is_refused_listing_the_valid(given: Any) -> None:
    message = refused("job_type", job_type=given)

    assert "1 (backup)" in message and "16 (audit backup)" in message and "32 (export)" in message


@pytest.mark.parametrize(
    ("given", "code", "final", "can_be_left"),
    [
        (None, None, False, False),
        (3, 3, True, False),
        ("failed", 4, True, False),
        ("finished with exception", 7, True, False),
        ("in_progress", 2, False, True),
        (9, 9, False, True),  # a status nobody documented: taken, and treated as one a job leaves
    ],
)
def test_status_by_code_or_name_and_what_it_means_for_following(
    given: Any, code: int | None, final: bool, can_be_left: bool
) -> None:
    q = query(status=given)

    assert q.status == code
    assert (q.status_is_final, q.status_can_be_left) == (final, can_be_left)
    assert q.filters() == {} and q.filter_key() == {"status": code}  # the status goes per window


@pytest.mark.parametrize("given", ["done", -3, True])
def test_a_status_that_is_no_code_is_refused(given: Any) -> None:
    assert "2 (in progress)" in refused("status", status=given)


def test_object_type_is_any_code_or_a_module_name_and_v1_only() -> None:
    assert query(object_type=2).object_type == 2
    assert query(object_type="customer engagement").object_type == 1
    assert query(object_type=5).object_type == 5  # undocumented codes are observed values: taken
    assert query(object_type=1).filters() == {"objectType": 1}
    assert "1 (Customer Engagement)" in refused("object_type", object_type="sales")
    message = refused("object_type", object_type=1, api_version="v2")
    assert "the v2 API has no object_type filter; use api_version 'v1'" in message
    assert query(object_type=None, api_version="v2").object_type is None


# ---------------------------------------------------------------------- organization
@pytest.mark.parametrize(
    "given", [ORG, ORG.upper(), f" {ORG} ", "{" + ORG + "}", ORG.replace("-", "")]
)
def test_an_organization_id_is_kept_in_its_canonical_form(given: str) -> None:
    q = query(organization_id=given)

    assert q.organization_id == ORG
    assert q.filters() == {"organizationId": ORG}


@pytest.mark.parametrize("given", ["contoso", ORG[:-1], 42])
def test_an_organization_id_that_is_no_guid_is_refused(given: Any) -> None:
    assert "is not a Dynamics organization GUID like" in refused(
        "organization_id", organization_id=given
    )


def test_filters_combine_in_the_v1_spelling() -> None:
    q = query(job_type="restore", status=4, organization_id=ORG, object_type=2)

    assert q.filters() == {"type": 2, "organizationId": ORG, "objectType": 2}
    assert q.filter_key() == {"type": 2, "organizationId": ORG, "objectType": 2, "status": 4}


# ---------------------------------------------------------------------- times
@pytest.mark.parametrize(
    ("given", "moment"),
    [
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T00:00:00Z", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T02:00:00+02:00", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T00:00:00.1234567Z", datetime(2026, 11, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        (datetime(2026, 11, 1), datetime(2026, 11, 1, tzinfo=UTC)),  # naive = UTC
        (
            datetime(2026, 11, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            datetime(2026, 11, 1, tzinfo=UTC),
        ),
    ],
)
def test_start_times_are_iso_8601_read_as_utc(given: Any, moment: datetime) -> None:
    q = query(initial_start_time=given)

    assert q.initial_start_time == moment and q.initial_start_time.tzinfo == UTC
    assert not q.is_backfill  # a start alone is where the first scheduled run begins


@pytest.mark.parametrize("given", ["11/01/2026", "yesterday", "2026-13-01", "1 Dec 2026"])
def test_a_time_that_is_not_iso_8601_is_refused_not_guessed(given: str) -> None:
    for key in ("initial_start_time", "end_time"):
        message = refused(key, **{key: given})
        assert f"{given!r} is not" in message and "use e.g. 2026-11-01" in message


def test_an_end_time_makes_a_backfill_and_must_come_after_the_start() -> None:
    q = query(initial_start_time="2024-06-01", end_time="2024-06-02")
    assert q.is_backfill and q.end_time == datetime(2024, 6, 2, tzinfo=UTC)

    for end in ("2024-06-01", "2024-05-31"):
        message = refused("end_time", initial_start_time="2024-06-01", end_time=end)
        assert "is not after initial_start_time 2024-06-01T00:00:00.000000Z" in message


@pytest.mark.parametrize("given", ["now", " NOW "])
def test_end_time_now_is_the_services_now_not_this_machines(given: str) -> None:
    q = query(initial_start_time="2024-06-01", end_time=given)

    assert (
        q.is_backfill and q.end_time == SERVICE_NOW
    )  # the run ends its windows at the service's time


# ---------------------------------------------------------------------- hosts
@pytest.mark.parametrize("region", sorted(REGIONS))
def test_every_region_names_both_hosts(region: str) -> None:
    assert resolve_hosts(f" {region.upper()} ", None, None) == REGIONS[region]


def test_explicit_urls_win_over_the_region_and_lose_their_trailing_slash() -> None:
    api, identity = resolve_hosts("us", "https://proxy.test:8443/", "http://id.test/")

    assert (api, identity) == ("https://proxy.test:8443", "http://id.test")
    assert base_url_from("us", "https://proxy.test") == "base_url"
    assert base_url_from(" us ", None) == "region ('us') / base_url"


@pytest.mark.parametrize(
    ("region", "base_url", "identity_url", "key", "says"),
    [
        ("mars", None, None, "region", "unknown region 'mars'; valid regions: aos2, au, ca"),
        (None, None, "https://id.test", "region", "set region (one of aos2, au"),
        ("", None, None, "region", "set region (one of"),
        (None, "https://api.test", None, "credentials.identity_url", "set region or credentials"),
        (None, "graph-us.avepointonlineservices.com", None, "base_url", "is not an http(s) URL"),
        (None, "ftp://api.test", "https://id.test", "base_url", "is not an http(s) URL"),
        ("us", None, "identity", "credentials.identity_url", "is not an http(s) URL"),
    ],
)
def test_hosts_that_cannot_be_told_are_refused(
    region: str | None, base_url: str | None, identity_url: str | None, key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as failure:
        resolve_hosts(region, base_url, identity_url)

    assert failure.value.key == key and says in str(failure.value)


# ---------------------------------------------------------------------- the source's own keys
def _credentials(**values: Any) -> AvePointCredentials:
    credentials = AvePointCredentials()
    credentials.client_id = "00000000-0000-0000-0000-000000000001"
    credentials.client_secret = "unit-secret"
    for key, value in values.items():
        setattr(credentials, key, value)
    return credentials


def source(**args: Any) -> Any:
    """A source built as dlt builds it (nothing is requested until it is extracted)."""
    return avepoint_dynamics(credentials=_credentials(), region="us", **args)


def test_the_source_passes_every_key_through_to_its_settings() -> None:
    setup = jobs_setup(
        source(
            page_size="40",
            job_type="backup",
            status="failed",
            organization_id=ORG.upper(),
            max_concurrency=3,
            lookback_minutes="0",
            open_job_max_age_days=7,
            max_attempts="2",
            tenant=" contoso ",
            ca_bundle="/etc/ssl/private-ca.pem",
        )
    )

    q = setup.query
    assert (q.page_size, q.job_type, q.status, q.organization_id) == (40, 1, 4, ORG)
    assert (q.max_concurrency, q.lookback, q.open_job_max_age) == (
        3,
        timedelta(0),
        timedelta(days=7),
    )
    assert q.base_url == REGIONS["us"][0] and setup.identity_root == REGIONS["us"][1]
    assert setup.retry.max_attempts == 2 and setup.tenant == "contoso"
    assert setup.verify == "/etc/ssl/private-ca.pem"
    assert q.base_url_from == "region ('us') / base_url"


@pytest.mark.parametrize("value", [0, -1, "many", True, "1.5"])
def test_max_attempts_is_a_whole_number_of_at_least_one(value: Any) -> None:
    with pytest.raises(ConfigError) as failure:
        source(max_attempts=value)

    assert failure.value.key == "max_attempts" and "is not a whole number >= 1" in str(
        failure.value
    )


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_blank_tenant_is_no_tenant(value: Any) -> None:
    assert jobs_setup(source(tenant=value)).tenant is None


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"client_secret": None}, "given: none"),
        ({"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}, "given: secret and certificate"),
        ({"client_secret": None, "private_key": "/no/such/key.pem", "certificate": "/no/such.crt"}, "neither PEM text"),
        ({"client_secret": None, "pfx_path": "/no/such.pfx"}, "no such file"),
        ({"client_id": ""}, "client_id"),
    ],
)  # fmt: skip
def test_a_credential_config_that_cannot_sign_in_is_refused_when_the_source_is_built(
    values: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError) as failure:
        avepoint_dynamics(credentials=_credentials(**values), region="us")

    message = str(failure.value)
    assert says in message and "\n" not in message
    assert "unit-secret" not in message
