"""The jobs API, v1 and v2: answers, validation, paging, windows, filters, determinism."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import requests
from avepoint_simulator import Simulator
from avepoint_simulator.times import format_ticks, parse_time

from .conftest import SimClient

JOB_FIELDS = {
    "module", "type", "jobId", "startTime", "finishTime", "durationHours", "status",
    "successfulEntity", "failedEntity", "skippedEntity", "warningEntity", "totalEntity",
    "successfulRecord", "failedRecord", "skippedRecord", "warningRecord", "totalRecord",
    "backupSize", "organizationId", "organizationName", "objectType",
}  # fmt: skip
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?Z$")


def newest_first(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(jobs, key=lambda j: (parse_time(j["startTime"]), j["jobId"]), reverse=True)


def test_v1_first_page_shape(client: SimClient, sim: Simulator) -> None:
    answer = client.v1().json()
    assert set(answer) == {"totalCount", "pageIndex", "pageSize", "nextLink", "jobs"}
    assert answer["totalCount"] == 2_000 and answer["pageIndex"] == 1 and answer["pageSize"] == 10
    assert answer["nextLink"] == "/dynamicsbackup/jobs?pageIndex=2&pageSize=10"
    truth = sim.world.ground_truth()
    assert answer["jobs"] == newest_first(truth)[:10]


def test_defaults_when_page_info_missing(client: SimClient) -> None:
    answer = client.v1({}).json()
    assert answer["pageIndex"] == 1 and answer["pageSize"] == 10 and len(answer["jobs"]) == 10


def test_jobs_are_realistic(sim: Simulator) -> None:
    truth = sim.world.ground_truth()
    assert len(truth) == 2_000
    fractions = set()
    for job in truth:
        assert set(job) == JOB_FIELDS
        assert TIME.match(job["startTime"])
        fractions.add(len(job["startTime"].partition(".")[2]))
        assert re.match(r"^DC(IB|RS|DR|RT|AB|EX)\d{22}$", job["jobId"])
        assert job["jobId"][4:18] == re.sub(r"\D", "", job["startTime"])[:14]
        assert (
            job["module"] == {1: "Customer Engagement", 2: "Unified Operations"}[job["objectType"]]
        )
        for kind in ("Entity", "Record"):
            parts = [job[f"{p}{kind}"] for p in ("successful", "failed", "skipped", "warning")]
            assert sum(parts) == job[f"total{kind}"]
        if job["status"] == 2:
            assert job["finishTime"] is None and job["durationHours"] is None
        else:
            assert TIME.match(job["finishTime"])
            seconds = (parse_time(job["finishTime"]) - parse_time(job["startTime"])) / 1e7
            assert seconds > 0 and abs(job["durationHours"] - seconds / 3600) <= 0.00005 + 1e-9
        if job["status"] == 4:
            assert job["failedEntity"] > 0 or job["totalEntity"] == 0
    assert len({j["jobId"] for j in truth}) == 2_000
    assert fractions >= {"1Z", "3Z", "7Z"} or len(fractions) >= 6
    assert {j["status"] for j in truth} >= {2, 3, 4, 7}
    assert [j["status"] for j in truth[-3:]] == [2, 2, 2]
    assert len({j["organizationId"] for j in truth}) >= 5
    assert {j["objectType"] for j in truth} == {1, 2}
    starts = [j["startTime"] for j in truth]
    assert len(set(starts)) < len(starts), "some jobs share a start time"
    span = parse_time(starts[-1]) - parse_time(starts[0])
    assert span > 90 * 86_400 * 10**7
    assert parse_time(starts[-1]) < parse_time(dt.datetime.now(dt.UTC).isoformat())


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/json; charset=utf-8",
        "application/merge+json",
        "Application/JSON;charset=UTF-8",
    ],
)
def test_v1_accepted_content_types(client: SimClient, content_type: str) -> None:
    response = client.v1(
        data=b'{"pageInfo": {"currentPage": 1, "pageSize": 2}}',
        body={},
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["jobs"]) == 2


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""]
)
def test_v1_other_content_types_are_415(client: SimClient, content_type: str) -> None:
    response = client.request(
        "POST",
        "/api/OpenApi/GetJobs",
        data=b'{"pageInfo": {}}',
        headers={**client.auth(), "Content-Type": content_type},
    )
    assert response.status_code == 415
    assert response.json()["statusCode"] == 415


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pageInfo": {"currentPage": 0}}, "pageInfo.currentPage"),
        ({"pageInfo": {"currentPage": -3}}, "pageInfo.currentPage"),
        ({"pageInfo": {"currentPage": "1"}}, "pageInfo.currentPage"),
        ({"pageInfo": {"currentPage": True}}, "pageInfo.currentPage"),
        ({"pageInfo": {"pageSize": 0}}, "pageInfo.pageSize"),
        ({"pageInfo": {"pageSize": 101}}, "pageInfo.pageSize"),
        ({"pageInfo": {"pageSize": 2.5}}, "pageInfo.pageSize"),
        ({"pageInfo": 5}, "pageInfo"),
        ({"type": 3}, "type"),
        ({"type": 64}, "type"),
        ({"type": "backup"}, "type"),
        ({"startTime": "yesterday"}, "startTime"),
        ({"startTime": "2024-13-01T00:00:00Z"}, "startTime"),
        ({"endTime": "2024-06-15T25:00:00Z"}, "endTime"),
        ({"endTime": 1718000000}, "endTime"),
        ({"status": "3"}, "status"),
        ({"status": False}, "status"),
        ({"organizationId": "not-a-guid"}, "organizationId"),
        ({"organizationId": "69cb1ecc-f8e8-439b-8077-a4b7fd45e87"}, "organizationId"),
        ({"objectType": 1.5}, "objectType"),
    ],
)
def test_v1_validation_names_the_field(client: SimClient, body: dict[str, Any], field: str) -> None:
    response = client.v1(body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["statusCode"] == 400 and error["field"] == field
    assert error["message"] and error["requestId"] and error["timestamp"] and error["traceId"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_v1_invalid_body(client: SimClient, raw: bytes) -> None:
    headers = {**client.auth(), "Content-Type": "application/json"}
    response = client.request("POST", "/api/OpenApi/GetJobs", data=raw, headers=headers)
    assert response.status_code == 400 and response.json()["field"] == "body"


def test_v1_property_names_are_case_insensitive(client: SimClient) -> None:
    answer = client.v1({"PageInfo": {"CurrentPage": 2, "PAGESIZE": 5}, "Type": 1}).json()
    assert answer["pageIndex"] == 2 and answer["pageSize"] == 5
    assert {j["type"] for j in answer["jobs"]} == {1}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"pageIndex": 0}, "pageIndex"),
        ({"pageIndex": "x"}, "pageIndex"),
        ({"pageSize": 500}, "pageSize"),
        ({"type": 5}, "type"),
        ({"startTime": "nope"}, "startTime"),
        ({"finishTime": "2024-02-30"}, "finishTime"),
        ({"status": "done"}, "status"),
        ({"organizationId": "xyz"}, "organizationId"),
    ],
)
def test_v2_validation_names_the_field(
    client: SimClient, params: dict[str, Any], field: str
) -> None:
    response = client.v2(params)
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_v2_same_answer_as_v1_and_next_links(client: SimClient, sim: Simulator) -> None:
    org = sim.world.organizations[0]["id"]
    start, end = "2020-01-01T00:00:00Z", "2100-01-01T00:00:00.5+02:00"
    v1 = client.v1(
        {
            "pageInfo": {"currentPage": 1, "pageSize": 7},
            "type": 1,
            "organizationId": org,
            "startTime": start,
            "endTime": end,
        }
    ).json()
    v2 = client.v2(
        {
            "pageIndex": 1,
            "pageSize": 7,
            "type": 1,
            "organizationId": org,
            "startTime": start,
            "finishTime": end,
        }
    ).json()
    assert v1 == v2
    seen: list[dict[str, Any]] = []
    link = v2["nextLink"]
    seen += v2["jobs"]
    while link:
        assert link.startswith("/dynamicsbackup/jobs?pageIndex=")
        page = client.request("GET", link, headers=client.auth()).json()
        seen += page["jobs"]
        link = page["nextLink"]
    expected = [
        j for j in sim.world.ground_truth() if j["type"] == 1 and j["organizationId"] == org
    ]
    assert seen == newest_first(expected)
    assert len(seen) == v2["totalCount"]


def test_page_past_the_end(client: SimClient) -> None:
    answer = client.v1({"pageInfo": {"currentPage": 999, "pageSize": 100}}).json()
    assert answer["jobs"] == [] and answer["totalCount"] == 2_000 and answer["nextLink"] is None
    last = client.v1({"pageInfo": {"currentPage": 20, "pageSize": 100}}).json()
    assert len(last["jobs"]) == 100 and last["nextLink"] is None


@pytest.mark.parametrize(
    "flt",
    [
        {"type": 2},
        {"type": 0},
        {"status": 4},
        {"status": 99},
        {"objectType": 2},
        {"status": 3, "objectType": 1, "type": 1},
        {"organizationId": "00000000-0000-0000-0000-000000000000"},
    ],
)
def test_filters_match_ground_truth(client: SimClient, sim: Simulator, flt: dict[str, Any]) -> None:
    truth = sim.world.ground_truth()
    expected = [
        j
        for j in truth
        if all(
            flt.get(k) in (None, j[k]) or (k == "type" and flt[k] == 0)
            for k in ("type", "status", "objectType")
        )
        and flt.get("organizationId") in (None, j["organizationId"])
    ]
    assert client.all_v1(flt) == newest_first(expected)


def test_filter_by_organization_upper_case(client: SimClient, sim: Simulator) -> None:
    org = sim.world.organizations[2]["id"]
    answer = client.v1({"organizationId": org.upper(), "pageInfo": {"pageSize": 100}}).json()
    assert answer["totalCount"] == sum(j["organizationId"] == org for j in sim.world.ground_truth())
    assert {j["organizationId"] for j in answer["jobs"]} == {org}


def test_window_is_half_open_on_start_time(client: SimClient, sim: Simulator) -> None:
    truth = sim.world.ground_truth()
    ticks = [parse_time(j["startTime"]) for j in truth]
    # A start time shared by several jobs, and one with 7 fractional digits.
    shared = next(t for i, t in enumerate(ticks[1:], 1) if t == ticks[i - 1])
    seven = next(t for t, j in zip(ticks, truth, strict=True) if len(j["startTime"]) == 28)
    for bound in (shared, seven):
        lower, upper = bound, bound + 3_600 * 10**7
        window = {"startTime": format_ticks(lower), "endTime": format_ticks(upper)}
        expected = [j for j, t in zip(truth, ticks, strict=True) if lower <= t < upper]
        assert client.all_v1(window) == newest_first(expected)
        # endTime equal to a job's start excludes it; one tick later includes it.
        assert all(
            parse_time(j["startTime"]) < bound
            for j in client.all_v1(
                {"endTime": format_ticks(bound), "startTime": format_ticks(bound - 10**10)}
            )
        )
        just_after = client.all_v1(
            {"startTime": format_ticks(bound), "endTime": format_ticks(bound + 1)}
        )
        assert {parse_time(j["startTime"]) for j in just_after} == {bound}
    # An 8th fractional digit rounds up: .12345671 excludes a job at .1234567 as a lower bound.
    text = format_ticks(seven)[:-1] + "1Z"
    assert all(
        parse_time(j["startTime"]) > seven
        for j in client.all_v1({"startTime": text, "endTime": format_ticks(seven + 10**9)})
    )


def test_time_formats_accepted(client: SimClient, sim: Simulator) -> None:
    truth = sim.world.ground_truth()
    middle = truth[1000]["startTime"]
    instant = parse_time(middle)
    as_dt = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=instant // 10)
    variants = [
        as_dt.strftime("%Y-%m-%dT%H:%M:%S.%f"),  # naive = UTC
        (as_dt.replace(tzinfo=dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=-5)))).isoformat(),
        as_dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z",
    ]
    counts = {client.v1({"startTime": v}).json()["totalCount"] for v in variants}
    assert len(counts) == 1
    assert client.v1({"startTime": as_dt.strftime("%Y-%m-%d")}).status_code == 200


def test_sort_oldest(avepoint_simulator_factory: Any) -> None:
    sim = avepoint_simulator_factory(jobs=300, seed=4, sort="oldest")
    client = SimClient(sim)
    assert client.all_v1({}) == sim.world.ground_truth()
    sim.set_faults(sort="newest")
    assert client.all_v1({}) == list(reversed(sim.world.ground_truth()))


def test_draft_wrapper(avepoint_simulator_factory: Any) -> None:
    sim = avepoint_simulator_factory(jobs=30, wrapper="draft")
    answer = SimClient(sim).v1({"pageInfo": {"currentPage": 1, "pageSize": 20}}).json()
    assert set(answer) == {"totalNumber", "result"}
    assert answer["totalNumber"] == 30 and len(answer["result"]) == 20


def test_determinism(avepoint_simulator_factory: Any) -> None:
    now = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    a = avepoint_simulator_factory(jobs=500, seed=9, now=now)
    b = avepoint_simulator_factory(jobs=500, seed=9, now=now)
    c = avepoint_simulator_factory(jobs=500, seed=10, now=now)
    truth = a.world.ground_truth()
    assert truth == b.world.ground_truth()
    assert truth != c.world.ground_truth()
    assert a.client_id == b.client_id
    assert SimClient(a).all_v1({}) == SimClient(b).all_v1({})
    assert parse_time(truth[-1]["startTime"]) < parse_time(now.isoformat())


def test_unknown_routes_and_methods(client: SimClient, sim: Simulator) -> None:
    assert client.request("GET", "/api/OpenApi/GetJobs", headers=client.auth()).status_code == 405
    assert client.request("GET", "/nothing").status_code == 404
    assert (
        client.request("POST", "/api/openapi/getjobs", json={}, headers=client.auth()).status_code
        == 200
    )
    requests_seen = sim.stats()["requests"]
    assert requests_seen["GetJobs 405"] == 1 and requests_seen["other 404"] == 1


def test_plain_http(avepoint_simulator_factory: Any) -> None:
    sim = avepoint_simulator_factory(jobs=20, tls=False)
    assert sim.base_url.startswith("http://") and sim.ca_file is None
    assert SimClient(sim).v2({"pageSize": 5}).json()["totalCount"] == 20


def test_pytest_plugin_fixture(avepoint_simulator: Simulator) -> None:
    assert avepoint_simulator.world.total() == 2_000
    assert SimClient(avepoint_simulator).v1().status_code == 200


def test_malformed_http_framing(client: SimClient, sim: Simulator) -> None:
    import socket
    import ssl

    context = ssl.create_default_context(cafile=sim.ca_file)
    with (
        socket.create_connection((sim.host, sim.port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"POST /api/OpenApi/GetJobs HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert tls.recv(4096).startswith(b"HTTP/1.1 400")
    assert client.request("GET", "/connect/token").status_code == 405


# ---------------------------------------------------------------------- documented shapes (issue 20)
def test_strict_get_requires_what_the_page_marks_required(
    client: SimClient, sim: Simulator
) -> None:
    sim.set_faults(strict_get=True)
    refused = client.v2({"pageIndex": 1, "pageSize": 10, "startTime": "2000-01-01T00:00:00Z"})
    assert refused.status_code == 400
    body = refused.json()
    assert body["errors"] == {
        "type": ["The type field is required."],
        "finishTime": ["The finishTime field is required."],
    }
    assert body["status"] == 400 and body["title"] == "One or more validation errors occurred."

    window = {"startTime": "2000-01-01T00:00:00Z", "finishTime": "2100-01-01T00:00:00Z"}
    served = client.v2({"pageIndex": 1, "pageSize": 10, "type": 0, **window})
    assert served.status_code == 200 and served.json()["totalCount"] == 2_000
    assert client.v1().status_code == 200  # v1 documents nothing as required


def test_a_job_repeated_in_a_page_and_a_next_link_without_the_prefix(
    client: SimClient, sim: Simulator
) -> None:
    sim.set_faults(repeat_in_page=2, next_link="short")
    answer = client.v2({"pageIndex": 1, "pageSize": 10}).json()
    ids = [job["jobId"] for job in answer["jobs"]]
    assert len(ids) == 12 and len(set(ids)) == 10 and ids[-2:] == [ids[0], ids[0]]
    assert answer["totalCount"] == 2_000
    assert answer["nextLink"] == "/jobs?pageIndex=2&pageSize=10"
    assert client.request("GET", answer["nextLink"], headers=client.auth()).status_code == 404


@pytest.mark.parametrize("oversize", ["413", "422", "500"])
def test_oversize_pages_answered_with_another_status(
    client: SimClient, sim: Simulator, oversize: str
) -> None:
    sim.set_faults(oversize_pages=oversize, max_page_size=50)
    assert client.v2({"pageIndex": 1, "pageSize": 50}).status_code == 200
    assert client.v2({"pageIndex": 1, "pageSize": 51}).status_code == int(oversize)


def test_oversize_pages_dropped(client: SimClient, sim: Simulator) -> None:
    sim.set_faults(oversize_pages="drop", max_page_size=50)
    with pytest.raises(requests.ConnectionError):
        client.v2({"pageIndex": 1, "pageSize": 51})
    assert sim.stats()["requests"].get("v2jobs drop") == 1
