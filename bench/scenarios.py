"""One scenario (history size x latency): a fresh simulator, every contender in turn, their reports.

The method: each contender runs ``--repeat`` times, the fastest run is reported with the highest peak
memory of all runs; rows are counted in DuckDB afterwards and checked against the simulator's total;
requests are the simulator's own counters, reset before each run.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from pathlib import Path
from typing import Any

from bench.contenders import CONTENDERS, DATASET, FAST_LATENCY_ONLY, SLOW
from bench.duckdb_checks import count_rows, duckdb_query
from bench.harness import child_env, run_child
from bench.render import log, summary_line
from bench.simulator_process import SimulatorProcess


def run_scenario(
    args: argparse.Namespace,
    jobs: int,
    latency_ms: float,
    root: Path,
    previous: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every chosen contender against a fresh simulator of ``jobs`` jobs at ``latency_ms``."""
    name = f"{jobs}-jobs-{latency_ms:g}ms"
    scenario_dir = root / name
    scenario_dir.mkdir(parents=True, exist_ok=True)
    log(f"scenario {name}: starting a simulator with {jobs:,} jobs")
    sim = SimulatorProcess(jobs, args.seed, scenario_dir)
    results: dict[str, dict[str, Any]] = {}
    scenario: dict[str, Any] = {
        "name": name,
        "jobs": jobs,
        "latency_ms": latency_ms,
        "page_size": args.page_size,
        "concurrency": args.concurrency,
        "results": results,
    }
    try:
        expected = sim.total()
        scenario["expected_rows"] = expected
        base_spec: dict[str, Any] = {
            "base_url": sim.base_url,
            "identity_url": sim.info["identity_url"],
            "token_url": sim.info["token_url"],
            "client_id": sim.info["client_id"],
            "client_secret": sim.info["client_secret"],
            "ca_file": sim.ca_file,
            "page_size": args.page_size,
            "concurrency": args.concurrency,
            "arrow_path": str(scenario_dir / "jobs.arrow"),
        }
        env = child_env(sim.ca_file)
        wanted = [c for c in CONTENDERS if c in args.contenders]
        if "load_limit" in wanted or "incremental_limit" in wanted:
            log("  preparing the load limit's Arrow table (untimed, at 0 ms)")
            prep = run_child(
                "prepare_arrow", base_spec, scenario_dir / "prepare_arrow", env, args.max_minutes
            )
            if prep["status"] != "ok":
                raise RuntimeError(f"preparing the Arrow table failed: {prep.get('error')}")
            if prep.get("rows_seen") != expected:
                log(f"  WARNING: the Arrow table has {prep.get('rows_seen')} rows, not {expected}")
        sim.set_latency(latency_ms)
        for contender in wanted:
            if contender in FAST_LATENCY_ONLY and latency_ms > min(args.latencies):
                results[contender] = {
                    "status": "skipped",
                    "note": f"measured at {min(args.latencies):g} ms only",
                }
                continue
            if contender in SLOW and jobs > args.slow_max_jobs:
                results[contender] = skipped_slow(
                    contender, jobs, latency_ms, previous, args.slow_max_jobs
                )
                log(f"  {contender}: {results[contender]['note']}")
                continue
            if contender == "ours_incremental":
                if results.get("ours", {}).get("status") != "ok":
                    results[contender] = {"status": "skipped", "note": "the full run failed"}
                    continue
                results[contender] = run_incremental(args, sim, base_spec, env, scenario_dir)
            elif contender == "incremental_limit":
                results[contender] = run_incremental_limit(
                    args, base_spec, env, scenario_dir, expected
                )
            else:
                results[contender] = run_repeated(
                    args, contender, sim, base_spec, env, scenario_dir / contender, expected
                )
            finish_report(results[contender])
            log(f"  {contender}: {summary_line(results[contender])}")
            # Ours' DuckDB file stays: the incremental run continues it.
            if contender not in ("ours",) and not args.keep_workdir:
                shutil.rmtree(scenario_dir / contender, ignore_errors=True)
        return scenario
    finally:
        sim.stop()
        if not args.keep_workdir:
            shutil.rmtree(scenario_dir, ignore_errors=True)


def run_repeated(
    args: argparse.Namespace,
    contender: str,
    sim: SimulatorProcess,
    base_spec: dict[str, Any],
    env: dict[str, str],
    work: Path,
    expected: int,
) -> dict[str, Any]:
    """Run a contender ``--repeat`` times (fresh DuckDB file and pipelines_dir each time).

    Reports the fastest run (other processes share this machine: the fastest is the least disturbed),
    with every run's time and the highest peak RSS of all runs.
    """
    runs: list[dict[str, Any]] = []
    for attempt in range(args.repeat):
        shutil.rmtree(work, ignore_errors=True)
        spec = {
            **base_spec,
            "duckdb_path": str(work / "jobs.duckdb"),
            "pipelines_dir": str(work / "pipelines"),
        }
        sim.reset_stats()
        load_before = os.getloadavg()[0]
        log(f"  running {contender} ({attempt + 1}/{args.repeat})")
        report = run_child(contender, spec, work, env, args.max_minutes)
        report["load_avg_1m"] = round(max(load_before, os.getloadavg()[0]), 2)
        add_stats(report, sim.stats())
        if contender in ("transport", "transport_c1"):
            report["rows_loaded"] = report.get("rows_seen")
            report["distinct_rows"] = None
        else:
            report["rows_loaded"], report["distinct_rows"] = count_rows(Path(spec["duckdb_path"]))
        check_rows(contender, report, expected)
        runs.append(report)
        if report["status"] != "ok":
            return report

    def seconds_of(run: dict[str, Any]) -> float:
        return float(run.get("seconds") or math.inf)

    fastest = min(runs, key=seconds_of)
    best: dict[str, Any] = dict(fastest)
    best["all_seconds"] = [round(float(r.get("seconds") or 0), 3) for r in runs]
    best["peak_rss_mb"] = max(float(r.get("peak_rss_mb") or 0) for r in runs)
    best["peak_private_mb"] = max(float(r.get("peak_private_mb") or 0) for r in runs)
    best["rows_ok"] = all(r.get("rows_ok") for r in runs)
    best["load_avg_1m_runs"] = [r["load_avg_1m"] for r in runs]
    return best


def skipped_slow(
    contender: str, jobs: int, latency_ms: float, previous: list[dict[str, Any]], limit: int
) -> dict[str, Any]:
    """A contender not run at this size; estimated linearly from the biggest size it ran at."""
    note = f"not run above {limit:,} jobs (pages one at a time, dict rows: many minutes and GBs)"
    estimate = None
    for scenario in sorted(previous, key=lambda s: s["jobs"]):
        if scenario["latency_ms"] != latency_ms:
            continue
        report = scenario["results"].get(contender, {})
        if report.get("status") == "ok" and report.get("seconds"):
            estimate = (report["seconds"] * jobs / scenario["jobs"], scenario["name"])
    result: dict[str, Any] = {"status": "skipped", "note": note}
    if estimate is not None:
        result["estimated_seconds"] = round(estimate[0], 1)
        result["note"] = note + f"; ~{estimate[0]:,.0f} s extrapolated from {estimate[1]}"
    return result


def run_incremental_limit(
    args: argparse.Namespace,
    base_spec: dict[str, Any],
    env: dict[str, str],
    scenario_dir: Path,
    expected: int,
) -> dict[str, Any]:
    """Seed a table with every row (untimed child), then time a fresh child merging 1% of them."""
    work = scenario_dir / "incremental_limit"
    shutil.rmtree(work, ignore_errors=True)
    spec = {
        **base_spec,
        "duckdb_path": str(work / "jobs.duckdb"),
        "pipelines_dir": str(work / "pipelines"),
    }
    log("  seeding the incremental limit's table (untimed)")
    seed = run_child(
        "seed_incremental_limit", {**spec, "share": 1.0}, work / "seed", env, args.max_minutes
    )
    if seed["status"] != "ok":
        return {"status": "error", "note": f"seeding failed: {seed.get('error')}"}
    runs: list[dict[str, Any]] = []
    for attempt in range(args.repeat):
        log(f"  running incremental_limit ({attempt + 1}/{args.repeat})")
        share = {**spec, "share": args.incremental_share}
        report = run_child(
            "incremental_limit", share, work / f"run{attempt}", env, args.max_minutes
        )
        if report["status"] != "ok":
            return report
        runs.append(report)
    fastest = min(runs, key=lambda run: float(run.get("seconds") or math.inf))
    best: dict[str, Any] = dict(fastest)
    best["all_seconds"] = [round(float(r.get("seconds") or 0), 3) for r in runs]
    best["peak_rss_mb"] = max(float(r.get("peak_rss_mb") or 0) for r in runs)
    best["peak_private_mb"] = max(float(r.get("peak_private_mb") or 0) for r in runs)
    best["rows_loaded"], best["distinct_rows"] = count_rows(Path(spec["duckdb_path"]))
    best["merged_rows"] = best.get("rows_seen")
    check_rows("incremental_limit", best, expected)
    return best


def run_incremental(
    args: argparse.Namespace,
    sim: SimulatorProcess,
    base_spec: dict[str, Any],
    env: dict[str, str],
    scenario_dir: Path,
) -> dict[str, Any]:
    """1% new jobs and the running jobs finished; ours again on the same pipeline and DuckDB file."""
    work = scenario_dir / "ours"
    duckdb_path = work / "jobs.duckdb"
    running_loaded = {
        row[0]
        for row in duckdb_query(duckdb_path, f"SELECT job_id FROM {DATASET}.jobs WHERE status = 2")
    }
    finished = sim.control("POST", "jobs", {"finish_running": True}).get("finished", [])
    final = {job["jobId"]: job["status"] for job in finished}
    before = sim.total()
    add = max(1, math.ceil(before * args.incremental_share))
    sim.control("POST", "jobs", {"add": add, "running": min(3, add)})
    expected = sim.total()
    spec = {
        **base_spec,
        "duckdb_path": str(duckdb_path),
        "pipelines_dir": str(work / "pipelines"),
    }
    sim.reset_stats()
    log(
        f"  running ours_incremental (+{add:,} jobs; {len(final)} running jobs finished, "
        f"{len(running_loaded)} loaded as running)"
    )
    load_before = os.getloadavg()[0]
    report = run_child(
        "ours_incremental", spec, scenario_dir / "ours_incremental", env, args.max_minutes
    )
    report["load_avg_1m"] = round(max(load_before, os.getloadavg()[0]), 2)
    add_stats(report, sim.stats())
    report["rows_loaded"], report["distinct_rows"] = count_rows(duckdb_path)
    report["added_jobs"] = add
    check_rows("ours_incremental", report, expected)
    # The jobs that were running at the full load must now hold their final status.
    ids = sorted(set(final) | running_loaded)
    now = {}
    if ids:
        marks = ",".join("?" for _ in ids)
        now = {
            row[0]: (row[1], row[2])
            for row in duckdb_query(
                duckdb_path,
                f"SELECT job_id, status, finish_time FROM {DATASET}.jobs WHERE job_id IN ({marks})",
                ids,
            )
        }
    stale = [
        job_id
        for job_id in ids
        if job_id not in now or now[job_id][0] != final.get(job_id, -1) or now[job_id][1] is None
    ]
    report["previously_running"] = len(ids)
    report["finished_updated"] = not stale
    if stale:
        report["stale_jobs"] = stale[:20]
        log(f"  WARNING: jobs still not final in DuckDB after the incremental run: {stale[:5]}")
    return report


def add_stats(report: dict[str, Any], stats: dict[str, Any]) -> None:
    """The simulator's counters for this run (requests, max in flight, any non-200) into the report."""
    report["jobs_requests"] = stats.get("jobs_requests")
    report["token_requests"] = stats.get("token_requests")
    report["max_in_flight"] = stats.get("max_in_flight")
    errors = {k: v for k, v in stats.get("requests", {}).items() if not k.endswith(" 200")}
    if errors:
        report["non_200"] = errors


def check_rows(contender: str, report: dict[str, Any], expected: int) -> None:
    """Mark the report ``rows_ok`` when DuckDB holds the expected rows, each job once; warn if not."""
    report["expected_rows"] = expected
    loaded = report.get("rows_loaded")
    distinct = report.get("distinct_rows")
    ok = loaded == expected and (distinct is None or distinct == expected)
    report["rows_ok"] = ok
    if report.get("status") == "ok" and not ok:
        log(
            f"  WARNING: {contender} loaded {loaded} rows ({distinct} distinct job ids), "
            f"expected {expected}"
        )


def finish_report(report: dict[str, Any]) -> None:
    """Derive ``rows_per_s`` from the report's figures (also when re-rendering an earlier JSON)."""
    seconds = report.get("seconds")
    rows = report.get("rows_loaded")
    if report.get("contender") in ("ours_incremental", "incremental_limit"):
        # The table holds every job; the run fetched ~1% of them: rows/s would mean nothing here.
        report.pop("rows_per_s", None)
    elif report.get("status") == "ok" and seconds and rows:
        report["rows_per_s"] = rows / seconds
