"""Honest counts and the run log: what a run read, what reached the destination, one row per run.

The counts are checked against the world's changes between runs (jobs added, running jobs finished), never
against what the code under test computes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from avepoint_dynamics import RUNS_TABLE
from avepoint_pipelines.load.pipeline import run_load
from avepoint_pipelines.load.run_log import RunCounts
from avepoint_simulator import Simulator

from .cli_runs import cli
from .conftest import Loader

#: A failing run in these tests fails after two attempts, not eight.
RETRIES = {"max_attempts": "2"}


def _runs(path: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(path), read_only=True) as con:
        cursor = con.execute(f"SELECT * FROM avepoint.{RUNS_TABLE} ORDER BY load_id")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _loads(path: Path) -> list[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT load_id FROM avepoint._dlt_loads WHERE status = 0").fetchall()
    return sorted(row[0] for row in rows)


def test_load_json_reports_what_was_read_and_what_was_loaded(
    sim: Simulator, tmp_path: Path
) -> None:
    first = cli(["load", "--json"], sim, tmp_path, settings=RETRIES)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    total = len(sim.world.ground_truth())
    assert report["outcome"] == "ok" and report["exit_code"] == 0
    assert report["jobs_inserted"] == total and report["jobs_updated"] == 0
    assert report["jobs_read"] >= total and report["pages"] >= total // 100
    assert report["requests"] >= report["pages"] and report["token_requests"] >= 1
    assert report["cursor_before"] is None and report["cursor_after"] is not None
    # Learnt side by side with the first run's reading, which then read by start (learning.py).
    assert report["window_reading"] == "start"

    # The world moves: 7 new jobs, 2 running jobs finish; every other running job is unchanged.
    running = [job["jobId"] for job in sim.world.ground_truth() if job["status"] == 2]
    assert len(running) > 2
    sim.world.add_jobs(7)
    sim.world.finish_running(running[:2])
    second = cli(["load", "--json"], sim, tmp_path, settings=RETRIES)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["jobs_inserted"] == 7
    assert again["jobs_updated"] == 2
    assert again["jobs_deleted"] == 0
    # Read is not loaded: the unchanged running jobs were read again and not loaded.
    assert again["jobs_read"] >= 7 + len(running)
    assert again["cursor_before"] == report["cursor_after"]
    assert again["window_reading"] == "start"  # what the first run learnt

    # One row per run, in the same load as the data: the row names a completed load.
    runs = _runs(tmp_path / "jobs.duckdb")
    assert [row["load_id"] for row in runs] == [report["load_id"], again["load_id"]]
    assert [row["load_id"] for row in runs] == _loads(tmp_path / "jobs.duckdb")
    assert runs[1]["jobs_inserted"] == 7 and runs[1]["outcome"] == "ok"
    assert runs[1]["exit_code"] == 0 and runs[1]["requests"] == again["requests"]


def test_a_run_that_fails_writes_no_row_and_says_so_in_json(sim: Simulator, tmp_path: Path) -> None:
    assert cli(["load"], sim, tmp_path, settings=RETRIES).returncode == 0
    sim.set_faults(error_rate=1.0)
    failed = cli(["load", "--json"], sim, tmp_path, settings=RETRIES)
    assert failed.returncode == 4, failed.stderr
    report = json.loads(failed.stdout)
    assert report["outcome"] == "failed" and report["exit_code"] == 4
    assert report["load_id"] is None
    assert len(_runs(tmp_path / "jobs.duckdb")) == 1  # the first run's only


def test_python_api_counts_and_run_row(loader: Loader, sim: Simulator) -> None:
    counts = RunCounts()
    run_load(loader.source(), loader.target(), counts)
    assert counts.record is not None
    assert counts.record.jobs_inserted == len(sim.world.ground_truth())
    sim.world.add_jobs(3)
    again = RunCounts()
    run_load(loader.source(), loader.target(), again)
    assert again.record is not None and again.record.jobs_inserted == 3
    rows = loader.query(f"SELECT jobs_inserted, outcome FROM {RUNS_TABLE} ORDER BY load_id")
    assert rows == [(len(sim.world.ground_truth()) - 3, "ok"), (3, "ok")]


def test_plain_dlt_run_writes_the_row_too(loader: Loader, sim: Simulator) -> None:
    """Through ``pipeline.run`` alone: the row lands with the data; the counts only a runner knows stay empty."""
    import dlt

    pipeline = dlt.pipeline(
        "plain_run",
        destination=dlt.destinations.duckdb(str(loader.duckdb_path)),
        dataset_name="avepoint",
        pipelines_dir=str(loader.workdir / "plain"),
    )
    info = pipeline.run(loader.source(), loader_file_format="parquet")
    rows = loader.query(f"SELECT load_id, outcome, jobs_inserted, jobs_read FROM {RUNS_TABLE}")
    assert rows == [(info.loads_ids[0], "loaded", None, len(sim.world.ground_truth()))]


@pytest.mark.unit
def test_run_record_round_trips_through_a_row() -> None:
    from datetime import UTC, datetime

    from avepoint_dynamics import RunRecord
    from avepoint_dynamics.run_log import runs_table

    record = RunRecord(tenant="a", jobs_read=5, started_at=datetime(2026, 1, 1, tzinfo=UTC))
    (row,) = runs_table(record).to_pylist()
    assert RunRecord.from_row(row) == record
    assert record.as_dict()["started_at"] == "2026-01-01T00:00:00Z"


def test_alert_reports_a_silent_loader_from_the_run_log(sim: Simulator, tmp_path: Path) -> None:
    assert cli(["load"], sim, tmp_path, settings=RETRIES).returncode == 0
    with duckdb.connect(str(tmp_path / "jobs.duckdb"), read_only=True) as con:
        (view_rows,) = con.execute("SELECT count(*) FROM avepoint.run_log").fetchone() or (0,)
    assert view_rows == 1

    fresh = cli(["alert", "--stale-hours", "100000", "--json"], sim, tmp_path, settings=RETRIES)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    (tenant,) = json.loads(fresh.stdout)["runs"]
    assert tenant["stale"] is False and tenant["tenant"] is None

    # 0.0001 h = 0.36 s: the run that just ended is older than that once the clock moved on.
    silent = cli(
        ["alert", "--stale-hours", "100000", "--run-stale-hours", "0.0001"],
        sim,
        tmp_path,
        settings=RETRIES,
    )
    assert silent.returncode == 6, silent.stdout + silent.stderr
    assert silent.stdout.startswith("stale: loader: no successful run for ")


def test_the_report_shows_the_last_completed_load(loader: Loader, tmp_path: Path) -> None:
    from avepoint_pipelines.analytics.report import write_report
    from avepoint_pipelines.analytics.report_data import read_report_data

    loader.load()
    loader.load()
    from datetime import UTC

    ((newest,),) = loader.query(f"SELECT max(finished_at) FROM {RUNS_TABLE}")
    data = read_report_data(loader.duckdb_path)
    assert data.runs == 2 and data.last_run_at == newest
    page = write_report(str(loader.duckdb_path), str(tmp_path / "report.html")).read_text()
    assert "Last completed load (UTC; 2 in the run log)" in page
    assert f"{newest.astimezone(UTC):%Y-%m-%d %H:%M}" in page


def test_counts_are_the_tenants_own_in_a_shared_table(loader: Loader, sim: Simulator) -> None:
    total = len(sim.world.ground_truth())
    for tenant in ("alpha", "bravo"):
        counts = RunCounts()
        run_load(loader.source(tenant=tenant), loader.target(), counts)
        assert counts.record is not None and counts.record.tenant == tenant
        assert (counts.record.jobs_inserted, counts.record.jobs_updated) == (total, 0)
    rows = loader.query(f"SELECT tenant, jobs_inserted FROM {RUNS_TABLE} ORDER BY tenant")
    assert rows == [("alpha", total), ("bravo", total)]
