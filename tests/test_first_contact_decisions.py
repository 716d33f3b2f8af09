"""Decisions behind first contact with an unknown service (issue 20): no socket, no database."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest
import requests
from avepoint_dynamics import retries
from avepoint_dynamics.auth import TokenProvider
from avepoint_dynamics.client import V2_FLOOR, JobsClient, _page, named_fields
from avepoint_dynamics.model import JobsPage, Window
from avepoint_dynamics.paging import WindowReader
from avepoint_dynamics.plan import plan_reads, plan_rescue
from avepoint_dynamics.query import JobsQuery
from avepoint_dynamics.retries import HostContact, RetryPolicy, Transient, transient_answer
from avepoint_dynamics.service import ServiceFindings
from avepoint_dynamics.service_time import shown_resolution
from avepoint_dynamics.stopping import PagePool, StopSignal
from avepoint_dynamics.times import ServiceClock, parse_api_time
from tenacity import RetryCallState

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
#: Every field the seed's v1 body declares (``pageInfo`` holds ``currentPage`` and ``pageSize``).
V1_BODY = {"pageInfo", "type", "startTime", "endTime", "status", "organizationId", "objectType"}


def _client(**query: Any) -> JobsClient:
    tokens = cast(TokenProvider, object())  # never asked: no request is sent here
    return JobsClient(JobsQuery(base_url="https://api.example", **query), tokens)


# ---------------------------------------------------------------------- what each request carries
@pytest.mark.parametrize(
    "window",
    [Window(None, None), Window(T0, None, 2), Window(None, T0), Window(T0, T0 + timedelta(1), 3)],
)
def test_v1_sends_only_what_the_seeds_body_declares(window: Window) -> None:
    client = _client(api_version="v1", organization_id="69cb1ecc-f8e8-439b-8077-a4b7fd45e87f")
    method, payload = client._page_request(window, 2, 50)

    body = payload["json"]
    assert method == "POST" and set(body) <= V1_BODY
    assert body["pageInfo"] == {"currentPage": 2, "pageSize": 50}
    assert ("startTime" in body) == (window.start is not None)
    assert ("endTime" in body) == (window.end is not None)
    assert "type" not in body  # all types: the field is optional, and left out


@pytest.mark.parametrize("window", [Window(None, None), Window(T0, None, 2), Window(None, T0)])
def test_v2_always_sends_the_three_parameters_its_page_requires(window: Window) -> None:
    client = _client(api_version="v2")
    client.clock.observe("Mon, 30 Nov 2026 02:00:00 GMT")
    method, payload = client._page_request(window, 1, 100)

    params = payload["params"]
    assert method == "GET" and params["type"] == 0
    start, end = parse_api_time(params["startTime"]), parse_api_time(params["finishTime"])
    assert start == (window.start or V2_FLOOR)
    # An open end is the latest the service's time can be: Date rounds down to the second.
    assert end == window.end or end >= datetime(2026, 11, 30, 2, 0, 1, tzinfo=UTC)


def test_v2_keeps_a_configured_type() -> None:
    _method, payload = _client(api_version="v2", job_type=1)._page_request(Window(T0, None), 1, 10)
    assert payload["params"]["type"] == 1


def test_before_any_answer_the_open_end_is_a_day_past_this_machines_clock() -> None:
    latest = ServiceClock().latest()
    assert latest > datetime.now(UTC) + timedelta(hours=23)


# ---------------------------------------------------------------------- a 400 that names fields
def _answer(status: int, body: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body if isinstance(body, bytes) else orjson.dumps(body)
    return response


def test_the_fields_a_400_names_in_each_known_shape() -> None:
    aspnet = {
        "title": "One or more validation errors occurred.",
        "errors": {"startTime": ["The startTime field is required."], "$.type": ["bad"]},
    }
    assert named_fields(_answer(400, aspnet)) == ["startTime"]
    avepoint = {"statusCode": 400, "message": "'pageSize' must be between 1 and 100.", "field": "x"}
    assert named_fields(_answer(400, avepoint)) == ["x", "pageSize"]
    assert named_fields(_answer(400, b"The finishTime field is required.")) == ["finishTime"]
    assert named_fields(_answer(400, {"message": "Bad request."})) == []


# ---------------------------------------------------------------------- documented answer shapes
def test_a_job_listed_three_times_in_a_page_is_one_job() -> None:
    jobs = [{"jobId": "A", "n": 1}, {"jobId": "B"}, {"jobId": "A", "n": 2}, {"jobId": "A"}]
    page = _page({"totalCount": 2, "jobs": jobs}, 1, "page 1")
    assert page.jobs == [{"jobId": "A", "n": 1}, {"jobId": "B"}]


@pytest.mark.parametrize("header", ["0", "Mon, 30 Nov 2026 00:59:00 GMT"])
def test_retry_after_zero_or_a_past_date_waits_the_backoff_not_zero(
    header: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = _answer(429, {"statusCode": 429})
    response.headers["Retry-After"] = header
    response.headers["Date"] = "Mon, 30 Nov 2026 01:00:00 GMT"
    error = transient_answer(response)
    assert error is not None and error.retry_after == 0.0

    monkeypatch.setattr("avepoint_dynamics.retries.random.uniform", lambda low, high: high)
    policy = RetryPolicy(backoff_s=0.5)
    wait = retries.retrying(policy, HostContact(), lambda: "page 1").wait
    outcome = types.SimpleNamespace(exception=lambda: error)
    state = cast(RetryCallState, types.SimpleNamespace(attempt_number=3, outcome=outcome))
    assert wait(state) == 2.0  # 0.5 * 2**2: the backoff, as if the service had said nothing

    told = Transient("HTTP 429", retry_after=7.0)
    outcome.exception = lambda: told
    assert wait(state) == 7.0  # a real Retry-After is honoured


# ---------------------------------------------------------------------- a silently capped page size
class _CappingService:
    """Serves 250 jobs, newest first, at most 30 a page whatever is asked (no error)."""

    def __init__(self) -> None:
        self.query = JobsQuery(base_url="https://api.example", page_size=100, max_concurrency=2)
        self.clock = ServiceClock()
        self.requests_sent = 0
        self.start_exclusive = False
        self.jobs = [
            {"jobId": f"J{n:04d}", "startTime": f"2026-11-30T01:{n // 60:02d}:{n % 60:02d}Z"}
            for n in range(250)
        ][::-1]

    def fetch_page(self, window: Window, number: int, page_size: int | None = None) -> JobsPage:
        self.requests_sent += 1
        size = min(30, page_size or self.query.page_size)
        chosen = self.jobs[(number - 1) * size : number * size]
        return JobsPage(jobs=chosen, total=len(self.jobs), number=number, window=window)

    def close(self) -> None:
        pass


def test_a_page_size_capped_in_silence_is_noticed_and_every_job_read() -> None:
    service = _CappingService()
    with PagePool(2, StopSignal()) as pool:
        reader = WindowReader(service, pool)
        ids = [job["jobId"] for jobs in reader.read(Window(None, T0)) for job in jobs]
    assert sorted(ids) == sorted(job["jobId"] for job in service.jobs)
    assert reader.stats.rereads == 0 and service.requests_sent == 9  # ceil(250 / 30)


# ---------------------------------------------------------------------- the safe way
def _query(**settings: Any) -> JobsQuery:
    return JobsQuery(base_url="https://api.example", **settings)


def test_while_the_reading_is_unknown_the_start_reads_come_first_then_every_running_job() -> None:
    new_jobs = Window(T0, T0 + timedelta(hours=1))
    followed = [Window(T0 - timedelta(days=1), T0 - timedelta(days=1) + timedelta(seconds=1))]
    plan = plan_reads("unknown", _query(), new_jobs, followed)
    start = plan_reads("start", _query(), new_jobs, followed)

    assert plan.windows == [*start.windows, Window(None, None, 2)]
    assert plan.follow_only == set() and plan.seen_last == Window(None, None, 2)
    assert plan.start_ranges is None  # a job's start says nothing of the window it came from
    assert plan.coverage == [Window(None, None)]  # the running read sees every open job
    assert plan.cursor == new_jobs.end


def test_the_safe_way_under_a_status_filter() -> None:
    new_jobs = Window(T0, T0 + timedelta(hours=1))
    final = plan_reads("unknown", _query(status=3), new_jobs, [])
    assert final.windows == [Window(T0, new_jobs.end, 3), Window(None, None, 2)]
    assert final.follow_only == {Window(None, None, 2)}  # running: only followed, never loaded

    running = plan_reads("unknown", _query(status=2), new_jobs, [])
    assert running.windows == [Window(None, None, 2)] and running.follow_only == set()


def test_followed_jobs_no_read_returned_are_looked_for_by_finish_under_the_safe_way() -> None:
    rescue = plan_rescue("unknown", _query(), [T0 - timedelta(minutes=5)], T0)
    assert rescue.windows == [Window(T0 - timedelta(minutes=5), T0)]


def test_check_deep_says_what_the_safe_way_costs() -> None:
    findings = ServiceFindings("2026-11-30T01:00:00Z", "v2", "https://api.example")
    findings.running_jobs, findings.probe_requests = 401, 19
    line = findings.lines()[-1]
    assert "plus the 401 running jobs read without a window (+5 requests at page size 100)" in line
    assert "plus 19 requests to check again on each run" in line
    assert findings.safe_way(50).count("+9 requests at page size 50") == 1
    assert not [text for text in findings.lines(safe_way=False) if "safe way" in text]


@pytest.mark.parametrize(
    ("shown", "step"),
    [
        (["2022-08-19T03:12:43.823Z", "2022-08-19T03:12:43.92Z"], timedelta(milliseconds=1)),
        (["2026-11-30T01:00:00Z", "2026-11-30T01:00:00.1234567Z"], timedelta(microseconds=1)),
        (["2026-11-30T01:00:00Z", "2026-11-30T01:00:01+00:00"], timedelta(seconds=1)),
        ([], timedelta(microseconds=1)),
    ],
)
def test_the_window_ends_past_the_newest_job_by_the_step_times_are_shown_at(
    shown: list[str], step: timedelta
) -> None:
    assert shown_resolution([{"startTime": text} for text in shown], "startTime") == step
