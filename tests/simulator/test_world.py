"""The live world: jobs arrive, finish, are purged and patched; the ground truth follows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from avepoint_simulator import Simulator
from avepoint_simulator.times import parse_time

from ..waiting import wait_until
from .conftest import SimClient


def now_ticks() -> int:
    return parse_time(dt.datetime.now(dt.UTC).isoformat())


def test_add_jobs(fresh_client: SimClient, fresh_sim: Simulator) -> None:
    before = fresh_sim.world.ground_truth()
    added = fresh_sim.world.add_jobs(10, running=3)
    assert len(added) == 10 and fresh_sim.world.total() == 510
    starts = [parse_time(j["startTime"]) for j in added]
    assert starts == sorted(starts) and len(set(starts)) == 10
    assert starts[0] > parse_time(before[-1]["startTime"]) and starts[-1] < now_ticks()
    assert [j["status"] for j in added[-3:]] == [2, 2, 2]
    assert all(j["finishTime"] is None for j in added[-3:])
    assert all(j["status"] != 2 and j["finishTime"] for j in added[:-3])
    assert fresh_sim.world.ground_truth() == before + added
    assert fresh_client.v1({"pageInfo": {"pageSize": 10}}).json()["jobs"] == list(reversed(added))
    org = "11111111-2222-4333-8444-555555555555"
    mine = fresh_sim.world.add_jobs(4, organization_id=org)
    assert {j["organizationId"] for j in mine} == {org}
    assert fresh_client.v1({"organizationId": org}).json()["totalCount"] == 4


def test_add_jobs_spread_over_hours(avepoint_simulator_factory: Any) -> None:
    """A night of jobs: starts spread over hours after the newest job, real durations, none in the future."""
    anchor = dt.datetime.now(dt.UTC) - dt.timedelta(hours=12)
    sim = avepoint_simulator_factory(jobs=200, now=anchor, history_days=5)
    newest = parse_time(sim.world.ground_truth()[-1]["startTime"])

    added = sim.world.add_jobs(60, running=2, spread_hours=10)

    starts = [parse_time(j["startTime"]) for j in added]
    hour = 3600 * 10**7
    assert starts == sorted(starts) and len(set(starts)) == 60
    assert newest < starts[0] and starts[-1] < now_ticks()
    assert starts[-1] - starts[0] > 8 * hour  # spread over the night, not the last milliseconds
    finished = [j for j in added if j["status"] != 2]
    assert all(j["status"] == 2 and j["finishTime"] is None for j in added[-2:])
    assert len(finished) > 45  # the night's early jobs are done; the newest still run
    assert all(parse_time(j["finishTime"]) <= now_ticks() for j in finished)
    # durations like the history's (minutes to hours), none cut short at "now"
    hours = sorted(j["durationHours"] for j in finished)
    assert hours[len(hours) // 2] > 0.05
    finishes = [j["finishTime"] for j in finished]
    assert len(set(finishes)) == len(finishes)
    with pytest.raises(ValueError, match="spread_hours"):
        sim.world.add_jobs(1, spread_hours=0)


def test_finish_running(fresh_client: SimClient, fresh_sim: Simulator) -> None:
    world = fresh_sim.world
    running = [j for j in world.ground_truth() if j["status"] == 2]
    assert running
    added = world.add_jobs(2, running=2)
    one = world.finish_running([added[0]["jobId"]], status=7)
    assert len(one) == 1 and one[0]["status"] == 7 and one[0]["finishTime"]
    assert (
        fresh_client.v1({"status": 2, "pageInfo": {"pageSize": 100}}).json()["totalCount"]
        == len(running) + 1
    )
    finished = world.finish_running()
    assert len(finished) == len(running) + 1
    for job in finished:
        assert job["status"] in (3, 4, 7)
        seconds = (parse_time(job["finishTime"]) - parse_time(job["startTime"])) / 1e7
        assert seconds > 0 and abs(job["durationHours"] - seconds / 3600) <= 0.00005 + 1e-9
        assert job["totalRecord"] == sum(
            job[f"{p}Record"] for p in ("successful", "failed", "skipped", "warning")
        )
        assert world.get(job["jobId"]) == job
    assert fresh_client.v1({"status": 2}).json()["totalCount"] == 0
    assert world.finish_running() == []
    with pytest.raises(KeyError):
        world.finish_running(["DCIB2020010100000000000000"])


def test_purge_oldest(fresh_client: SimClient, fresh_sim: Simulator) -> None:
    before = fresh_sim.world.ground_truth()
    assert fresh_sim.world.purge_oldest(100) == 100
    assert fresh_sim.world.ground_truth() == before[100:]
    assert fresh_client.v1().json()["totalCount"] == 400
    assert fresh_sim.world.get(before[0]["jobId"]) is None
    assert fresh_sim.world.get(before[100]["jobId"]) == before[100]
    oldest = fresh_client.v1({"pageInfo": {"currentPage": 40, "pageSize": 10}}).json()["jobs"]
    assert oldest[-1] == before[100]


def test_patch_and_drop_fields(fresh_client: SimClient, fresh_sim: Simulator) -> None:
    world = fresh_sim.world
    truth = world.ground_truth()
    target, other = truth[-10], truth[-11]
    world.patch_job(target["jobId"], startTime="not a date", totalRecord="abc", surprise={"x": 1})
    world.drop_field(other["jobId"], "jobId")
    page = fresh_client.v1({"pageInfo": {"pageSize": 20}}).json()["jobs"]
    served = page[9]
    assert served["startTime"] == "not a date" and served["totalRecord"] == "abc"
    assert served["surprise"] == {"x": 1} and served["jobId"] == target["jobId"]
    assert "jobId" not in page[10] and page[10]["startTime"] == other["startTime"]
    assert world.ground_truth()[-10] == served
    renamed = world.patch_job(target["jobId"], jobId="CUSTOM-1")
    assert world.get("CUSTOM-1") == renamed and world.get(target["jobId"]) == renamed
    with pytest.raises(KeyError):
        world.patch_job("nope", status=3)


def test_ground_truth_over_http(fresh_client: SimClient, fresh_sim: Simulator) -> None:
    truth = fresh_client.request("GET", "/_simulator/ground_truth").json()
    assert truth == fresh_sim.world.ground_truth()
    changed = fresh_client.request("POST", "/_simulator/jobs", json={"add": 3, "running": 1}).json()
    assert len(changed["added"]) == 3 and changed["total"] == 503
    finished = fresh_client.request(
        "POST", "/_simulator/jobs", json={"finish_running": True}
    ).json()
    assert finished["finished"] and all(j["status"] != 2 for j in finished["finished"])
    purged = fresh_client.request("POST", "/_simulator/jobs", json={"purge": 3}).json()
    assert purged["purged"] == 3 and purged["total"] == 500


def test_a_night_later_over_http(fresh_client: SimClient, fresh_sim: Simulator) -> None:
    """The bench's nightly schedule: the service's clock a day ahead, a night of jobs added over HTTP."""
    newest = parse_time(fresh_sim.world.ground_truth()[-1]["startTime"])
    moved = fresh_client.request("POST", "/_simulator/faults", json={"clock_offset_s": 86_400})
    assert moved.json()["clock_offset_s"] == 86_400

    night = fresh_client.request(
        "POST", "/_simulator/jobs", json={"add": 40, "running": 1, "spread_hours": 8}
    ).json()["added"]

    hour = 3600 * 10**7
    starts = [parse_time(j["startTime"]) for j in night]
    assert len(night) == 40 and starts == sorted(starts) and newest < starts[0]
    assert starts[-1] - starts[0] > 6 * hour  # over the night, not the last milliseconds
    assert starts[-1] > now_ticks() + 23 * hour  # on the service's clock, a day ahead of ours
    assert night[-1]["status"] == 2 and night[-1]["finishTime"] is None
    with pytest.raises(Exception, match="spread_hours"):
        fresh_sim.world.add_jobs(1, spread_hours=-1)
    refused = fresh_client.request("POST", "/_simulator/jobs", json={"add": 1, "spread_hours": 0})
    assert refused.status_code == 400 and "spread_hours" in refused.json()["error"]


def test_paging_is_exhaustive_while_world_is_still(
    fresh_client: SimClient, fresh_sim: Simulator
) -> None:
    truth = fresh_sim.world.ground_truth()
    lower, upper = truth[100]["startTime"], truth[400]["startTime"]
    got = fresh_client.all_v1({"startTime": lower, "endTime": upper}, page_size=7)
    expected = [
        j for j in truth if parse_time(lower) <= parse_time(j["startTime"]) < parse_time(upper)
    ]
    assert sorted(j["jobId"] for j in got) == sorted(j["jobId"] for j in expected)
    assert len(got) == len({j["jobId"] for j in got})


def test_arrivals_clock(avepoint_simulator_factory: Any) -> None:
    sim = avepoint_simulator_factory(jobs=10, arrivals_per_minute=600)  # one every 0.1 s
    wait_until(lambda: sim.world.total() >= 14, "the clock to add four jobs")
    truth = sim.world.ground_truth()
    assert any(j["status"] == 2 for j in truth[-2:])
    assert any(j["status"] != 2 for j in truth[10:-3])


# How fast deep pages are served is measured by bench/simulator_bench.py, not asserted here: the
# timeout only bounds a simulator that scans instead of seeking.
@pytest.mark.timeout(120)
def test_million_jobs_serve_deep_pages() -> None:
    with Simulator(jobs=1_000_000, seed=1) as sim:
        client = SimClient(sim)
        org = sim.world.organizations[1]["id"]
        answer = client.v1(
            {"organizationId": org, "pageInfo": {"currentPage": 900, "pageSize": 100}}
        ).json()
        assert len(answer["jobs"]) == 100 and answer["totalCount"] > 90_000
        for page in (1, 5_000, 10_000):
            assert (
                len(client.v1({"pageInfo": {"currentPage": page, "pageSize": 100}}).json()["jobs"])
                == 100
            )


def test_add_jobs_refuses_a_future_anchor(avepoint_simulator_factory: Any) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    sim = avepoint_simulator_factory(jobs=20, now=future, history_days=0.5)
    with pytest.raises(ValueError, match="future"):
        sim.world.add_jobs(1)


def test_empty_history(avepoint_simulator_factory: Any) -> None:
    sim = avepoint_simulator_factory(jobs=0)
    client = SimClient(sim)
    assert client.v1().json() == {
        "totalCount": 0,
        "pageIndex": 1,
        "pageSize": 10,
        "nextLink": None,
        "jobs": [],
    }
    assert len(sim.world.add_jobs(3)) == 3 and client.v1().json()["totalCount"] == 3
