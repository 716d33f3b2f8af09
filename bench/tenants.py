"""Benchmark (issue 15): what one worker does with many tenants, at the API's latency.

Six tenants (``--tenants``), each with its own simulator process and history (``--jobs`` jobs, the newest
``--running`` in progress), all loaded by one ``avepoint-dynamics load --tenants t1,...,t6 --parallel P``
into one DuckDB file, as a scheduler would run it on one worker:

1. ``first``: every tenant's whole history;
2. ``nightly``: +1 % new jobs per tenant and the running ones finished (a night's change).

Each run is the real CLI in a process of its own, at ``--latency`` ms per request (50 by default: a
remote API), for each ``--parallel``. Measured per run: wall time, the process's peak RSS (``wait4``:
an upper bound), the jobs API and token requests each tenant's simulator counted, and the rows each
tenant has in DuckDB against its simulator's total. From the nightly runs: tenants one worker serves per
hour, ``3600 / (wall / tenants)``.

Run: ``python -m bench.tenants`` (results in bench/results/latest/tenants.{json,md}, not tracked;
``--out-dir bench/results`` replaces the published figures).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.contenders import DATASET
from bench.duckdb_checks import duckdb_query
from bench.harness import CHILDREN, child_env, kill_all_children
from bench.render import log
from bench.simulator_process import SimulatorProcess
from bench.snapshot import git_commit

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    """Run both runs at each ``--parallel``; exit status 1 when a tenant's table is not exact."""
    args = _parse(argv)
    root = Path(tempfile.mkdtemp(prefix="avepoint-bench-tenants-"))
    scenarios = []
    try:
        for parallel in args.parallel:
            scenarios.append(_scenario(args, parallel, root / f"parallel-{parallel}"))
    finally:
        kill_all_children()
        shutil.rmtree(root, ignore_errors=True)
    meta = {
        "command": " ".join(["python -m bench.tenants", *(argv or sys.argv[1:])]).strip(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "tenants": args.tenants,
        "jobs": args.jobs,
        "running": args.running,
        "latency_ms": args.latency,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tenants.json").write_text(json.dumps({"meta": meta, "scenarios": scenarios}, indent=2))
    text = _markdown(meta, scenarios)
    (out / "tenants.md").write_text(text)
    print(text)
    return 0 if all(s["exact"] for s in scenarios) else 1


def _scenario(args: argparse.Namespace, parallel: int, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    names = [f"t{index + 1}" for index in range(args.tenants)]
    log(f"{args.tenants} tenants x {args.jobs:,} jobs, {args.latency:g} ms, --parallel {parallel}")
    sims: dict[str, SimulatorProcess] = {}
    try:
        env = child_env("")
        env.pop("REQUESTS_CA_BUNDLE")  # each tenant trusts its own simulator's CA (ca_bundle)
        for index, name in enumerate(names):
            sim = SimulatorProcess(
                args.jobs, args.seed + index, workdir, ["--running", str(args.running)]
            )
            sims[name] = sim
            sim.set_latency(args.latency)
            section = f"SOURCES__AVEPOINT_DYNAMICS_{name.upper()}__"
            env.update(
                {
                    section + "BASE_URL": sim.base_url,
                    section + "CA_BUNDLE": sim.ca_file,
                    section + "CREDENTIALS__CLIENT_ID": sim.info["client_id"],
                    section + "CREDENTIALS__CLIENT_SECRET": sim.info["client_secret"],
                    section + "CREDENTIALS__IDENTITY_URL": sim.info["identity_url"],
                }
            )
        runs = {"first": _run(names, sims, env, parallel, workdir, args)}
        for sim in sims.values():
            sim.control("POST", "jobs", {"finish_running": True})
            sim.control("POST", "jobs", {"add": max(1, math.ceil(args.jobs * 0.01))})
        runs["nightly"] = _run(names, sims, env, parallel, workdir, args)
    finally:
        for sim in sims.values():
            sim.stop()
    nightly = runs["nightly"]
    per_tenant = nightly["seconds"] / args.tenants
    return {
        "parallel": parallel,
        "runs": runs,
        "tenants_per_hour": 3600 / per_tenant if per_tenant else None,
        "exact": all(run["exact"] for run in runs.values()),
    }


def _run(
    names: list[str],
    sims: dict[str, SimulatorProcess],
    env: dict[str, str],
    parallel: int,
    workdir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    for sim in sims.values():
        sim.reset_stats()
    duckdb_path = workdir / "jobs.duckdb"
    command = [
        sys.executable,
        "-m",
        "avepoint_pipelines.cli",
        "load",
        "--tenants",
        ",".join(names),
        "--parallel",
        str(parallel),
        "--duckdb-path",
        str(duckdb_path),
        "--dataset",
        DATASET,
        "-q",
    ]
    with open(workdir / "cli.log", "ab") as output:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=workdir
        )
        CHILDREN[proc.pid] = proc
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        CHILDREN.pop(proc.pid, None)
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code != 0:
        raise RuntimeError(f"the load exited {exit_code}: see {workdir / 'cli.log'}")
    counted = {
        str(tenant): (int(rows), int(distinct))
        for tenant, rows, distinct in duckdb_query(
            duckdb_path,
            f"SELECT tenant, count(*), count(DISTINCT job_id) FROM {DATASET}.jobs GROUP BY tenant",
        )
    }
    tenants = {}
    for name, sim in sims.items():
        stats = sim.stats()
        rows, distinct = counted.get(name, (0, 0))
        total = sim.total()
        tenants[name] = {
            "requests": stats["jobs_requests"],
            "token_requests": stats["token_requests"],
            "rows": rows,
            "expected_rows": total,
            "exact": rows == distinct == total,
        }
    requests = [tenant["requests"] for tenant in tenants.values()]
    log(f"  {seconds:.1f} s, {usage.ru_maxrss / 1024:.0f} MB, requests per tenant {requests}")
    return {
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "tenants": tenants,
        "requests_per_tenant": sum(requests) / len(requests),
        "exact": all(tenant["exact"] for tenant in tenants.values()),
    }


def _markdown(meta: dict[str, Any], scenarios: list[dict[str, Any]]) -> str:
    lines = [
        "# Many tenants on one worker (issue 15)",
        "",
        f"`{meta['command']}` at {meta['git_commit']}, {meta['date']}, {meta['cpus']} CPUs: "
        f"{meta['tenants']} tenants of {meta['jobs']:,} jobs each ({meta['running']:,} running), "
        f"{meta['latency_ms']:g} ms per request, one `load --tenants ... --parallel P` process into "
        "one DuckDB file. `nightly`: +1 % new jobs per tenant and the running ones finished.",
        "",
        "| parallel | run | wall | per tenant | peak RSS | jobs requests per tenant | rows = API's |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for scenario in scenarios:
        for name, run in scenario["runs"].items():
            lines.append(
                f"| {scenario['parallel']} | {name} | {run['seconds']:.1f} s | "
                f"{run['seconds'] / meta['tenants']:.1f} s | {run['peak_rss_mb']:.0f} MB | "
                f"{run['requests_per_tenant']:.0f} | {'yes' if run['exact'] else 'NO'} |"
            )
    lines += ["", "Tenants one worker serves per hour (nightly runs back to back):"]
    for scenario in scenarios:
        lines.append(
            f"- `--parallel {scenario['parallel']}`: {scenario['tenants_per_hour']:,.0f} tenants/hour"
        )
    return "\n".join(lines) + "\n"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--running", type=int, default=50)
    parser.add_argument("--latency", type=float, default=50.0)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--seed", type=int, default=11)
    # The published figures under bench/results/ change only when asked for (--out-dir bench/results).
    parser.add_argument("--out-dir", default=str(HERE / "results" / "latest"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
