"""Benchmark (issue 23): the fixed cost of a run, an idle ``avepoint-dynamics load`` at 0 ms.

A simulator with ``--jobs`` jobs in its own process; one untimed ``load`` fills the DuckDB file, then
``--runs`` idle loads (nothing new), each a whole process as the console script runs it. Each child times
its imports, ``main()``, dlt's steps and ours (lease, run-log counts, views), every DuckDB connection it
opens, every HTTP request it sends, and counts the connections and dlt's configuration resolutions (counts
that the machine's load cannot change); the parent times the whole process and what is left after
``main()`` (the interpreter's teardown). Prints the median of each; wall times on a shared machine are
noise, compare shares and counts.

``--base DIR``: also run the code in DIR (a checkout holding ``sources/`` and ``pipelines/``, e.g.
``git worktree add /tmp/base <commit>``), alternating with this tree run by run, on a pipeline of its own:
prints both and their ratio.

Run: ``python -m bench.fixed_cost [--jobs 1000] [--runs 10] [--base DIR]`` (~1 minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.simulator_process import SimulatorProcess

#: What a child runs: the console script's own path (``main()`` with the process's arguments).
CHILD = r"""
import json, os, sys, time
T0 = time.perf_counter()
import dlt
T1 = time.perf_counter()
import avepoint_dynamics
T2 = time.perf_counter()
from avepoint_pipelines.cli import parser
T3 = time.perf_counter()
spent, counts = {}, {}

def wrap(owner, name, key):
    original = getattr(owner, name)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        counts[key] = counts.get(key, 0) + 1
        try:
            return original(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - started
    setattr(owner, name, timed)

from dlt.pipeline.pipeline import Pipeline
for step in ("sync_destination", "extract", "normalize", "load"):
    wrap(Pipeline, step, "dlt " + step)
from avepoint_pipelines.load import lease, pipeline as load_pipeline, run_log
for name in ("acquire", "confirm", "release"):
    wrap(lease.DestinationLease, name, "lease")
for name in ("before_load", "after_load"):
    wrap(run_log.RunCounts, name, "run-log counts")
wrap(load_pipeline, "refresh_views_after_load", "views")
wrap(load_pipeline, "make_pipeline", "make the pipeline")
import requests
wrap(requests.Session, "send", "HTTP requests (in extract)")
from dlt.destinations.impl.duckdb import configuration as duckdb_configuration
wrap(duckdb_configuration.DuckDbConnectionPool, "borrow_conn", "DuckDB connections (in the steps)")
from dlt.common.configuration import resolve
original_resolve = resolve.resolve_configuration
def resolving(*args, **kwargs):
    counts["dlt configuration resolutions"] = counts.get("dlt configuration resolutions", 0) + 1
    return original_resolve(*args, **kwargs)
for module in list(sys.modules.values()):
    if module is not None and module.__dict__.get("resolve_configuration") is original_resolve:
        module.resolve_configuration = resolving
sys.argv = ["avepoint-dynamics", "load", "-q", "--pipelines-dir", os.environ["FIXED_COST_DIR"]]
try:
    code = parser.main()
finally:
    T4 = time.perf_counter()
    times = {"import dlt": T1 - T0, "import avepoint_dynamics": T2 - T1,
             "import the CLI (the rest)": T3 - T2, "main()": T4 - T3, **spent}
    with open(os.environ["FIXED_COST_OUT"], "w") as out:
        json.dump({"times": times, "counts": counts, "main_returned": time.time()}, out)
sys.exit(code)
"""


def run_child(
    code_dir: Path | None, env: dict[str, str], folder: Path, out: Path
) -> dict[str, Any]:
    """One idle load in a process of its own; its figures, plus the parent's whole-process wall time."""
    child_env = dict(env, FIXED_COST_DIR=str(folder / "pipelines"), FIXED_COST_OUT=str(out))
    if code_dir is not None:  # the base's packages first on the path (before the editable install)
        links = folder / "packages"
        links.mkdir(parents=True, exist_ok=True)
        for name, where in (
            ("avepoint_dynamics", "sources/avepoint_dynamics"),
            ("avepoint_pipelines", "pipelines"),
        ):
            if not (links / name).exists():
                (links / name).symlink_to(code_dir / where)
        child_env["PYTHONPATH"] = str(links)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=child_env, cwd=folder, capture_output=True, text=True
    )
    wall, ended = time.perf_counter() - started, time.time()
    if done.returncode != 0:
        raise SystemExit(f"the idle load failed ({done.returncode}):\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(out.read_text())
    figures["times"]["the whole process"] = wall
    figures["times"]["after main() (teardown)"] = ended - figures["main_returned"]
    return figures


def medians(runs: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, list[int]]]:
    keys = list(dict.fromkeys(key for run in runs for key in run["times"]))
    times = {key: statistics.median(run["times"].get(key, 0.0) for run in runs) for key in keys}
    names = list(dict.fromkeys(key for run in runs for key in run["counts"]))
    counts = {key: sorted({run["counts"].get(key, 0) for run in runs}) for key in names}
    return times, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", type=Path, help="another checkout, run alternately with this one")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="avepoint-fixed-cost-"))
    sim = SimulatorProcess(args.jobs, args.seed, workdir)
    try:
        env = {
            **os.environ,
            "SOURCES__AVEPOINT_DYNAMICS__BASE_URL": sim.base_url,
            "SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__IDENTITY_URL": sim.info["identity_url"],
            "SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_ID": sim.info["client_id"],
            "SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_SECRET": sim.info["client_secret"],
            "SOURCES__AVEPOINT_DYNAMICS__CA_BUNDLE": sim.ca_file,
            "RUNTIME__DLTHUB_TELEMETRY": "false",
        }
        trees: dict[str, Path | None] = {"this tree": None}
        if args.base is not None:
            trees["base"] = args.base.resolve()
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for name, code_dir in trees.items():  # untimed: the first load of each pipeline
            folder = workdir / name.replace(" ", "_")
            folder.mkdir()
            run_child(code_dir, env, folder, folder / "figures.json")
        for index in range(args.runs):
            order = list(trees) if index % 2 == 0 else list(trees)[::-1]
            for name in order:
                folder = workdir / name.replace(" ", "_")
                runs[name].append(run_child(trees[name], env, folder, folder / "figures.json"))
    finally:
        sim.stop()
    results = {name: medians(found) for name, found in runs.items()}
    names = list(results)
    print(
        f"idle load, {args.jobs:,} jobs, 0 ms, median of {args.runs} runs; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':44}" + "".join(f"{name:>12}" for name in names))
    for key in results[names[0]][0]:
        print(f"{key:44}" + "".join(f"{results[name][0].get(key, 0.0):11.3f}s" for name in names))
    for key in results[names[0]][1]:
        print(f"{key:44}" + "".join(f"{results[name][1].get(key, '-')!s:>12}" for name in names))
    if "base" in results:
        ratio = (
            results["this tree"][0]["the whole process"] / results["base"][0]["the whole process"]
        )
        print(f"the whole process, this tree / base: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
