"""Benchmark (issue 12): what scheduled runs cost when a big share of the history is still running.

A big tenant's nightly wave: 100,000 jobs, of which the newest 2,000 are in progress. Ours loads the
history, then runs three times on the same pipeline and DuckDB file, each in a process of its own:

1. ``idle``: nothing changed (the wave still running);
2. ``new_wave_running``: +1 % new jobs, the wave still running;
3. ``new_wave_finished``: +1 % new jobs again, and the wave finished.

For each: the jobs API requests the run made (counted by the simulator) and its wall time as a share of
the full load's, measured in the same run at the same latency. Every run ends with the DuckDB table
checked against the simulator's total, and the finished wave checked final in DuckDB.

Targets: an idle run <= 25 requests; an incremental run after 1 % new jobs <= 60 requests and <= 15 % of
the full load's wall time, at 0 and 50 ms.

``--readings known unknown`` runs the case twice, the second time as on a tenant whose window reading
the probe could not tell (issue 20): every run then reads the safe way (by start, plus every running job
read without a window) and probes again.

``--apart-hours 24`` spaces the runs as a nightly schedule does (issue 23): before each scheduled run
the service's clock moves that many hours forward (the simulator's ``clock_offset_s``, so every time the
connector sees, the ``Date`` header included, is a day later), and the new jobs start spread over the
last ``--spread-hours`` (default 8: a night's backups), some of them still running. The default, 0, runs
them back to back, the new jobs all arriving in the last milliseconds: the new-jobs window's lookback
(10 minutes before the cursor) then re-reads the previous run's new jobs, which a nightly run a day later
does not.

Run: ``scripts/bench-open-jobs``, i.e. ``python -m bench.open_jobs`` (results in
bench/results/open_jobs.{json,md}); ``--jobs``, ``--running``, ``--latencies`` to change the case. The
simulator, the child processes and the row counts are the main benchmark's (``bench.harness``,
``bench.simulator_process``, ``bench.duckdb_checks``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.contenders import DATASET
from bench.duckdb_checks import count_rows, duckdb_query
from bench.harness import child_env, kill_all_children, run_child
from bench.render import log
from bench.simulator_process import SimulatorProcess
from bench.snapshot import git_commit

HERE = Path(__file__).resolve().parent

IDLE_MAX_REQUESTS = 25
INCREMENTAL_MAX_REQUESTS = 60
INCREMENTAL_MAX_SHARE = 0.15


def main(argv: list[str] | None = None) -> int:
    """Run the case at each latency; exit status 1 when a target is missed."""
    args = _parse(argv)
    root = Path(tempfile.mkdtemp(prefix="avepoint-bench-open-"))
    scenarios = []
    try:
        for latency in args.latencies:
            for reading in args.readings:
                scenarios.append(
                    _scenario(args, latency, root / f"{latency:g}ms-{reading}", reading)
                )
    finally:
        kill_all_children()
        shutil.rmtree(root, ignore_errors=True)
    meta = {
        "command": " ".join(["scripts/bench-open-jobs", *(argv or sys.argv[1:])]).strip(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "jobs": args.jobs,
        "running": args.running,
        "new_share": args.new_share,
        "apart_hours": args.apart_hours,
        "spread_hours": args.spread_hours if args.apart_hours else None,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "open_jobs.json").write_text(
        json.dumps({"meta": meta, "scenarios": scenarios}, indent=2)
    )
    text = _markdown(meta, scenarios)
    (out / "open_jobs.md").write_text(text)
    print(text)
    return 0 if all(s["targets_met"] for s in scenarios) else 1


def _scenario(
    args: argparse.Namespace, latency_ms: float, workdir: Path, reading: str = "known"
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"{args.jobs:,} jobs, {args.running:,} running, {latency_ms:g} ms, reading {reading}")
    sim = SimulatorProcess(args.jobs, args.seed, workdir, ["--running", str(args.running)])
    try:
        spec = {
            "base_url": sim.base_url,
            "identity_url": sim.info["identity_url"],
            "token_url": sim.info["token_url"],
            "client_id": sim.info["client_id"],
            "client_secret": sim.info["client_secret"],
            "ca_file": sim.ca_file,
            "page_size": 100,
            "concurrency": 8,
            "duckdb_path": str(workdir / "jobs.duckdb"),
            "pipelines_dir": str(workdir / "pipelines"),
            "unknown_reading": reading == "unknown",
        }
        env = child_env(sim.ca_file)
        sim.set_latency(latency_ms)
        runs: dict[str, dict[str, Any]] = {}
        runs["full"] = _run(sim, spec, env, workdir / "full", args)
        next_night = _Schedule(sim, args.apart_hours)
        next_night()
        runs["idle"] = _run(sim, spec, env, workdir / "idle", args)
        add: dict[str, Any] = {"add": max(1, math.ceil(args.jobs * args.new_share)), "running": 3}
        if args.apart_hours:
            add["spread_hours"] = min(args.spread_hours, args.apart_hours)
        next_night()
        sim.control("POST", "jobs", add)
        runs["new_wave_running"] = _run(sim, spec, env, workdir / "new_running", args)
        next_night()
        wave = sim.control("POST", "jobs", {"finish_running": True}).get("finished", [])
        sim.control("POST", "jobs", add)
        runs["new_wave_finished"] = _run(sim, spec, env, workdir / "new_finished", args)
        runs["new_wave_finished"]["wave_final_in_duckdb"] = _all_final(spec, wave)
    finally:
        sim.stop()
    full = runs["full"]["seconds"]
    for name, report in runs.items():
        report["share_of_full"] = report["seconds"] / full if full else None
        log(f"  {name}: {report['requests']} requests, {report['seconds']:.2f} s")
    idle_ok = runs["idle"]["requests"] <= IDLE_MAX_REQUESTS
    incremental_ok = all(
        runs[name]["requests"] <= INCREMENTAL_MAX_REQUESTS
        and runs[name]["share_of_full"] <= INCREMENTAL_MAX_SHARE
        for name in ("new_wave_running", "new_wave_finished")
    )
    exact = all(r["rows"] == r["expected_rows"] for r in runs.values())
    final = runs["new_wave_finished"]["wave_final_in_duckdb"]
    return {
        "latency_ms": latency_ms,
        "reading": reading,
        "runs": runs,
        "targets_met": idle_ok and incremental_ok and exact and final,
        "idle_ok": idle_ok,
        "incremental_ok": incremental_ok,
        "exact": exact,
    }


class _Schedule:
    """Moves the service's clock ``apart_hours`` forward at each call (nothing when 0)."""

    def __init__(self, sim: SimulatorProcess, apart_hours: float) -> None:
        self.sim = sim
        self.step_s = apart_hours * 3600
        self.offset_s = 0.0

    def __call__(self) -> None:
        if self.step_s:
            self.offset_s += self.step_s
            self.sim.control("POST", "faults", {"clock_offset_s": self.offset_s})


def _run(
    sim: SimulatorProcess,
    spec: dict[str, Any],
    env: dict[str, str],
    workdir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    expected = sim.total()
    sim.reset_stats()
    report = run_child("ours", spec, workdir, env, args.max_minutes)
    if report["status"] != "ok":
        raise RuntimeError(f"ours failed: {report.get('error')}")
    stats = sim.stats()
    rows, distinct = count_rows(Path(spec["duckdb_path"]))
    return {
        "seconds": report["seconds"],
        "requests": stats["jobs_requests"],
        "token_requests": stats["token_requests"],
        "rows": rows,
        "distinct": distinct,
        "expected_rows": expected,
    }


def _all_final(spec: dict[str, Any], finished: list[dict[str, Any]]) -> bool:
    ids = [job["jobId"] for job in finished]
    if not ids:
        return True
    marks = ",".join("?" for _ in ids)
    rows = duckdb_query(
        Path(spec["duckdb_path"]),
        f"SELECT count(*) FROM {DATASET}.jobs WHERE job_id IN ({marks}) AND status <> 2",
        ids,
    )
    return bool(rows[0][0] == len(ids))


def _markdown(meta: dict[str, Any], scenarios: list[dict[str, Any]]) -> str:
    lines = [
        "# Scheduled runs with a wave of running jobs (issue 12)",
        "",
        f"`{meta['command']}` at {meta['git_commit']}, {meta['date']}: {meta['jobs']:,} jobs, "
        f"the newest {meta['running']:,} in progress; each run in a process of its own, page size "
        "100, 8 in flight. Requests are the jobs API's, counted by the simulator; shares are of the "
        "full load's wall time at the same latency, in the same run. "
        + (
            f"The scheduled runs {meta['apart_hours']:g} hours apart on the service's clock, the new "
            f"jobs spread over its last {meta['spread_hours']:g} hours."
            if meta.get("apart_hours")
            else "The scheduled runs back to back, the new jobs arriving in the last milliseconds."
        ),
        "",
        "| latency | reading | run | requests | wall | share of full | rows = API's |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for scenario in scenarios:
        for name, run in scenario["runs"].items():
            share = run["share_of_full"]
            lines.append(
                f"| {scenario['latency_ms']:g} ms | {scenario.get('reading', 'known')} | {name} | "
                f"{run['requests']:,} | "
                f"{run['seconds']:.2f} s | {share * 100:.1f} % | "
                f"{'yes' if run['rows'] == run['expected_rows'] == run['distinct'] else 'NO'} |"
            )
    lines += ["", "Targets:"]
    for scenario in scenarios:
        runs = scenario["runs"]
        lines.append(
            f"- {scenario['latency_ms']:g} ms, reading {scenario.get('reading', 'known')}: idle "
            f"{runs['idle']['requests']} requests "
            f"(goal <= {IDLE_MAX_REQUESTS}): {'PASS' if scenario['idle_ok'] else 'FAIL'}; "
            f"+1 % new: {runs['new_wave_running']['requests']} / "
            f"{runs['new_wave_finished']['requests']} requests, "
            f"{runs['new_wave_running']['share_of_full'] * 100:.1f} % / "
            f"{runs['new_wave_finished']['share_of_full'] * 100:.1f} % of the full load "
            f"(goal <= {INCREMENTAL_MAX_REQUESTS}, <= {INCREMENTAL_MAX_SHARE * 100:.0f} %): "
            f"{'PASS' if scenario['incremental_ok'] else 'FAIL'}; finished wave final in DuckDB: "
            f"{'yes' if runs['new_wave_finished']['wave_final_in_duckdb'] else 'NO'}"
        )
    return "\n".join(lines) + "\n"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--running", type=int, default=2_000)
    parser.add_argument("--new-share", type=float, default=0.01)
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument(
        "--readings",
        nargs="+",
        choices=("known", "unknown"),
        default=["known"],
        help="the window's reading as the probe finds it: known (learnt), unknown (the safe way)",
    )
    parser.add_argument(
        "--apart-hours",
        type=float,
        default=0.0,
        help="move the service's clock this far forward before each scheduled run (24: nightly)",
    )
    parser.add_argument(
        "--spread-hours",
        type=float,
        default=8.0,
        help="with --apart-hours: the new jobs start over the service's last this many hours",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=20.0)
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
