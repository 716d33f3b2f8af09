"""Any dlt destination: the same load gives the same rows in DuckDB, Parquet files and PostgreSQL.

Each destination is loaded through ``run_load`` (what ``avepoint-dynamics load --destination NAME`` runs),
with its settings from dlt config env vars, as a user would set them. The second run starts from an empty
local working folder, so its incremental state can only come from the destination.
"""

from __future__ import annotations

import glob
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from avepoint_dynamics import avepoint_dynamics
from avepoint_pipelines.load.pipeline import Target, make_pipeline, run_load
from avepoint_simulator import Simulator

from .conftest import Loader, PostgresServer, credentials_for
from .expected import COLUMN_OF, assert_rows_equal

DESTINATIONS = ["duckdb", "filesystem", "postgres"]
#: The columns of the API's fields and the two names: what every destination must hold alike.
DATA_COLUMNS = [*COLUMN_OF.values(), "status_name", "type_name"]


# ---------------------------------------------------------------------------------------- loading
@dataclass
class Landing:
    """One destination: how to load into it and how to read back what it holds, by job id."""

    destination: str
    target: Target
    read: Callable[[], dict[str, dict[str, Any]]]
    column_types: Callable[[], dict[str, str]]
    #: ``SELECT count(*), count(DISTINCT job_id)`` over everything the destination holds.
    counts: Callable[[], tuple[int, int]]


COUNTS = "SELECT count(*), count(DISTINCT job_id) FROM {}"


def _duckdb_counts(path: Path | None, relation: str) -> tuple[int, int]:
    with duckdb.connect(str(path) if path else ":memory:", read_only=path is not None) as con:
        total, distinct = con.execute(COUNTS.format(relation)).fetchall()[0]
        return int(total), int(distinct)


def _duckdb_table(path: Path | None, sql: str) -> dict[str, dict[str, Any]]:
    """Rows by job id from a DuckDB file, or from Parquet files through an in-memory DuckDB (None)."""
    with duckdb.connect(str(path) if path else ":memory:", read_only=path is not None) as con:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return {
            row[names.index("job_id")]: dict(zip(names, row, strict=True))
            for row in cursor.fetchall()
        }


def landing_for(
    destination: str,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    dataset: str = "avepoint",
) -> Landing:
    target = Target(
        destination=destination,
        dataset_name=dataset,
        pipeline_name=f"avepoint_{destination}",
        duckdb_path=str(workdir / "jobs.duckdb"),
        pipelines_dir=str(workdir / "pipelines"),
    )
    if destination == "duckdb":
        path = workdir / "jobs.duckdb"

        def duckdb_types() -> dict[str, str]:
            with duckdb.connect(str(path), read_only=True) as con:
                return dict(
                    con.execute(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = ? AND table_name = 'jobs'",
                        [dataset],
                    ).fetchall()
                )

        return Landing(
            destination,
            target,
            lambda: _duckdb_table(path, f"SELECT * FROM {dataset}.jobs"),
            duckdb_types,
            lambda: _duckdb_counts(path, f"{dataset}.jobs"),
        )
    if destination == "filesystem":
        bucket = workdir / "bucket"
        monkeypatch.setenv("DESTINATION__FILESYSTEM__BUCKET_URL", bucket.as_uri())
        files = str(bucket / dataset / "jobs" / "*.parquet")
        # Files are named {load_id}.{file_id}.parquet; load ids are Unix times.
        loads = (
            f"(SELECT *, CAST(regexp_extract(filename, '(\\d+\\.\\d+)\\.\\w+\\.parquet$', 1) AS DOUBLE)"
            f" AS load_id FROM read_parquet('{files}', filename = true))"
        )

        def latest_rows() -> dict[str, dict[str, Any]]:
            # Plain files take no merge: dlt appends each load, so a job's latest load is its state.
            return _duckdb_table(
                None,
                f"SELECT * FROM {loads} "
                "QUALIFY row_number() OVER (PARTITION BY job_id ORDER BY load_id DESC) = 1",
            )

        def parquet_types() -> dict[str, str]:
            import pyarrow.parquet as pq

            schema = pq.read_schema(sorted(glob.glob(files))[0])
            return {field.name: str(field.type) for field in schema}

        return Landing(
            destination,
            target,
            latest_rows,
            parquet_types,
            lambda: _duckdb_counts(None, loads),
        )
    if destination == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", server.url)
        import psycopg2

        def postgres_rows() -> dict[str, dict[str, Any]]:
            with psycopg2.connect(server.url) as con, con.cursor() as cur:
                cur.execute(f"SELECT * FROM {dataset}.jobs")
                names = [d[0] for d in cur.description]
                return {
                    row[names.index("job_id")]: dict(zip(names, row, strict=True))
                    for row in cur.fetchall()
                }

        def postgres_types() -> dict[str, str]:
            with psycopg2.connect(server.url) as con, con.cursor() as cur:
                cur.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = 'jobs'",
                    (dataset,),
                )
                return dict(cur.fetchall())

        def postgres_counts() -> tuple[int, int]:
            with psycopg2.connect(server.url) as con, con.cursor() as cur:
                cur.execute(COUNTS.format(f"{dataset}.jobs"))
                total, distinct = cur.fetchone()
                return int(total), int(distinct)

        return Landing(destination, target, postgres_rows, postgres_types, postgres_counts)
    raise ValueError(destination)


def source_for(sim: Simulator) -> Any:
    return avepoint_dynamics(
        credentials=credentials_for(sim),
        base_url=sim.base_url,
        ca_bundle=sim.ca_file,
        lookback_minutes=0,
    )


def jobs_requests(sim: Simulator) -> int:
    return int(sim.stats()["jobs_requests"])


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")


# ---------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("destination", DESTINATIONS)
def test_load_then_incremental_rerun_with_state_from_the_destination(
    destination: str,
    sim: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    # a dataset of its own: the PostgreSQL cluster is the session's, shared with other modules' tests
    landing = landing_for(destination, tmp_path, monkeypatch, request, dataset="rerun")

    run_load(source_for(sim), landing.target)

    full = jobs_requests(sim)
    assert_rows_equal(landing.read(), sim.world.ground_truth())
    running_before = {j["jobId"] for j in sim.world.ground_truth() if j["status"] == 2}
    assert running_before, "the simulator should start with jobs in progress"
    sim.world.finish_running()
    new = sim.world.add_jobs(30, running=5)
    # A new machine, a wiped worker: nothing local. The state must come back from the destination.
    shutil.rmtree(tmp_path / "pipelines")
    sim.reset_stats()

    run_load(source_for(sim), landing.target)

    rows = landing.read()
    truth = sim.world.ground_truth()
    assert_rows_equal(rows, truth)
    total, distinct = landing.counts()
    assert distinct == len(truth) == 3_030
    if destination == "filesystem":
        # Plain files take no merge (dlt appends): the rerun added what it read, nothing more.
        assert total == 3_000 + len(new) + len(running_before)
    else:
        assert total == distinct  # merged on job_id: finished jobs replaced their running rows
    assert {j["jobId"] for j in new} <= rows.keys()
    for job_id in running_before:
        assert rows[job_id]["status"] in (3, 4, 7) and rows[job_id]["finish_time"] is not None
    # one page of new jobs + one per open-job window, not the 30 pages of history
    assert jobs_requests(sim) <= 3 + len(running_before)
    assert jobs_requests(sim) < full / 5


def test_all_three_destinations_hold_the_same_typed_rows(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    landings = [
        landing_for(name, tmp_path / name, monkeypatch, request, dataset="same_rows")
        for name in DESTINATIONS
    ]
    for landing in landings:
        run_load(source_for(sim), landing.target)
    sim.world.finish_running()
    sim.world.add_jobs(20, running=3)
    for landing in landings:
        run_load(source_for(sim), landing.target)

    held = {landing.destination: landing.read() for landing in landings}
    reference = held["duckdb"]
    assert len(reference) == 3_020
    for name, rows in held.items():
        assert rows.keys() == reference.keys(), name
        for job_id, row in reference.items():
            for column in DATA_COLUMNS:
                # timestamps compare as instants: DuckDB, Parquet and psycopg2 give aware datetimes
                assert rows[job_id][column] == row[column], (name, job_id, column)
    assert_rows_equal(reference, sim.world.ground_truth())

    types = {landing.destination: landing.column_types() for landing in landings}
    assert types["duckdb"]["start_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["postgres"]["start_time"] == "timestamp with time zone"
    assert types["filesystem"]["start_time"] == "timestamp[us, tz=UTC]"
    assert (types["duckdb"]["total_record"], types["postgres"]["total_record"]) == (
        "BIGINT",
        "bigint",
    )
    assert types["filesystem"]["total_record"] == "int64"
    assert types["postgres"]["duration_hours"] == "double precision"


def test_dlt_dataset_reads_the_loaded_jobs(loader: Loader) -> None:
    """dlt's own data access works in our install (sqlglot >= 30.22 broke ``pipeline.dataset()``)."""
    loader.load()
    pipeline = make_pipeline(loader.target())

    # fetchall(), not .df() (pandas is not a dependency) nor .arrow() (dlt 1.31 calls DuckDB's
    # fetch_arrow_table, which duckdb 2 removed)
    jobs = pipeline.dataset()["jobs"].select("job_id", "status").fetchall()
    failed = pipeline.dataset()("SELECT count(*) AS n FROM jobs WHERE status = 4").fetchall()

    assert len(jobs) == 3_000
    assert {job_id for job_id, _ in jobs} == {
        job["jobId"] for job in loader.sim.world.ground_truth()
    }
    assert failed[0][0] == sum(job["status"] == 4 for job in loader.sim.world.ground_truth())
