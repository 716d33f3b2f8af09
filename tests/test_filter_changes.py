"""A run under other filters than the last run's (one-off or for good) never loses or leaves stale jobs.

Each run's table is compared with the simulator's ground truth for that run's filters: every job they
select is in the table exactly as the API serves it, and no other row is there. Runs alternate: none, F, none, F, F, none, none: a one-off narrowing (none -> F ->
none), a narrowing for good (none -> F -> F), a one-off widening (F -> none -> F) and a widening for good
(F -> none -> none), for every filter the CLI has.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from avepoint_simulator import Simulator

from .cli_runs import cli
from .conftest import Loader
from .expected import assert_rows_equal

ORG_INDEX = 1


@pytest.fixture
def world() -> Iterator[Simulator]:
    with Simulator(jobs=600, seed=25) as simulator:
        yield simulator


def _filter(sim: Simulator, name: str) -> tuple[str, str, str, Callable[[dict[str, Any]], bool]]:
    """(flag, value, config key, whether an API job is selected)."""
    if name == "status":
        return "--status", "4", "STATUS", lambda job: job["status"] == 4
    if name == "job_type":
        return "--job-type", "backup", "JOB_TYPE", lambda job: job["type"] == 1
    if name == "organization_id":
        org = sim.world.organizations[ORG_INDEX]["id"]
        return "--organization-id", org, "ORGANIZATION_ID", lambda job: job["organizationId"] == org
    assert name == "object_type"
    return "--object-type", "2", "OBJECT_TYPE", lambda job: job["objectType"] == 2


@pytest.mark.parametrize("name", ["status", "job_type", "organization_id", "object_type"])
def test_the_table_ends_equal_to_the_api_for_each_runs_filters(
    world: Simulator, tmp_path: Path, name: str
) -> None:
    flag, value, key, selected = _filter(world, name)
    loader = Loader(world, tmp_path, pipeline_name="avepoint_dynamics")
    runs = ["none", "flag", "none", "env", "flag", "none", "none"]
    for number, how in enumerate(runs, start=1):
        if number > 1:
            # Between runs: new jobs (some still running), and running ones finish.
            world.world.finish_running()
            world.world.add_jobs(40, running=6)
        args = ["load", flag, value] if how == "flag" else ["load"]
        env = {f"SOURCES__AVEPOINT_DYNAMICS__{key}": value} if how == "env" else {}
        result = cli(args, world, tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        truth = world.world.ground_truth()
        rows = loader.rows()
        wanted = truth if how == "none" else [job for job in truth if selected(job)]
        assert_rows_equal(rows, wanted)  # exactly: nothing missing, nothing stale, nothing extra
        state = json.loads(cli(["state"], world, tmp_path).stdout)
        # the state names the filters this run used, so the next run knows them
        shown = {k: v for k, v in state["filters"].items() if v is not None}
        assert len(shown) == (0 if how == "none" else 1), state["filters"]
        if number == 2:
            assert "the filters changed since the last run" in result.stderr
