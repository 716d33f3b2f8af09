"""The demo: a simulated AvePoint tenant on loopback, the real pipeline, a DuckDB file and a summary."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
from avepoint_dynamics import AvePointCredentials, avepoint_dynamics

from ..analytics.views import RUN_LOG_VIEW, VIEW_NAMES
from ..failures import EXIT_CONFIG
from ..load.pipeline import Target, default_pipelines_dir, run_load

#: The demo's night: how long it lasts and how many jobs run in it.
NIGHT_HOURS = 10
NIGHT_JOBS = 120

SQL_TO_TRY = """SELECT organization_name,
       max(finish_time) FILTER (WHERE type_name = 'backup' AND status_name = 'finished') AS last_good_backup,
       count(*) FILTER (WHERE status_name = 'failed') AS failed_jobs
FROM avepoint.jobs GROUP BY 1 ORDER BY 1;"""

REAL_TENANT = """To load a real tenant, put the app registration in .dlt/secrets.toml:

    [sources.avepoint_dynamics]
    region = "us"                 # your AvePoint data center: us, we, ne, uk, au, jp, ..., gov, fedramp
    [sources.avepoint_dynamics.credentials]
    client_id = "<app id from AvePoint Online Services>"
    client_secret = "<secret>"    # or private_key + certificate, or pfx_path + pfx_password

then run:  avepoint-dynamics check,   avepoint-dynamics check --deep,   avepoint-dynamics load"""

#: The simulator is a distribution of its own (simulator/ in the repository), not a dependency.
SIMULATOR_MISSING = (
    "error: the demo needs the AvePoint simulator, which is installed apart: "
    "pip install -e ./simulator (from the repository's root)"
)


def run_demo(args: argparse.Namespace) -> int:
    """Start the simulator, load everything, let a night pass, load again, print what landed."""
    try:
        from avepoint_simulator import Faults, Simulator
    except ModuleNotFoundError as missing:
        if missing.name != "avepoint_simulator":
            raise  # the simulator is there, one of its dependencies is not: say which
        print(SIMULATOR_MISSING, file=sys.stderr)
        return EXIT_CONFIG

    duckdb_path = os.path.abspath(args.duckdb_path)
    workdir = default_pipelines_dir("duckdb", duckdb_path)
    for leftover in (duckdb_path, duckdb_path + ".wal", workdir):
        if os.path.isdir(leftover):
            shutil.rmtree(leftover)
        elif os.path.exists(leftover):
            os.remove(leftover)
    target = Target(duckdb_path=duckdb_path, pipeline_name="avepoint_demo", pipelines_dir=workdir)

    print(f"starting the AvePoint simulator with {args.jobs:,} jobs (seed {args.seed}) ...")
    # The first load runs "last evening": the service's clock starts a night behind this machine's
    # (the connector goes by the service's clock, whatever this machine's says). Then the night passes
    # on the service (its clock catches up) and the night's jobs run in it.
    evening = datetime.now(UTC) - timedelta(hours=NIGHT_HOURS)
    with Simulator(
        jobs=args.jobs,
        seed=args.seed,
        latency_ms=args.latency_ms,
        now=evening,
        faults=Faults(clock_offset_s=-NIGHT_HOURS * 3600),
    ) as sim:
        credentials = AvePointCredentials()
        credentials.client_id = sim.client_id
        credentials.client_secret = sim.client_secret
        credentials.identity_url = sim.identity_url

        def source() -> Any:
            return avepoint_dynamics(
                credentials=credentials,
                base_url=sim.base_url,
                ca_bundle=sim.ca_file,
                lookback_minutes=0,
            )

        print(f"simulator at {sim.base_url}; first load (the whole history) ...")
        started = time.monotonic()
        run_load(source(), target)
        first_s = time.monotonic() - started
        first_requests = sim.stats()["jobs_requests"]
        print(f"  {args.jobs:,} jobs in {first_s:.1f} s, {first_requests} page requests")

        print(
            f"a night passes: {NIGHT_JOBS} new jobs ran over the last {NIGHT_HOURS} hours, every "
            "running job finished; second load ..."
        )
        running = sum(1 for job in sim.world.ground_truth() if job["status"] == 2)
        sim.set_faults(clock_offset_s=0)  # the night passes on the service
        sim.world.finish_running()
        sim.world.add_jobs(NIGHT_JOBS, running=4, spread_hours=NIGHT_HOURS)
        sim.reset_stats()
        started = time.monotonic()
        run_load(source(), target)
        print(
            f"  incremental: {time.monotonic() - started:.1f} s, {sim.stats()['jobs_requests']} page "
            f"requests; {NIGHT_JOBS} new jobs, {running} jobs updated to their final state"
        )
        truth = len(sim.world.ground_truth())

    from ..analytics.report import write_report

    report = write_report(duckdb_path, os.path.splitext(duckdb_path)[0] + "_report.html")
    print(summary(duckdb_path, truth))
    print(f"job-health report (open it in a browser): {report}")
    print(f"views to query: {', '.join((*VIEW_NAMES, RUN_LOG_VIEW))}")
    print()
    print(REAL_TENANT)
    return 0


def summary(duckdb_path: str, expected_total: int | None = None) -> str:
    """Jobs by status and type, the newest job, where the file is, and a query to try."""
    with duckdb.connect(duckdb_path, read_only=True) as con:
        total = con.execute("SELECT count(*) FROM avepoint.jobs").fetchone()[0]  # type: ignore[index]
        by_status = con.execute(
            "SELECT status_name, count(*) FROM avepoint.jobs GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        by_type = con.execute(
            "SELECT type_name, count(*) FROM avepoint.jobs GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        newest = con.execute(
            "SELECT job_id, start_time, status_name, organization_name FROM avepoint.jobs "
            "ORDER BY start_time DESC LIMIT 1"
        ).fetchone()
    lines = ["", f"DuckDB file: {duckdb_path}", f"jobs loaded: {total:,}"]
    if expected_total is not None:
        lines[-1] += (
            f" (the API holds {expected_total:,}: {'equal' if total == expected_total else 'DIFFERENT'})"
        )
    lines.append("by status: " + ", ".join(f"{name} {count:,}" for name, count in by_status))
    lines.append("by type:   " + ", ".join(f"{name} {count:,}" for name, count in by_type))
    if newest:
        lines.append(
            f"newest job: {newest[0]} started {newest[1]:%Y-%m-%d %H:%M:%S} UTC, {newest[2]}, {newest[3]}"
        )
    query = " ".join(SQL_TO_TRY.split())
    python = os.path.relpath(sys.executable) if sys.executable else "python"
    lines.append("one SQL query to try (the duckdb Python package is enough):")
    lines.append(
        f'  {python} -c "import duckdb; duckdb.sql(\\"ATTACH \'{duckdb_path}\' AS db; USE db\\"); duckdb.sql(\\"{query}\\").show()"'
    )
    return "\n".join(lines)
