"""Faults: latency, rate limits, 5xx, drops, truncation, churn, broken servers, malformed answers."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from typing import Any

import pytest
import requests
from avepoint_simulator import Faults, Simulator

from ..waiting import wait_until
from .conftest import SimClient


def test_latency_applies_to_each_request_and_overlaps(client: SimClient, sim: Simulator) -> None:
    client.token  # noqa: B018 - fetch the token before timing
    sim.set_faults(latency_ms=200)
    started = time.monotonic()
    assert client.v1().status_code == 200
    assert time.monotonic() - started >= 0.2
    clients = [SimClient(sim) for _ in range(4)]
    sim.set_faults(latency_ms=0)
    for c in clients:
        c._token = client.token
        assert c.v1().status_code == 200  # each holds an open connection: no handshake below
    sim.set_faults(latency_ms=1_000)
    sim.reset_stats()
    ready = threading.Barrier(len(clients))

    def call(c: SimClient) -> None:
        ready.wait()
        c.v1()

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The server counted all four inside their latency at once: in parallel, not in sequence.
    assert sim.stats()["max_in_flight"] == len(clients)


def test_token_endpoint_only_gets_latency(client: SimClient, sim: Simulator) -> None:
    sim.set_faults(error_rate=1.0, latency_ms=100)
    started = time.monotonic()
    assert client.token_response().status_code == 200
    assert time.monotonic() - started >= 0.1
    assert client.v1().status_code in (500, 502, 503)
    sim.set_faults(faults_on_token=True)
    assert client.token_response().status_code in (500, 502, 503)


def test_server_errors(client: SimClient, sim: Simulator) -> None:
    client.token  # noqa: B018
    sim.set_faults(error_rate=1.0)
    seen = set()
    for _ in range(30):
        response = client.v2({"pageSize": 5})
        seen.add(response.status_code)
        body = response.json()
        assert body["statusCode"] == response.status_code and body["requestId"] and body["traceId"]
    assert seen == {500, 502, 503}
    sim.set_faults(error_rate=0.5)
    codes = [client.v1().status_code for _ in range(60)]
    assert 10 < codes.count(200) < 50
    stats = sim.stats()["requests"]
    assert sum(v for k, v in stats.items() if k.startswith("v2jobs 5")) == 30


def test_rate_limit_bucket_retry_after_seconds(client: SimClient, sim: Simulator) -> None:
    client.token  # noqa: B018
    sim.set_faults(rate_limit_per_second=2)
    codes = [client.v1() for _ in range(6)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and codes[0].status_code == 200
    response = limited[0]
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()
    assert set(body) == {"statusCode", "message", "requestId", "timestamp", "traceId"}
    assert body["statusCode"] == 429
    polled: list[int] = []

    def served() -> bool:
        polled.append(client.v1().status_code)
        return polled[-1] == 200

    wait_until(served, "the bucket to refill", interval_s=0.1)  # about a second at 2 a second
    assert set(polled[:-1]) <= {429}
    assert sim.stats()["requests"]["GetJobs 429"] == len(limited) + len(polled) - 1


def test_rate_limit_burst_with_http_date(client: SimClient, sim: Simulator) -> None:
    client.token  # noqa: B018
    sim.set_faults(rate_limit_burst=1.0, retry_after_format="date", retry_after_s=3)
    response = client.v2()
    assert response.status_code == 429
    when = email.utils.parsedate_to_datetime(response.headers["Retry-After"])
    assert when.timestamp() > time.time()
    sim.set_faults(retry_after_format="none")
    response = client.v2()
    assert response.status_code == 429 and "Retry-After" not in response.headers


def test_max_in_flight(client: SimClient, sim: Simulator) -> None:
    sim.set_faults(max_in_flight=2, latency_ms=300)
    token = client.token
    results: list[int] = []

    def call() -> None:
        c = SimClient(sim)
        c._token = token
        results.append(c.v1().status_code)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(429) >= 1 and results.count(200) >= 2
    assert sim.stats()["max_in_flight"] >= 3


def test_drop_closes_without_answer(client: SimClient, sim: Simulator) -> None:
    client.token  # noqa: B018
    sim.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        client.v1()
    sim.set_faults(drop_rate=0.0)
    assert client.v1().status_code == 200  # a new connection works
    assert sim.stats()["requests"]["GetJobs drop"] == 1


def test_truncation_is_a_complete_200_with_bad_json(client: SimClient, sim: Simulator) -> None:
    client.token  # noqa: B018
    sim.set_faults(truncate_rate=1.0)
    response = client.v1({"pageInfo": {"pageSize": 50}})
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    assert response.content.startswith(b'{"totalCount"')


@pytest.mark.parametrize("kind", ["not_json", "no_job_list", "html"])
def test_malformed_responses(client: SimClient, sim: Simulator, kind: str) -> None:
    client.token  # noqa: B018
    sim.set_faults(malformed_response=kind)
    response = client.v1()
    assert response.status_code == 200
    if kind == "not_json":
        with pytest.raises(ValueError):  # requests' JSONDecodeError may come from simplejson
            response.json()
    elif kind == "html":
        assert response.headers["Content-Type"].startswith("text/html")
    else:
        body = response.json()
        assert "jobs" not in body and body["totalCount"] == 2_000


def test_repeat_page_and_total_offset(client: SimClient, sim: Simulator) -> None:
    first = client.v1({"pageInfo": {"currentPage": 1, "pageSize": 10}}).json()
    sim.set_faults(repeat_page=True, total_offset=7)
    third = client.v1({"pageInfo": {"currentPage": 3, "pageSize": 10}}).json()
    assert third["jobs"] == first["jobs"]
    assert third["pageIndex"] == 3 and third["totalCount"] == 2_007


def test_churn_per_page(fresh_client: SimClient, fresh_sim: Simulator) -> None:
    before = fresh_sim.world.ground_truth()
    fresh_sim.set_faults(churn_per_page=5)
    first = fresh_client.v1({"pageInfo": {"pageSize": 10}}).json()
    second = fresh_client.v1({"pageInfo": {"currentPage": 2, "pageSize": 10}}).json()
    after = fresh_sim.world.ground_truth()
    assert first["totalCount"] == second["totalCount"] == 500 == len(after)
    assert after[:-10] == before[10:]  # the 10 oldest purged
    new_ids = {j["jobId"] for j in after[-10:]}
    assert not new_ids & {j["jobId"] for j in before}
    assert {j["jobId"] for j in first["jobs"][:5]} <= new_ids


def test_seeded_faults_replay(avepoint_simulator_factory: Any) -> None:
    outcomes = []
    for _ in range(2):
        sim = avepoint_simulator_factory(
            jobs=20, seed=42, faults=Faults(error_rate=0.3, rate_limit_burst=0.2)
        )
        c = SimClient(sim)
        c.token  # noqa: B018
        outcomes.append([c.v1().status_code for _ in range(25)])
    assert outcomes[0] == outcomes[1]
    assert len(set(outcomes[0])) > 1


def test_faults_validation(sim: Simulator) -> None:
    with pytest.raises(TypeError):
        sim.set_faults(no_such_fault=1)
    with pytest.raises(ValueError):
        sim.set_faults(error_rate=2)
    with pytest.raises(ValueError):
        Faults(sort="random")
    with pytest.raises(ValueError):
        Faults(malformed_response="xml")


def test_control_over_http(client: SimClient, sim: Simulator) -> None:
    response = client.request(
        "POST", "/_simulator/faults", json={"latency_ms": 5, "total_offset": 1}
    )
    assert response.status_code == 200 and response.json()["total_offset"] == 1
    assert sim.faults.latency_ms == 5
    assert client.request("POST", "/_simulator/faults", json={"bogus": 1}).status_code == 400
    assert client.v1().json()["totalCount"] == 2_001
    stats = client.request("GET", "/_simulator/stats").json()
    assert stats["requests"]["GetJobs 200"] == 1 and stats["token_requests"] == 1
    info = client.request("GET", "/_simulator/info").json()
    assert info["client_id"] == sim.client_id and info["base_url"] == sim.base_url
    assert client.request("POST", "/_simulator/reset_stats").json()["jobs_requests"] == 0


def test_a_stalled_tls_client_does_not_block_others(client: SimClient, sim: Simulator) -> None:
    import socket

    stalled = socket.create_connection((sim.host, sim.port))  # connects, never says hello
    try:
        # A server that waited on the stalled handshake would leave this request unanswered.
        assert client.v1(timeout=10).status_code == 200
    finally:
        stalled.close()


def test_world_changes_while_clients_page(fresh_client: SimClient, fresh_sim: Simulator) -> None:
    token = fresh_client.token
    errors: list[BaseException] = []
    stop = threading.Event()

    def page() -> None:
        c = SimClient(fresh_sim)
        c._token = token
        try:
            while not stop.is_set():
                assert c.v1({"pageInfo": {"currentPage": 3, "pageSize": 50}}).status_code == 200
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=page) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(20):
        fresh_sim.world.add_jobs(5, running=2)
        fresh_sim.world.finish_running()
        fresh_sim.world.purge_oldest(5)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert fresh_sim.world.total() == 500
    # The server thread counts a request out just after its last byte is sent.
    wait_until(lambda: fresh_sim.stats()["in_flight"] == 0, "the server to count every request out")
