"""The jobs source against the simulator over real HTTPS, loading a real DuckDB file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from avepoint_dynamics import ApiError, AvePointError, ConfigError
from avepoint_simulator import Simulator

from .conftest import Loader, config_env
from .expected import api_time, assert_rows_equal
from .waiting import wait_until


def jobs_requests(sim: Simulator) -> int:
    return int(sim.stats()["jobs_requests"])


def test_full_load_equals_ground_truth_field_by_field(sim: Simulator, loader: Loader) -> None:
    loader.load(page_size=50)

    truth = sim.world.ground_truth()
    assert len(truth) == 3_000
    assert_rows_equal(loader.rows(), truth)
    (count, distinct) = loader.query("SELECT count(*), count(DISTINCT job_id) FROM jobs")[0]
    assert count == distinct == 3_000


def test_columns_are_typed_timestamps_with_time_zone(loader: Loader) -> None:
    loader.load()

    types = dict(
        loader.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'avepoint' AND table_name = 'jobs'"
        )
    )
    assert types["start_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["finish_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["total_record"] == "BIGINT"
    assert types["duration_hours"] == "DOUBLE"
    assert types["status_name"] == "VARCHAR"


def test_rerun_with_nothing_new_fetches_little_and_duplicates_nothing(
    sim: Simulator, loader: Loader
) -> None:
    loader.load()
    full = jobs_requests(sim)
    sim.reset_stats()

    loader.load()

    assert jobs_requests(sim) <= 1 + len(loader.state()["open_jobs"])
    assert jobs_requests(sim) < full / 5
    (count, distinct) = loader.query("SELECT count(*), count(DISTINCT job_id) FROM jobs")[0]
    assert count == distinct == 3_000


def test_new_jobs_only_are_fetched_and_running_ones_get_their_final_state(
    sim: Simulator, loader: Loader
) -> None:
    loader.load()
    running_before = {j["jobId"] for j in sim.world.ground_truth() if j["status"] == 2}
    assert running_before, "the simulator should start with jobs in progress"
    sim.world.finish_running()
    new = sim.world.add_jobs(30, running=5)
    sim.reset_stats()

    loader.load()

    rows = loader.rows()
    assert {j["jobId"] for j in new} <= rows.keys()
    for job_id in running_before:
        assert rows[job_id]["status"] in (3, 4, 7)
        assert rows[job_id]["finish_time"] is not None
    assert jobs_requests(sim) <= 3 + len(running_before)
    assert_rows_equal(rows, sim.world.ground_truth())
    assert len(loader.state()["open_jobs"]) == 5


def test_a_job_running_for_days_is_updated_without_rereading_history(
    sim: Simulator, loader: Loader
) -> None:
    truth = sim.world.ground_truth()
    old = _started_days_ago(truth, 10)  # days before the newest jobs, within the 30 days followed
    assert api_time(old["startTime"]) < datetime.now(UTC) - timedelta(days=3)  # type: ignore[operator]
    sim.world.patch_job(old["jobId"], status=2, finishTime=None, durationHours=None)
    loader.load()
    assert loader.rows()[old["jobId"]]["status"] == 2
    assert old["jobId"] in loader.state()["open_jobs"]

    finished_at = _finish(sim, old, status=4, hours=96.0)
    sim.reset_stats()
    loader.load()

    row = loader.rows()[old["jobId"]]
    assert (row["status"], row["status_name"], row["duration_hours"]) == (4, "failed", 96.0)
    assert row["finish_time"] == api_time(finished_at)
    assert old["jobId"] not in loader.state()["open_jobs"]
    # one page for the new window, one per open-job window: not the weeks in between
    assert jobs_requests(sim) <= 2 + len(loader.state()["open_jobs"]) + 5


def _started_days_ago(truth: list[dict[str, Any]], days: float) -> dict[str, Any]:
    """The first job that started at most ``days`` before the newest one."""
    newest = api_time(truth[-1]["startTime"])
    assert newest is not None
    limit = newest - timedelta(days=days)
    return next(job for job in truth if api_time(job["startTime"]) >= limit)  # type: ignore[operator]


def _finish(sim: Simulator, job: dict[str, Any], status: int, hours: float) -> str:
    """End a running job in the simulator ``hours`` after its start; returns its API finishTime."""
    started = api_time(job["startTime"])
    assert started is not None
    finished_at = (started + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sim.world.patch_job(job["jobId"], status=status, finishTime=finished_at, durationHours=hours)
    return finished_at


def test_the_windows_of_open_jobs_are_requested_together(tmp_path: Path) -> None:
    # A scheduled run reads one window per cluster of jobs still open at the last run; one after the
    # other, each would cost a round trip of its own (here 100 ms) before the new jobs are even asked for.
    with Simulator(jobs=3_000, seed=11, latency_ms=100, history_days=28, running=0) as sim:
        loader = Loader(sim, tmp_path)
        truth = sim.world.ground_truth()
        # days apart, long before the newest jobs: too far apart to be read as one span
        old = [_started_days_ago(truth, days) for days in (25, 18, 11, 4)]
        for job in old:
            sim.world.patch_job(job["jobId"], status=2, finishTime=None, durationHours=None)
        loader.load()
        assert {job["jobId"] for job in old} <= set(loader.state()["open_jobs"])

        for job in old:
            _finish(sim, job, status=3, hours=1.0)
        sim.reset_stats()
        loader.load()

        # the four old windows and the new one: their first pages were in flight at the same time
        assert sim.stats()["max_in_flight"] >= len(old) + 1
        assert_rows_equal(loader.rows(), sim.world.ground_truth())
        assert not {job["jobId"] for job in old} & set(loader.state()["open_jobs"])


@pytest.mark.parametrize(
    ("args", "keep"),
    [
        ({"job_type": 2}, lambda j: j["type"] == 2),
        ({"job_type": "backup"}, lambda j: j["type"] == 1),
        ({"status": 4}, lambda j: j["status"] == 4),
        ({"object_type": 2}, lambda j: j["objectType"] == 2),
    ],
)
def test_each_filter_reaches_the_api(
    sim: Simulator, loader: Loader, args: dict[str, Any], keep: Any
) -> None:
    loader.load(**args)

    expected = [j for j in sim.world.ground_truth() if keep(j)]
    assert 0 < len(expected) < 3_000
    assert_rows_equal(loader.rows(), expected)


def test_organization_filter(sim: Simulator, loader: Loader) -> None:
    truth = sim.world.ground_truth()
    organization = truth[0]["organizationId"]

    loader.load(organization_id=organization.upper())

    assert_rows_equal(loader.rows(), [j for j in truth if j["organizationId"] == organization])


def test_v2_generation_loads_the_same_jobs(sim: Simulator, loader: Loader) -> None:
    loader.load(api_version="v2")

    assert_rows_equal(loader.rows(), sim.world.ground_truth())
    assert sim.stats()["requests"].get("v2jobs 200", 0) > 0
    assert sim.stats()["requests"].get("GetJobs 200", 0) == 0


def test_draft_wrapper_loads_the_same_jobs(loader: Loader, tmp_path: Any) -> None:
    with Simulator(jobs=700, seed=5, wrapper="draft") as draft:
        other = Loader(draft, tmp_path / "draft")
        other.load()
        assert_rows_equal(other.rows(), draft.world.ground_truth())


def test_oldest_first_order_loads_the_same_jobs(tmp_path: Any) -> None:
    with Simulator(jobs=900, seed=6, sort="oldest") as oldest:
        other = Loader(oldest, tmp_path / "oldest")
        other.load(page_size=30)
        assert_rows_equal(other.rows(), oldest.world.ground_truth())


def test_backfill_bounds_are_half_open_to_the_microsecond_and_leave_state_alone(
    sim: Simulator, loader: Loader
) -> None:
    loader.load()
    state_before = loader.state()
    truth = sim.world.ground_truth()
    fractional = [j for j in truth if "." in j["startTime"]]
    start_job, end_job = fractional[100], fractional[400]
    start, end = api_time(start_job["startTime"]), api_time(end_job["startTime"])
    assert start is not None and end is not None

    backfill = Loader(sim, loader.workdir / "backfill", pipeline_name="avepoint_backfill")
    backfill.load(initial_start_time=start.isoformat(), end_time=end.isoformat())

    got = backfill.rows()
    expected = [j for j in truth if start <= api_time(j["startTime"]) < end]  # type: ignore[operator]
    assert_rows_equal(got, expected)
    assert start_job["jobId"] in got and end_job["jobId"] not in got
    left = backfill.state()
    assert "cursor" not in left  # a backfill never moves the incremental cursor
    assert left.pop("service_time")  # the service's clock, read at the start of the run
    assert left == {  # and follows nothing: every job of the window was finished
        "filters": {"status": None},
        "open_jobs": {},
        "open_fingerprints": {},
        "rejected_jobs": {},
        "rejected_since": {},
        "rejected_windows": {},
        "rejected_unfollowed": {},
        "abandoned_jobs": {},
        "abandoned_count": 0,
    }
    assert loader.state() == state_before


def test_fractional_seconds_sort_as_times_not_strings(sim: Simulator, loader: Loader) -> None:
    # "…:00.5Z" < "…:00Z" as text: a string cursor would drop the later job of such a pair.
    loader.load()
    pair = sim.world.add_jobs(2)
    whole = api_time(pair[0]["startTime"])
    assert whole is not None
    whole = whole.replace(microsecond=0)
    sim.world.patch_job(pair[0]["jobId"], startTime=whole.strftime("%Y-%m-%dT%H:%M:%SZ"))
    sim.world.patch_job(pair[1]["jobId"], startTime=whole.strftime("%Y-%m-%dT%H:%M:%S") + ".5Z")
    # Both must start before the next run's frozen window end (the service's clock, whole seconds).
    later = whole.timestamp() + 1
    wait_until(lambda: sim.clock.seconds() >= later, "the service's clock to pass the pair")

    loader.load()

    rows = loader.rows()
    assert rows[pair[0]["jobId"]]["start_time"] == whole
    assert rows[pair[1]["jobId"]]["start_time"] == whole + timedelta(milliseconds=500)


def test_new_api_fields_arrive_as_columns(sim: Simulator, loader: Loader) -> None:
    job = sim.world.ground_truth()[10]
    sim.world.patch_job(job["jobId"], retentionPolicy="P30D", extraCounts={"a": 1})

    loader.load()

    rows = loader.rows()
    assert rows[job["jobId"]]["retention_policy"] == "P30D"
    assert rows[job["jobId"]]["extra_counts"] == '{"a": 1}'
    assert sum(1 for r in rows.values() if r["retention_policy"] is not None) == 1


def test_a_server_that_repeats_its_first_page_is_a_clear_error(tmp_path: Any) -> None:
    from avepoint_simulator import Faults

    with (
        Simulator(jobs=500, seed=3, faults=Faults(repeat_page=True)) as broken,
        pytest.raises(Exception) as failure,
    ):
        Loader(broken, tmp_path).load()
    error = _root(failure.value)
    assert isinstance(error, ApiError)
    assert "page 1" in str(error)


def test_a_total_that_cannot_be_reached_is_a_clear_error(tmp_path: Any) -> None:
    from avepoint_simulator import Faults

    with Simulator(jobs=500, seed=3, faults=Faults(total_offset=250)) as broken:
        with pytest.raises(Exception) as failure:
            Loader(broken, tmp_path).load()
        assert broken.stats()["jobs_requests"] < 200
    error = _root(failure.value)
    assert isinstance(error, ApiError)
    assert "cannot be reached" in str(error)


@pytest.mark.parametrize(
    ("args", "key", "says"),
    [
        ({"page_size": 0}, "page_size", "1 to 100"),
        ({"page_size": 101}, "page_size", "1 to 100"),
        ({"page_size": "ten"}, "page_size", "whole number"),
        ({"job_type": 3}, "job_type", "16 (audit backup)"),
        ({"job_type": "nightly"}, "job_type", "1 (backup)"),
        ({"organization_id": "contoso"}, "organization_id", "GUID"),
        ({"initial_start_time": "yesterday-ish"}, "initial_start_time", "ISO-8601"),
        (
            {"initial_start_time": "2024-06-02", "end_time": "2024-06-01"},
            "end_time",
            "not after",
        ),
        ({"api_version": "v3"}, "api_version", "'v1' or 'v2'"),
        ({"region": "mars", "base_url": None}, "region", "we"),
        ({"max_concurrency": 0}, "max_concurrency", "1 to 64"),
    ],
)
def test_invalid_config_fails_before_any_request(
    sim: Simulator, loader: Loader, args: dict[str, Any], key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as failure:
        loader.source(**args)

    message = str(failure.value)
    assert f"sources.avepoint_dynamics.{key}" in message and says in message
    assert "\n" not in message
    assert sim.stats()["jobs_requests"] == 0 and sim.stats()["token_requests"] == 0


def test_config_comes_from_dlt_env_vars(sim: Simulator, loader: Loader, monkeypatch: Any) -> None:
    from avepoint_dynamics import avepoint_dynamics
    from avepoint_pipelines.load.pipeline import run_load

    for name, value in config_env(sim, job_type="2", page_size="40").items():
        monkeypatch.setenv(name, value)

    run_load(avepoint_dynamics(), loader.target())

    assert_rows_equal(loader.rows(), [j for j in sim.world.ground_truth() if j["type"] == 2])


def _root(error: BaseException) -> BaseException:
    """The connector's own error under dlt's PipelineStepFailed wrappers."""
    seen = error
    while not isinstance(seen, AvePointError):
        nested = getattr(seen, "exception", None) or seen.__cause__
        if nested is None and not seen.__suppress_context__:
            nested = seen.__context__
        if nested is None or nested is seen:
            return seen
        seen = nested
    return seen
