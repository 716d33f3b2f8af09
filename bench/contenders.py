"""The contenders: who is measured, and how each one loads the jobs into DuckDB (child side).

Every function ``run_*`` runs inside the contender's own process (``bench.child``), reads its spec (the
simulator's URLs and credentials, the DuckDB file, the dlt ``pipelines_dir``) and returns its figures:
``seconds`` of work (imports excluded), dlt's per-step ``phases``, ``rss_after_imports_mb``. The limits
(transport, load, incremental) are in ``bench.limits``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import requests

from bench.memory import proc_status_mb
from bench.paging import JOBS_PATH, SCOPE, fetch_page, token

DATASET = "bench"

CONTENDERS = (
    "ours",
    "plain",
    "rest_api",
    "naive",
    "transport",
    "transport_c1",
    "load_limit",
    "incremental_limit",
    "ours_incremental",
)
#: Contenders that page one request at a time and push dicts through dlt's normalizer: minutes and GBs.
SLOW = ("rest_api", "naive")
#: Contenders measured at the lowest latency only (their target is there; one page at a time at 50 ms
#: is a minute per 100,000 jobs).
FAST_LATENCY_ONLY = ("transport_c1",)
LABELS = {
    "ours": "ours (avepoint_dynamics, 8 in flight, parquet)",
    "plain": "ours, plain pipeline.run(avepoint_dynamics()) (no Target, no views)",
    "rest_api": "dlt rest_api (declarative, sequential, insert_values)",
    "naive": "naive requests loop + pipeline.run(dicts)",
    "transport": "transport limit (fetch + json only, 8 in flight)",
    "transport_c1": "transport limit, 1 in flight (fetch + json only, page after page)",
    "load_limit": "load limit (one Arrow table -> DuckDB, parquet)",
    "incremental_limit": "incremental limit (dlt merge of 1% rows from memory)",
    "ours_incremental": "ours, incremental (+1% jobs, running ones finished)",
}


def duckdb_pipeline(spec: dict[str, Any], name: str) -> Any:
    """A dlt pipeline into the spec's DuckDB file and ``pipelines_dir``, dataset ``bench``."""
    import dlt

    return dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.duckdb(credentials=spec["duckdb_path"]),
        dataset_name=DATASET,
        pipelines_dir=spec["pipelines_dir"],
    )


def dlt_phases(pipeline: Any, wall_start: dt.datetime, wall_end: dt.datetime) -> dict[str, float]:
    """Seconds per dlt step of the last run (sync, extract, normalize, load), plus what the contender
    spent before dlt's ``run`` started (``setup``) and after it ended (``after``)."""
    phases: dict[str, float] = {}
    trace = pipeline.last_trace
    if trace is None:
        return phases
    if trace.started_at:
        phases["setup"] = round((trace.started_at - wall_start).total_seconds(), 3)
    for step in trace.steps:
        if step.step != "run" and step.finished_at and step.started_at:
            seconds = (step.finished_at - step.started_at).total_seconds()
            phases[step.step] = round(phases.get(step.step, 0.0) + seconds, 3)
    if trace.finished_at:
        phases["after"] = round((wall_end - trace.finished_at).total_seconds(), 3)
    return phases


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """``avepoint_dynamics`` through ``run_load``, as a user runs it (also the incremental run)."""
    from avepoint_dynamics import AvePointCredentials, avepoint_dynamics
    from avepoint_pipelines.load.pipeline import Target, make_pipeline, run_load

    credentials = AvePointCredentials()
    credentials.client_id = spec["client_id"]
    credentials.client_secret = spec["client_secret"]
    credentials.identity_url = spec["identity_url"]
    target = Target(
        destination="duckdb",
        dataset_name=DATASET,
        pipeline_name="bench_ours",
        duckdb_path=spec["duckdb_path"],
        pipelines_dir=spec["pipelines_dir"],
    )
    if spec.get("unknown_reading"):
        _probe_cannot_tell()
    rss0 = proc_status_mb("VmRSS")
    wall_start = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    source = avepoint_dynamics(
        credentials=credentials,
        base_url=spec["base_url"],
        ca_bundle=spec["ca_file"],
        max_concurrency=spec["concurrency"],
        page_size=spec["page_size"],
    )
    info = run_load(source, target)
    seconds = time.perf_counter() - started
    wall_end = dt.datetime.now(dt.UTC)
    info.raise_on_failed_jobs()
    return {
        "seconds": seconds,
        "phases": dlt_phases(make_pipeline(target), wall_start, wall_end),
        "rss_after_imports_mb": rss0,
    }


def _probe_cannot_tell() -> None:
    """The service probe learns everything but the window's reading (as a busy tenant can leave it):
    the run reads the safe way and probes again, as it would on such a tenant (bench.open_jobs)."""
    from avepoint_dynamics import run as run_module
    from avepoint_dynamics.model import Window
    from avepoint_dynamics.service import ServiceFindings, probe_service

    def cannot_tell(client: Any) -> ServiceFindings:
        findings = probe_service(client)
        findings.window_selects = findings.start_bound = findings.end_bound = None
        findings.notes.append("time window: could not tell (bench)")
        findings.running_jobs = client.fetch_page(Window(None, None, 2), 1, 1).total
        return findings

    setattr(run_module, "probe_service", cannot_tell)  # noqa: B010 - not exported by run


def run_plain(spec: dict[str, Any]) -> dict[str, Any]:
    """``dlt.pipeline(destination="duckdb").run(avepoint_dynamics(...))``: what a user's own script does,
    without ``run_load``'s DuckDB settings or views."""
    from avepoint_dynamics import AvePointCredentials, avepoint_dynamics

    credentials = AvePointCredentials()
    credentials.client_id = spec["client_id"]
    credentials.client_secret = spec["client_secret"]
    credentials.identity_url = spec["identity_url"]
    rss0 = proc_status_mb("VmRSS")
    wall_start = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    source = avepoint_dynamics(
        credentials=credentials,
        base_url=spec["base_url"],
        ca_bundle=spec["ca_file"],
        max_concurrency=spec["concurrency"],
        page_size=spec["page_size"],
    )
    pipeline = duckdb_pipeline(spec, "bench_plain")
    info = pipeline.run(source)
    seconds = time.perf_counter() - started
    wall_end = dt.datetime.now(dt.UTC)
    info.raise_on_failed_jobs()
    return {
        "seconds": seconds,
        "phases": dlt_phases(pipeline, wall_start, wall_end),
        "rss_after_imports_mb": rss0,
    }


def run_rest_api(spec: dict[str, Any]) -> dict[str, Any]:
    """dlt's declarative ``rest_api`` source, configured for ``GetJobs`` as a dlt user would."""
    from dlt.sources.rest_api import rest_api_source

    config: Any = {
        "client": {
            "base_url": spec["base_url"],
            "auth": {
                "type": "oauth2_client_credentials",
                "access_token_url": spec["token_url"],
                "client_id": spec["client_id"],
                "client_secret": spec["client_secret"],
                "access_token_request_data": {"scope": SCOPE},
            },
        },
        "resource_defaults": {"primary_key": "jobId", "write_disposition": "merge"},
        "resources": [
            {
                "name": "jobs",
                "endpoint": {
                    "path": JOBS_PATH.lstrip("/"),
                    "method": "POST",
                    "json": {"pageInfo": {"pageSize": spec["page_size"]}},
                    "paginator": {
                        "type": "page_number",
                        "page_body_path": "pageInfo.currentPage",
                        "base_page": 1,
                        "total_path": None,
                    },
                    "data_selector": "jobs",
                },
            }
        ],
    }
    rss0 = proc_status_mb("VmRSS")
    wall_start = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    source = rest_api_source(config)
    pipeline = duckdb_pipeline(spec, "bench_rest_api")
    info = pipeline.run(source)
    seconds = time.perf_counter() - started
    wall_end = dt.datetime.now(dt.UTC)
    info.raise_on_failed_jobs()
    return {
        "seconds": seconds,
        "phases": dlt_phases(pipeline, wall_start, wall_end),
        "rss_after_imports_mb": rss0,
    }


def run_naive(spec: dict[str, Any]) -> dict[str, Any]:
    """A ``requests`` loop, page after page until an empty one, then ``pipeline.run(list_of_dicts)``."""
    import dlt  # noqa: F401  (imported before timing, like every contender)

    rss0 = proc_status_mb("VmRSS")
    wall_start = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    session = requests.Session()
    access_token = token(spec, session)
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        jobs = fetch_page(spec, session, access_token, page)["jobs"]
        if not jobs:
            break
        rows.extend(jobs)
        page += 1
    fetched = time.perf_counter()
    pipeline = duckdb_pipeline(spec, "bench_naive")
    info = pipeline.run(rows, table_name="jobs", write_disposition="merge", primary_key="jobId")
    seconds = time.perf_counter() - started
    wall_end = dt.datetime.now(dt.UTC)
    info.raise_on_failed_jobs()
    phases = {"fetch": round(fetched - started, 3), **dlt_phases(pipeline, wall_start, wall_end)}
    if "setup" in phases:  # dlt's run started after the fetch loop
        phases["setup"] = round(phases["setup"] - phases["fetch"], 3)
    return {
        "seconds": seconds,
        "rows_seen": len(rows),
        "phases": phases,
        "rss_after_imports_mb": rss0,
    }
