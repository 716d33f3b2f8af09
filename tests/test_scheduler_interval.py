"""dlt's scheduler interval: when a run may join one, it is a bounded backfill of exactly that interval.

The unit tier checks the decision (join or not, clipping, an empty or missing interval); the integration
test runs the CLI as a scheduler would, with dlt's ``DLT_INTERVAL_START`` / ``DLT_INTERVAL_END``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from avepoint_dynamics.errors import ConfigError
from avepoint_dynamics.interval import join_interval, scheduler_interval
from avepoint_dynamics.query import JobsQuery, build_query
from avepoint_simulator import Simulator
from dlt.common.configuration.container import Container
from dlt.extract.incremental.context import TimeIntervalContext

from .cli_runs import cli
from .conftest import Loader
from .expected import api_time, assert_rows_equal

DAY = datetime(2026, 9, 1, tzinfo=UTC)


def _query(**args: str) -> JobsQuery:
    values: dict[str, Any] = {
        "base_url": "https://example.invalid",
        "api_version": "v1",
        "page_size": 100,
        "job_type": None,
        "status": None,
        "organization_id": None,
        "object_type": None,
        "initial_start_time": None,
        "end_time": None,
        "max_concurrency": 4,
        "lookback_minutes": 10,
        **args,
    }
    return build_query(**values)


@pytest.mark.unit
def test_without_leave_to_join_an_interval_nothing_changes() -> None:
    with Container().injectable_context(TimeIntervalContext(interval=(DAY, DAY + timedelta(1)))):
        assert scheduler_interval(None) is None  # dlt's own incrementals do not join either
        assert scheduler_interval(False) is None


@pytest.mark.unit
def test_an_interval_set_in_code_is_joined_in_utc() -> None:
    paris = datetime(2026, 9, 1, 4, tzinfo=timezone(timedelta(hours=2)))  # 02:00 UTC
    with Container().injectable_context(TimeIntervalContext(interval=(paris, DAY + timedelta(1)))):
        start, end = scheduler_interval(True) or (None, None)
    assert start == datetime(2026, 9, 1, 2, tzinfo=UTC) and start.tzinfo == UTC
    assert end == DAY + timedelta(1)


@pytest.mark.unit
def test_dlts_process_wide_flag_joins_when_the_source_leaves_it_unset() -> None:
    context = TimeIntervalContext(
        interval=(DAY, DAY + timedelta(1)), allow_external_schedulers=True
    )
    with Container().injectable_context(context):
        assert scheduler_interval(None) == (DAY, DAY + timedelta(1))
        assert scheduler_interval(False) is None  # the source's own key wins, as an incremental's


@pytest.mark.unit
def test_leave_to_join_without_an_interval_is_a_config_error_naming_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DLT_INTERVAL_START", raising=False)
    monkeypatch.delenv("DLT_INTERVAL_END", raising=False)
    with (
        Container().injectable_context(TimeIntervalContext()),
        pytest.raises(ConfigError) as raised,
    ):
        scheduler_interval(True)
    assert raised.value.key == "allow_external_schedulers"
    assert "DLT_INTERVAL_START" in str(raised.value)


@pytest.mark.unit
def test_an_empty_interval_is_a_scheduled_run() -> None:
    # Airflow 3 gives a manually triggered run a zero-length data interval.
    with Container().injectable_context(TimeIntervalContext(interval=(DAY, DAY))):
        assert scheduler_interval(True) is None


@pytest.mark.unit
def test_the_configured_range_clips_the_interval_as_dlt_clips_incrementals() -> None:
    interval = (DAY, DAY + timedelta(days=1))
    joined = join_interval(_query(), interval)
    assert (joined.initial_start_time, joined.end_time, joined.is_backfill) == (*interval, True)

    later = join_interval(_query(initial_start_time="2026-09-01T06:00:00Z"), interval)
    assert later.initial_start_time == DAY + timedelta(hours=6)
    now = join_interval(_query(end_time="now"), interval)
    assert now.end_time == DAY + timedelta(
        days=1
    )  # "now" is the service's: the interval's end is sooner

    with pytest.raises(ConfigError) as raised:
        join_interval(_query(initial_start_time="2026-10-01"), interval)
    assert raised.value.key == "initial_start_time"


def test_dlts_interval_env_vars_make_a_load_a_bounded_backfill_of_that_day(
    sim: Simulator, tmp_path: Path
) -> None:
    first = cli(["load"], sim, tmp_path)
    assert first.returncode == 0, first.stderr
    loader = Loader(sim, tmp_path, pipeline_name="avepoint_dynamics")
    cursor = loader.state()["cursor"]

    # The night goes on: running jobs finish (some inside the day), new ones arrive after the cursor.
    sim.world.finish_running()
    arrived = sim.world.add_jobs(20)
    truth = sim.world.ground_truth()
    day = [j for j in truth if DAY <= api_time(j["startTime"]) < DAY + timedelta(1)]  # type: ignore[operator]
    assert day, "the simulator's history covers the day"
    interval = {
        "DLT_INTERVAL_START": "2026-09-01T00:00:00Z",
        "DLT_INTERVAL_END": "2026-09-02T00:00:00Z",
    }

    (tmp_path / "ignored").mkdir()
    ignored = cli(
        ["load"], sim, tmp_path / "ignored", interval
    )  # not allowed to join: a scheduled run
    assert ignored.returncode == 0, ignored.stderr
    assert "bounded backfill" not in ignored.stderr
    assert Loader(sim, tmp_path / "ignored", pipeline_name="avepoint_dynamics").state()["cursor"]

    join = {"SOURCES__AVEPOINT_DYNAMICS__ALLOW_EXTERNAL_SCHEDULERS": "true"}
    joined = cli(["load"], sim, tmp_path, {**join, **interval})
    assert joined.returncode == 0, joined.stderr
    assert "joined the scheduler's interval" in joined.stderr

    rows = loader.rows()
    assert_rows_equal(
        {j["jobId"]: rows[j["jobId"]] for j in day}, day
    )  # the day, as the API has it now
    assert not {j["jobId"] for j in arrived} & set(rows)  # nothing after the interval
    assert loader.state()["cursor"] == cursor  # the cursor stays

    # Leave to join, but no interval: one line naming the key, exit 2, nothing read.
    none = cli(["load"], sim, tmp_path, join)
    assert none.returncode == 2, none.stderr
    (line,) = none.stderr.splitlines()
    assert "allow_external_schedulers" in line and "DLT_INTERVAL_START" in line

    again = cli(
        ["load"], sim, tmp_path, {"DLT_ALLOW_EXTERNAL_SCHEDULERS": "true", **interval}
    )  # dlt's own flag
    assert again.returncode == 0, again.stderr
    assert loader.query("SELECT count(*) FROM jobs")[0][0] == len(rows)  # the day once, not twice
    assert json.dumps(loader.state()["cursor"]) == json.dumps(cursor)
