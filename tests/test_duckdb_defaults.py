"""A plain ``pipeline.run(avepoint_dynamics())`` into DuckDB loads in bounded memory, unless the user says otherwise.

DuckDB's own defaults let its buffer pool grow with the rows merged (docs/performance.md: 274 MB at
100,000 jobs, 450 MB at 1,000,000); the source sets ``memory_limit`` 64 MB (96 MB when the merge must
deduplicate) and one thread where the user configured nothing (``sources/avepoint_dynamics/defaults.py``). These tests read DuckDB's settings through
the pipeline's own connection after a real run, and the rows against the simulator's world.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import dlt
import pytest
from avepoint_dynamics import avepoint_dynamics
from avepoint_pipelines.load.pipeline import make_pipeline, run_load
from avepoint_simulator import Faults, Simulator
from dlt.pipeline.exceptions import PipelineStepFailed

from .conftest import Loader, credentials_for
from .expected import assert_rows_equal
from .test_readme import duckdb_rows
from .test_reliability import _declared_unique, assert_exact_after_faults


@pytest.fixture(autouse=True)
def no_active_pipeline() -> None:
    """As in a fresh process: no pipeline of an earlier test is dlt's active one.

    The source raises the limit when the active pipeline holds a pending package; a pipeline another test
    left active (and pending) would decide these tests' limits.
    """
    from dlt.common.configuration.container import Container
    from dlt.common.pipeline import PipelineContext

    context = Container()[PipelineContext]
    if context.is_active():
        context.deactivate()


def plain_run(sim: Simulator, tmp_path: Path, destination: Any) -> Any:
    """What a user's script does: a pipeline, the source, ``run``."""
    pipeline = dlt.pipeline(
        pipeline_name="plain",
        destination=destination,
        dataset_name="avepoint",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    source = avepoint_dynamics(
        credentials=credentials_for(sim), base_url=sim.base_url, ca_bundle=sim.ca_file
    )
    pipeline.run(source).raise_on_failed_jobs()
    return pipeline


def duckdb_settings(pipeline: Any) -> tuple[str, int]:
    with pipeline.sql_client() as client:
        ((memory, threads),) = client.execute_sql(
            "SELECT current_setting('memory_limit'), current_setting('threads')"
        )
    return str(memory), int(threads)


def test_a_plain_run_loads_with_duckdb_bounded(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a fresh process: the limit only rises within one (an earlier test may have deduplicated).
    monkeypatch.delenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", raising=False)
    path = tmp_path / "jobs.duckdb"

    pipeline = plain_run(sim, tmp_path, dlt.destinations.duckdb(credentials=str(path)))

    assert duckdb_settings(pipeline) == (
        "61.0 MiB",
        1,
    )  # DuckDB's way of saying 64MB: rows proven unique
    assert_rows_equal(duckdb_rows(path), sim.world.ground_truth())


def test_the_users_duckdb_settings_win(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", '{"memory_limit": "1GB", "threads": 2}'
    )
    path = tmp_path / "jobs.duckdb"

    pipeline = plain_run(sim, tmp_path, dlt.destinations.duckdb(credentials=str(path)))

    assert duckdb_settings(pipeline) == ("953.6 MiB", 2)
    assert_rows_equal(duckdb_rows(path), sim.world.ground_truth())


def test_the_database_file_is_where_dlt_puts_it_without_credentials(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The defaults hold only global_config under destination.duckdb.credentials: dlt still names the
    # file after the pipeline, in the working directory, as without them.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", raising=False)

    pipeline = plain_run(sim, tmp_path, "duckdb")

    assert duckdb_settings(pipeline) == ("61.0 MiB", 1)
    assert_rows_equal(duckdb_rows(tmp_path / "plain.duckdb"), sim.world.ground_truth())


@pytest.mark.unit
def test_a_global_config_in_the_users_secrets_toml_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from avepoint_dynamics.defaults import DUCKDB_GLOBAL_CONFIG_ENV, set_duckdb_defaults
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    monkeypatch.delenv(DUCKDB_GLOBAL_CONFIG_ENV, raising=False)
    secrets = Container()[PluggableRunContext].providers["secrets.toml"]
    with secrets.preserve():  # type: ignore[attr-defined]
        dlt.secrets["destination.duckdb.credentials.global_config"] = {"memory_limit": "2GB"}
        set_duckdb_defaults()
        assert DUCKDB_GLOBAL_CONFIG_ENV not in os.environ

    set_duckdb_defaults()  # nothing configured anywhere: the source's settings
    assert json.loads(os.environ[DUCKDB_GLOBAL_CONFIG_ENV]) == {
        "memory_limit": "64MB",
        "threads": 1,
    }


@pytest.mark.unit
def test_a_run_that_declares_duplicates_loads_with_the_deduplicating_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyarrow as pa
    from avepoint_dynamics.claims import DuplicateClaim
    from avepoint_dynamics.defaults import DUCKDB_GLOBAL_CONFIG_ENV, set_duckdb_defaults

    monkeypatch.delenv(DUCKDB_GLOBAL_CONFIG_ENV, raising=False)
    set_duckdb_defaults()
    claim = DuplicateClaim()
    table = pa.table({"job_id": ["a", "b"]})

    claim.rows(table, proven=True)
    assert json.loads(os.environ[DUCKDB_GLOBAL_CONFIG_ENV])["memory_limit"] == "64MB"
    claim.rows(table, proven=False)  # a window read again: dlt's merge runs ROW_NUMBER()
    assert json.loads(os.environ[DUCKDB_GLOBAL_CONFIG_ENV])["memory_limit"] == "96MB"

    set_duckdb_defaults()  # a run starting now (another tenant's thread) must not lower it
    assert json.loads(os.environ[DUCKDB_GLOBAL_CONFIG_ENV])["memory_limit"] == "96MB"


@pytest.mark.unit
def test_a_run_whose_duplicates_are_found_at_the_end_raises_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyarrow as pa
    from avepoint_dynamics.claims import DuplicateClaim
    from avepoint_dynamics.defaults import DUCKDB_GLOBAL_CONFIG_ENV, set_duckdb_defaults

    monkeypatch.delenv(DUCKDB_GLOBAL_CONFIG_ENV, raising=False)
    set_duckdb_defaults()
    claim = DuplicateClaim()
    claim.rows(pa.table({"job_id": ["a", "b"]}), proven=True)
    claim.rows(pa.table({"job_id": ["b"]}), proven=True)  # each window distinct, the run not

    assert len(list(claim.final())) == 1  # the claim withdrawn
    assert json.loads(os.environ[DUCKDB_GLOBAL_CONFIG_ENV])["memory_limit"] == "96MB"


@pytest.mark.unit
def test_the_users_value_is_not_raised_when_the_merge_deduplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from avepoint_dynamics.defaults import (
        DUCKDB_GLOBAL_CONFIG_ENV,
        load_must_deduplicate,
        set_duckdb_defaults,
    )

    users = '{"memory_limit": "64MB", "threads": 1}'  # the docs' example, spaces and all
    monkeypatch.setenv(DUCKDB_GLOBAL_CONFIG_ENV, users)
    set_duckdb_defaults()
    load_must_deduplicate()
    assert os.environ[DUCKDB_GLOBAL_CONFIG_ENV] == users


@pytest.mark.unit
def test_a_package_left_pending_loads_with_the_deduplicating_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # dlt loads a pending package before the source's rows, so before the source can say they are unique.
    from avepoint_dynamics.defaults import DUCKDB_GLOBAL_CONFIG_ENV, set_duckdb_defaults

    monkeypatch.delenv(DUCKDB_GLOBAL_CONFIG_ENV, raising=False)
    pipeline = dlt.pipeline(
        pipeline_name="pending",
        destination=dlt.destinations.duckdb(credentials=str(tmp_path / "jobs.duckdb")),
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    set_duckdb_defaults()
    assert json.loads(os.environ[DUCKDB_GLOBAL_CONFIG_ENV])["memory_limit"] == "64MB"

    pipeline.extract([{"job_id": "a"}], table_name="jobs")  # extracted, never loaded
    set_duckdb_defaults()
    assert json.loads(os.environ[DUCKDB_GLOBAL_CONFIG_ENV])["memory_limit"] == "96MB"


# A history read while it changes: every window is read again in time slices, so the run cannot claim
# unique rows and dlt's merge deduplicates with ROW_NUMBER(). From ~100,000 staged rows on, that pass
# needs ~44 MB DuckDB cannot spill; 60,000 jobs read about twice stage ~120,000 rows.
DEDUPLICATING_JOBS = 60_000


def test_a_load_that_must_deduplicate_fits_the_sources_duckdb_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", raising=False)
    with Simulator(jobs=DEDUPLICATING_JOBS, seed=5, faults=Faults(churn_per_page=1)) as sim:
        plain_run(sim, tmp_path, dlt.destinations.duckdb(credentials=str(tmp_path / "jobs.duckdb")))

        loader = Loader(sim, tmp_path, pipeline_name="plain")
        assert _declared_unique(loader) is False  # the merge did deduplicate
        assert json.loads(os.environ["DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG"]) == {
            "memory_limit": "96MB",  # raised while the rows were read, before the load
            "threads": 1,
        }
        assert_exact_after_faults(sim, loader)


def test_a_package_that_ran_out_of_duckdb_memory_loads_on_the_next_run(tmp_path: Path) -> None:
    # What a pipeline under the old 40 MB default was left with: a pending package whose merge fails on
    # every retry. The next run with the default settings finishes it before it reads anything new.
    with Simulator(jobs=DEDUPLICATING_JOBS, seed=5, faults=Faults(churn_per_page=1)) as sim:
        loader = Loader(sim, tmp_path)
        with pytest.raises(PipelineStepFailed, match="Out of Memory"):
            run_load(
                loader.source(), dataclasses.replace(loader.target(), duckdb_memory_limit="40MB")
            )
        assert loader.query("SELECT count(*) FROM jobs") == [(0,)]

        sim.set_faults(churn_per_page=0)
        loader.load()

        assert _declared_unique(loader) is True  # this run's own rows were proven unique
        assert_exact_after_faults(sim, loader)


def test_run_load_leaves_duckdb_memory_to_the_source(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI's path (run_load, --duckdb-memory-limit auto): 64MB for rows proven unique, as a plain run.
    monkeypatch.delenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", raising=False)
    loader = Loader(sim, tmp_path)
    loader.load()

    assert _declared_unique(loader) is True
    assert duckdb_settings(make_pipeline(loader.target())) == ("61.0 MiB", 1)
    assert_rows_equal(duckdb_rows(loader.duckdb_path), sim.world.ground_truth())


def test_run_load_with_the_users_memory_limit_uses_it(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", raising=False)
    loader = Loader(sim, tmp_path)
    target = dataclasses.replace(loader.target(), duckdb_memory_limit="200MB")
    run_load(loader.source(), target)

    assert duckdb_settings(make_pipeline(target)) == ("190.7 MiB", 1)
    assert_rows_equal(duckdb_rows(loader.duckdb_path), sim.world.ground_truth())
