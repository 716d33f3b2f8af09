"""What to ask the API for: every config value validated up front, before any request is sent."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .settings import (
    FINAL_STATUSES,
    JOB_STATUSES,
    JOB_TYPES,
    MAX_PAGE_SIZE,
    OBJECT_TYPES,
    REGIONS,
)
from .times import format_api_time, parse_user_time

#: ``end_time = "now"``: a backfill up to the service's time when the run starts (runs end their windows
#: at the service's time at the latest).
SERVICE_NOW = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class JobsQuery:
    """The validated request settings of one source instance.

    Attributes:
        base_url: API root, e.g. ``https://graph-us.avepointonlineservices.com``.
        api_version: ``v1`` (POST GetJobs, the seed) or ``v2`` (GET /dynamicsbackup/jobs).
        page_size: Jobs per page, 1..100.
        job_type: Job type code sent as ``type`` (None or 0 = all).
        status: Status code filter.
        organization_id: Dynamics organization GUID filter (canonical lower-case form).
        object_type: Module filter (v1 only; v2 does not document it).
        initial_start_time: Where the first scheduled run (or a backfill) starts; None = all history.
        end_time: End of a bounded (backfill) run; None = a scheduled, incremental run.
        max_concurrency: Pages in flight at once.
        lookback: How far before the stored cursor each scheduled run starts again, to catch jobs
            the API shows late.
        open_job_max_age: A job still not final this long after it started is no longer followed.
        base_url_from: The setting that chose ``base_url`` (``base_url`` or ``region 'us'``), for
            messages about a host that cannot be reached.
    """

    base_url: str
    api_version: str = "v1"
    page_size: int = 100
    job_type: int | None = None
    status: int | None = None
    organization_id: str | None = None
    object_type: int | None = None
    initial_start_time: datetime | None = None
    end_time: datetime | None = None
    max_concurrency: int = 8
    lookback: timedelta = timedelta(minutes=10)
    open_job_max_age: timedelta = timedelta(days=30)
    base_url_from: str = "base_url"

    @property
    def is_backfill(self) -> bool:
        """A bounded run: it reads ``[initial_start_time, end_time)`` and leaves the cursor alone."""
        return self.end_time is not None

    @property
    def status_is_final(self) -> bool:
        """The status filter selects a final status (3, 4, 7): a job can move into it, never out."""
        return self.status is not None and self.status in FINAL_STATUSES

    @property
    def status_can_be_left(self) -> bool:
        """The status filter selects a status a job leaves (2, or a code nobody documented).

        Then a job loaded under the filter must leave the table when it moves on.
        """
        return self.status is not None and self.status not in FINAL_STATUSES

    def filters(self) -> dict[str, Any]:
        """The filter fields of a request body, v1 spelling, without the time window and the status.

        The status goes with each window: the run asks the configured status, and status 2 to find the
        jobs that may move into it later.
        """
        body: dict[str, Any] = {}
        if self.job_type is not None:
            body["type"] = self.job_type
        if self.organization_id is not None:
            body["organizationId"] = self.organization_id
        if self.object_type is not None:
            body["objectType"] = self.object_type
        return body

    def filter_key(self) -> dict[str, Any]:
        """Every filter, status included, as kept in the state to notice a filter changed between runs."""
        return {**self.filters(), "status": self.status}


def resolve_hosts(
    region: str | None, base_url: str | None, identity_url: str | None
) -> tuple[str, str]:
    """The API root and identity root for a region, with explicit URLs taking precedence.

    Raises:
        ConfigError: the region is unknown, neither a region nor the URLs are given, or a URL is malformed.

    Example:
        >>> resolve_hosts("we", None, None)
        ('https://graph-we.avepointonlineservices.com', 'https://identity.avepointonlineservices.com')
    """
    api_root = identity_root = None
    if region is not None and str(region).strip():
        key = str(region).strip().lower()
        if key not in REGIONS:
            raise ConfigError(
                "region", f"unknown region {region!r}; valid regions: {', '.join(sorted(REGIONS))}"
            )
        api_root, identity_root = REGIONS[key]
    if base_url:
        api_root = _http_url("base_url", base_url)
    if identity_url:
        identity_root = _http_url("credentials.identity_url", identity_url)
    if api_root is None:
        raise ConfigError("region", f"set region (one of {', '.join(sorted(REGIONS))}) or base_url")
    if identity_root is None:
        raise ConfigError("credentials.identity_url", "set region or credentials.identity_url")
    return api_root, identity_root


def base_url_from(region: str | None, base_url: str | None) -> str:
    """The setting that chose the API host, as a user writes it (for "cannot connect" messages)."""
    if base_url:
        return "base_url"
    return f"region ({str(region).strip()!r}) / base_url"


def build_query(
    *,
    base_url: str,
    api_version: str | None,
    page_size: Any,
    job_type: Any,
    status: Any,
    organization_id: Any,
    object_type: Any,
    initial_start_time: Any,
    end_time: Any,
    max_concurrency: Any,
    lookback_minutes: Any,
    open_job_max_age_days: Any = 30,
    base_url_from: str = "base_url",
) -> JobsQuery:
    """Validate raw config values (from toml, env vars or arguments) into a :class:`JobsQuery`.

    Numbers may arrive as strings (env vars); codes may be given by name (``job_type="backup"``).

    Raises:
        ConfigError: naming the first invalid key and what would be valid.
    """
    version = (api_version or "v1").strip().lower()
    if version not in ("v1", "v2"):
        raise ConfigError("api_version", f"{api_version!r} is not supported; use 'v1' or 'v2'")
    size = _int_in_range("page_size", page_size, 1, MAX_PAGE_SIZE)
    concurrency = _int_in_range("max_concurrency", max_concurrency, 1, 64)
    lookback = _int_in_range("lookback_minutes", lookback_minutes, 0, 7 * 24 * 60)
    max_age = _int_in_range("open_job_max_age_days", open_job_max_age_days, 1, 3650)
    start = _time("initial_start_time", initial_start_time)
    # "now" is the service's time when the run starts (this machine's clock may be off).
    now = isinstance(end_time, str) and end_time.strip().lower() == "now"
    end = SERVICE_NOW if now else _time("end_time", end_time)
    if start is not None and end is not None and end <= start:
        raise ConfigError("end_time", f"{_iso(end)} is not after initial_start_time {_iso(start)}")
    type_code = _code("job_type", job_type, JOB_TYPES, strict=True)
    obj = _code("object_type", object_type, OBJECT_TYPES, strict=False)
    if obj is not None and version == "v2":
        raise ConfigError(
            "object_type", "the v2 API has no object_type filter; use api_version 'v1'"
        )
    return JobsQuery(
        base_url=base_url.rstrip("/"),
        api_version=version,
        page_size=size,
        job_type=None if type_code == 0 else type_code,
        status=_code("status", status, JOB_STATUSES, strict=False),
        organization_id=_organization(organization_id),
        object_type=obj,
        initial_start_time=start,
        end_time=end,
        max_concurrency=concurrency,
        lookback=timedelta(minutes=lookback),
        open_job_max_age=timedelta(days=max_age),
        base_url_from=base_url_from,
    )


def _http_url(key: str, value: Any) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(key, f"{text!r} is not an http(s) URL like https://host[:port]")
    return text.rstrip("/")


def _int_in_range(key: str, value: Any, low: int, high: int) -> int:
    number = _as_int(key, value, f"a whole number from {low} to {high}")
    if not low <= number <= high:
        raise ConfigError(key, f"{number} is out of range; use a whole number from {low} to {high}")
    return number


def _as_int(key: str, value: Any, valid: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not {valid}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(key, f"{value!r} is not {valid}") from None


def _code(key: str, value: Any, names: dict[int, str], *, strict: bool) -> int | None:
    """A code given as a number or a documented name; strict codes must be documented ones."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    valid = ", ".join(f"{code} ({name})" for code, name in names.items())
    by_name = {name.lower().replace(" ", "_"): code for code, name in names.items()}
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        name = value.strip().lower().replace(" ", "_").replace("-", "_")
        if name not in by_name:
            raise ConfigError(key, f"{value!r} is not a known name; valid: {valid}")
        return by_name[name]
    code = _as_int(key, value, f"a code; valid: {valid}")
    if code < 0 or (strict and code not in names):
        raise ConfigError(key, f"{code} is not a valid code; valid: {valid}")
    return code


def _organization(value: Any) -> str | None:
    if value is None or not str(value).strip():
        return None
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise ConfigError(
            "organization_id",
            f"{value!r} is not a Dynamics organization GUID like 69cb1ecc-f8e8-439b-8077-a4b7fd45e87f",
        ) from None


def _time(key: str, value: Any) -> datetime | None:
    """An ISO-8601 date or time (naive = UTC), or a datetime, as an aware UTC datetime.

    Only ISO-8601: ``11/01/2026`` is 1 November to some and 11 January to others, so it is refused, not
    guessed.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    try:
        return parse_user_time(str(value))
    except ValueError as error:
        raise ConfigError(key, str(error)) from None


def _iso(moment: datetime) -> str:
    return format_api_time(moment)
