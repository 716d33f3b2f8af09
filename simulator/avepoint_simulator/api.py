"""The jobs API: v1 (``POST /api/OpenApi/GetJobs``) and v2 (``GET /dynamicsbackup/jobs``).

Both parse into one :class:`JobsRequest` and share one answer. Validation follows ASP.NET Core
conventions (property names case-insensitive, numbers must be JSON numbers, booleans are not
numbers) and answers 400 with a body naming the field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from avepoint_simulator.jobs_store import JOB_TYPES, JobFilter
from avepoint_simulator.times import format_ticks, parse_time
from avepoint_simulator.world import World

__all__ = [
    "MAX_PAGE_SIZE",
    "ApiError",
    "JobsRequest",
    "answer",
    "error_body",
    "parse_v1",
    "parse_v2",
]

MAX_PAGE_SIZE = 100
#: Page sizes past this are refused whatever the settings (a request must not make the simulator
#: render a million jobs at once).
HARD_MAX_PAGE_SIZE = 10_000
DEFAULT_PAGE_SIZE = 10
V2_PATH = "/dynamicsbackup/jobs"
#: ``type`` values accepted: 0 means all; 32 (export) appears in AvePoint's later docs.
ACCEPTED_TYPES = (0, *JOB_TYPES)
_JSON_TYPES = re.compile(r"^(application/json|text/json|application/[A-Za-z0-9.!#$&^_-]+\+json)$")


class ApiError(Exception):
    """An error answer of the jobs API."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    """AvePoint's error body: ``{"statusCode", "message", ["field"], "requestId", "timestamp", "traceId"}``."""
    body: dict[str, Any] = {"statusCode": status, "message": message}
    if field is not None:
        body["field"] = field
    body["requestId"] = str(uuid.uuid4())
    body["timestamp"] = (
        dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
    body["traceId"] = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    return body


@dataclass(frozen=True)
class JobsRequest:
    """One page request, whichever version it came in.

    Attributes:
        page: 1-based page index.
        size: Page size (1..100).
        filter: What to select.
        link_params: The filters as v2 query parameters, for ``nextLink``.
    """

    page: int
    size: int
    filter: JobFilter
    link_params: tuple[tuple[str, str], ...]


# ---------------------------------------------------------------------- shared checks
def _int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(
            400, f"The JSON value for '{field}' could not be converted to an integer.", field
        )
    if not -(2**31) <= value < 2**31:
        raise ApiError(400, f"The value of '{field}' is out of range for an Int32.", field)
    return value


def _check_page(
    page: int | None, size: int | None, page_field: str, size_field: str
) -> tuple[int, int]:
    page = 1 if page is None else page
    size = DEFAULT_PAGE_SIZE if size is None else size
    if page < 1:
        raise ApiError(400, f"'{page_field}' must be 1 or greater.", page_field)
    if not 1 <= size <= HARD_MAX_PAGE_SIZE:
        raise ApiError(400, f"'{size_field}' must be between 1 and {MAX_PAGE_SIZE}.", size_field)
    return page, size


def with_page_size_rule(
    request: JobsRequest, max_page_size: int, oversize: str, version: str
) -> JobsRequest:
    """The request as a server with a page size cap sees it: refused (400), capped, served, or failed.

    ``"drop"`` is the server's to carry out (it closes the connection); here it is served.
    """
    if request.size <= max_page_size or oversize == "serve":
        return request
    if oversize == "cap":
        return dataclasses.replace(request, size=max_page_size)
    if oversize in ("413", "422", "500"):
        messages = {
            "413": "Request entity too large.",
            "422": "The request could not be processed.",
            "500": "An unexpected error occurred on the server.",
        }
        raise ApiError(int(oversize), messages[oversize])
    field = "pageInfo.pageSize" if version == "v1" else "pageSize"
    raise ApiError(400, f"'{field}' must be between 1 and {max_page_size}.", field)


def _type(value: int | None) -> int | None:
    if value is not None and value not in ACCEPTED_TYPES:
        raise ApiError(400, f"'type' must be one of {', '.join(map(str, ACCEPTED_TYPES))}.", "type")
    return value if value else None  # 0 means every type


def _time(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(
            400, f"The JSON value for '{field}' could not be converted to a DateTime.", field
        )
    try:
        return parse_time(value)
    except (ValueError, OverflowError):
        raise ApiError(
            400, f"'{field}' is not a valid ISO-8601 date and time: {value!r}.", field
        ) from None


def _org(value: Any, field: str = "organizationId") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(
            400, f"The JSON value for '{field}' could not be converted to a Guid.", field
        )
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise ApiError(400, f"'{field}' is not a valid GUID: {value!r}.", field) from None


def _filter(
    start: int | None, end: int | None, job_type: int | None, status: int | None,
    org: str | None, object_type: int | None,
) -> JobFilter:  # fmt: skip
    return JobFilter(
        start=start,
        end=end,
        type=_type(job_type),
        status=status,
        organization_id=org,
        # objectType 0 reads as "any module", like type 0 (undocumented; the forgiving reading).
        object_type=object_type or None,
    )


# ---------------------------------------------------------------------- v1
def parse_v1(content_type: str | None, body: bytes) -> JobsRequest:
    """Parse and validate a v1 request.

    Args:
        content_type: The Content-Type header.
        body: The raw body.

    Raises:
        ApiError: 415 for another media type; 400 naming the field for a bad value.
    """
    media = (content_type or "").split(";")[0].strip().lower()
    if not _JSON_TYPES.match(media):
        raise ApiError(
            415,
            f"Unsupported media type {content_type!r}; use application/json, text/json or application/*+json.",
        )
    if not body.strip():
        raise ApiError(400, "A non-empty request body is required.", "body")
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", "body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", "body")
    fields = {k.lower(): v for k, v in data.items()}  # System.Text.Json web defaults
    page_info = fields.get("pageinfo")
    if page_info is None:
        page_info = {}
    if not isinstance(page_info, dict):
        raise ApiError(400, "'pageInfo' must be an object.", "pageInfo")
    page_fields = {k.lower(): v for k, v in page_info.items()}
    page, size = _check_page(
        _int(page_fields.get("currentpage"), "pageInfo.currentPage"),
        _int(page_fields.get("pagesize"), "pageInfo.pageSize"),
        "pageInfo.currentPage",
        "pageInfo.pageSize",
    )
    job_type = _int(fields.get("type"), "type")
    start = _time(fields.get("starttime"), "startTime")
    end = _time(fields.get("endtime"), "endTime")
    status = _int(fields.get("status"), "status")
    org = _org(fields.get("organizationid"))
    object_type = _int(fields.get("objecttype"), "objectType")
    return _jobs_request(
        page,
        size,
        job_type,
        status,
        org,
        object_type,
        (start, fields.get("starttime")),
        (end, fields.get("endtime")),
    )


# ---------------------------------------------------------------------- v2
def _query_int(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name.lower())
    if raw is None or raw == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(400, f"The value '{raw}' is not valid for '{name}'.", name) from None
    return _int(value, name)


#: What AvePoint's page for ``GET /dynamicsbackup/jobs`` marks *Required: Yes*.
V2_REQUIRED = ("type", "startTime", "finishTime")


def missing_v2_fields(query: str) -> list[str]:
    """The documented required parameters a v2 query string lacks (absent or empty)."""
    present = {
        key.lower()
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True)
        if value.strip()
    }
    return [name for name in V2_REQUIRED if name.lower() not in present]


def validation_body(missing: list[str]) -> dict[str, Any]:
    """ASP.NET Core's answer to a request missing required fields (``ValidationProblemDetails``)."""
    return {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": {name: [f"The {name} field is required."] for name in missing},
        "traceId": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00",
    }


def parse_v2(query: str) -> JobsRequest:
    """Parse and validate a v2 query string (names case-insensitive, the first of repeats wins).

    Raises:
        ApiError: 400 naming the parameter.
    """
    params: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        params.setdefault(key.lower(), value)
    page, size = _check_page(
        _query_int(params, "pageIndex"), _query_int(params, "pageSize"), "pageIndex", "pageSize"
    )
    job_type = _query_int(params, "type")
    start = _time(params.get("starttime") or None, "startTime")
    end = _time(params.get("finishtime") or None, "finishTime")
    status = _query_int(params, "status")
    org = _org(params.get("organizationid") or None)
    object_type = _query_int(params, "objectType")
    return _jobs_request(
        page,
        size,
        job_type,
        status,
        org,
        object_type,
        (start, params.get("starttime") or None),
        (end, params.get("finishtime") or None),
    )


def _jobs_request(
    page: int,
    size: int,
    job_type: int | None,
    status: int | None,
    org: str | None,
    object_type: int | None,
    start: tuple[Any, Any],
    end: tuple[Any, Any],
) -> JobsRequest:
    """Validated values (and the raw window bounds, for the v2 nextLink) as one request of either version."""
    link = [
        ("type", job_type),
        ("startTime", start[1]),
        ("finishTime", end[1]),
        ("status", status),
        ("organizationId", org),
        ("objectType", object_type),
    ]
    return JobsRequest(
        page,
        size,
        _filter(start[0], end[0], job_type, status, org, object_type),
        tuple((k, str(v)) for k, v in link if v is not None),
    )


def with_window_reading(
    request: JobsRequest, window: str, start_exclusive: bool = False
) -> JobsRequest:
    """The request as a server reading its window ``"half_open"``, ``"inclusive"`` or ``"ignored"`` sees it.

    Bounds stay half-open ticks ``[start, end)``: an inclusive end is one tick later, an exclusive
    start one tick later.
    """
    flt = request.filter
    if window == "inclusive" and flt.end is not None:
        flt = dataclasses.replace(flt, end=flt.end + 1)  # one tick: a job at endTime is in
    elif window == "ignored":
        flt = dataclasses.replace(flt, start=None, end=None)
    if start_exclusive and flt.start is not None and window != "ignored":
        flt = dataclasses.replace(flt, start=flt.start + 1)
    return request if flt is request.filter else dataclasses.replace(request, filter=flt)


# ---------------------------------------------------------------------- answer
_TICKS_PER_MS = 10_000


def in_milliseconds(job: dict[str, Any]) -> dict[str, Any]:
    """The job with its start and finish rounded to the millisecond (half up), as shown."""
    shown = dict(job)
    for key in ("startTime", "finishTime"):
        if isinstance(shown.get(key), str):
            ticks = parse_time(shown[key])
            shown[key] = format_ticks((ticks + _TICKS_PER_MS // 2) // _TICKS_PER_MS * _TICKS_PER_MS)
    return shown


def answer(
    world: World,
    request: JobsRequest,
    newest_first: bool = True,
    wrapper: str = "current",
    repeat_page: bool = False,
    total_offset: int = 0,
    selects: str = "start",
    shuffle_ties: bool = False,
    report_total: bool = True,
    repeat_in_page: int = 0,
    next_link_prefix: str = V2_PATH,
    times_in_milliseconds: bool = False,
) -> dict[str, Any]:
    """The answer to a page request.

    Args:
        world: Where the jobs are.
        request: The parsed request.
        newest_first: Order (startTime desc, jobId desc) or the reverse.
        wrapper: ``"current"`` or ``"draft"``.
        repeat_page: Serve page 1's jobs whatever page is asked (a broken server).
        total_offset: Add this to the reported total (a broken server).
        selects: What the time window selects: ``"start"``, ``"overlap"`` or ``"finish"``.
        shuffle_ties: Jobs with equal start times come in a new order every time.
        report_total: Put the total in the answer.
        repeat_in_page: List the page's first job this many extra times at its end.
        next_link_prefix: The path ``nextLink`` starts with (AvePoint's sample: ``/jobs``).
        times_in_milliseconds: Show start and finish rounded to the millisecond.

    Returns:
        ``{"totalCount", "pageIndex", "pageSize", "nextLink", "jobs"}`` or, draft,
        ``{"totalNumber", "result"}``. ``nextLink`` is the relative v2 URL of the next page, kept
        filters included, or None on the last page.
    """
    page = 1 if repeat_page else request.page
    total, jobs = world.query(
        request.filter,
        (page - 1) * request.size,
        request.size,
        newest_first,
        selects=selects,
        shuffle_ties=shuffle_ties,
    )
    reported = total + total_offset
    if times_in_milliseconds:
        jobs = [in_milliseconds(job) for job in jobs]
    if repeat_in_page and jobs:
        jobs = [*jobs, *(dict(jobs[0]) for _ in range(repeat_in_page))]
    if wrapper == "draft":
        return {"totalNumber": reported, "result": jobs} if report_total else {"result": jobs}
    next_link = None
    if request.page * request.size < reported:
        params = [
            ("pageIndex", str(request.page + 1)),
            ("pageSize", str(request.size)),
            *request.link_params,
        ]
        next_link = f"{next_link_prefix}?{urllib.parse.urlencode(params)}"
    answer = {
        "totalCount": reported,
        "pageIndex": request.page,
        "pageSize": request.size,
        "nextLink": next_link,
        "jobs": jobs,
    }
    if not report_total:
        del answer["totalCount"]
    return answer
