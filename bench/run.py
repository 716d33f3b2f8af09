"""Benchmark of the AvePoint jobs connector against dlt's ``rest_api``, a naive loop and two limits.

Run (from the repository root)::

    scripts/bench            # full: {0, 50} ms x {100,000, 1,000,000} jobs, page size 100
    scripts/bench --quick    # smoke: 20,000 jobs, same latencies

``scripts/bench`` runs this file with ``.venv-bench``, the base install a user has (no dev extras: the
dev venv's dagster brings sqlalchemy, which dlt imports when it finds it, +11 MB per process).

For every scenario (jobs x latency) a fresh simulator runs as a separate process (``avepoint-simulator``),
and every contender runs in a subprocess of its own, into a fresh DuckDB file and dlt ``pipelines_dir``:

1. ``ours``: ``avepoint_dynamics(..., max_concurrency=8)`` through ``run_load`` (parquet loader files);
2. ``rest_api``: dlt's declarative ``rest_api`` source, configured for the same endpoint as a dlt user would
   (``page_number`` paginator on ``pageInfo.currentPage``, OAuth2 client credentials, merge on ``jobId``,
   default loader format);
3. ``naive``: a ``requests`` loop, page after page, then ``pipeline.run(list_of_dicts)`` with dlt defaults;
4. ``transport``: fetch and JSON-parse every page at the same concurrency as ours, nothing else (no dlt);
5. ``load_limit``: the same rows as one Arrow table (built before timing) loaded through dlt as parquet;
6. ``incremental_limit``: the least any dlt pipeline run costs for an incremental load of this size: 1% of
   the rows as one Arrow table (read before timing), merged on ``jobId`` (declared deduplicated, as ours
   does) into a table that already holds all of them, in a fresh process; no HTTP, no token. An untimed
   child first loads every row into that table the same way;
7. ``ours_incremental``: after ``ours``, 1% new jobs arrive and the running jobs finish; ours runs again on
   the same pipeline and DuckDB file.

Measured per contender: wall time of the work (imports excluded), rows loaded (``count(*)`` in the DuckDB file
afterwards), rows/s, peak RSS of its process (``os.wait4``), and the jobs requests the simulator counted.
Prints a table per scenario and the issue's targets (PASS/FAIL); writes ``bench/results/bench.json`` and
``bench/results/bench.md``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
SCOPE = "dynamics.readwrite.all"
JOBS_PATH = "/api/OpenApi/GetJobs"
DATASET = "bench"

CONTENDERS = (
    "ours",
    "rest_api",
    "naive",
    "transport",
    "load_limit",
    "incremental_limit",
    "ours_incremental",
)
#: Contenders that page one request at a time and push dicts through dlt's normalizer: minutes and GBs.
SLOW = ("rest_api", "naive")
LABELS = {
    "ours": "ours (avepoint_dynamics, 8 in flight, parquet)",
    "rest_api": "dlt rest_api (declarative, sequential, insert_values)",
    "naive": "naive requests loop + pipeline.run(dicts)",
    "transport": "transport limit (fetch + json only, 8 in flight)",
    "load_limit": "load limit (one Arrow table -> DuckDB, parquet)",
    "incremental_limit": "incremental limit (dlt merge of 1% rows from memory)",
    "ours_incremental": "ours, incremental (+1% jobs, running ones finished)",
}
#: Env vars dropped from every child: dlt config of the developer's shell must not tune any contender.
DROPPED_ENV_PREFIXES = (
    "SOURCES__",
    "DESTINATION__",
    "NORMALIZE__",
    "LOAD__",
    "EXTRACT__",
    "DATA_WRITER__",
    "RUNTIME__",
    "PIPELINES__",
)


# ================================================================= small helpers
def log(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def proc_status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmRSS``, ``VmHWM``), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak RSS of this process since its exec, plus any child it waited for (MB).

    Not ``ru_maxrss`` of RUSAGE_SELF: Linux carries it across ``execve``, so a child would report the
    parent's RSS at fork when that is higher. ``VmHWM`` belongs to the process's own address space.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return max(proc_status_mb("VmHWM"), children)


def fmt_num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


# ================================================================= child side
class PrivatePeak:
    """Samples ``RssAnon`` (memory the process owns: heap, mmap'd buffers) every 10 ms; keeps the peak.

    ``VmHWM`` also counts the pages of shared libraries mapped from the page cache, and those vary with
    the page cache's state, not with the code: importing pyarrow maps 29 MB of its files after a
    ``drop_caches`` and 54 MB right after pip wrote them, the same files on the same machine.
    """

    def __init__(self) -> None:
        import threading

        self.peak = proc_status_mb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, proc_status_mb("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status_mb("RssAnon"))
        return self.peak


def child_main(spec_path: str) -> int:
    """Run one contender as described by the spec file; write its result next to it."""
    spec = json.loads(Path(spec_path).read_text())
    result: dict[str, Any] = {"contender": spec["contender"]}
    private = PrivatePeak()
    try:
        runner = CHILD_RUNNERS[spec["contender"]]
        result.update(runner(spec))
    except BaseException as exc:  # report, then fail
        import traceback

        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        result["peak_rss_self_mb"] = peak_rss_mb()
        result["peak_private_mb"] = private.stop()
        Path(spec["result_path"]).write_text(json.dumps(result, default=str))
        traceback.print_exc()
        return 1
    result["peak_rss_self_mb"] = peak_rss_mb()
    result["peak_private_mb"] = private.stop()
    for name in ("avepoint_dynamics", "avepoint_simulator"):
        if name in sys.modules:
            result[f"{name}_file"] = getattr(sys.modules[name], "__file__", None)
    Path(spec["result_path"]).write_text(json.dumps(result, default=str))
    return 0


def _duckdb_pipeline(spec: dict[str, Any], name: str) -> Any:
    import dlt

    return dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.duckdb(credentials=spec["duckdb_path"]),
        dataset_name=DATASET,
        pipelines_dir=spec["pipelines_dir"],
    )


def _phases(pipeline: Any, wall_start: dt.datetime, wall_end: dt.datetime) -> dict[str, float]:
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


def _check_load_info(info: Any) -> None:
    info.raise_on_failed_jobs()


def _token(spec: dict[str, Any], session: requests.Session) -> str:
    response = session.post(
        spec["token_url"],
        data={
            "grant_type": "client_credentials",
            "client_id": spec["client_id"],
            "client_secret": spec["client_secret"],
            "scope": SCOPE,
        },
        verify=spec["ca_file"],
        timeout=60,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def _fetch_page(
    spec: dict[str, Any], session: requests.Session, token: str, page: int
) -> dict[str, Any]:
    response = session.post(
        spec["base_url"] + JOBS_PATH,
        json={"pageInfo": {"currentPage": page, "pageSize": spec["page_size"]}},
        headers={"Authorization": f"Bearer {token}"},
        verify=spec["ca_file"],
        timeout=120,
    )
    response.raise_for_status()
    payload: dict[str, Any] = response.json()
    return payload


def _concurrent_pages(
    spec: dict[str, Any], on_page: Callable[[list[dict[str, Any]]], None]
) -> tuple[int, int]:
    """Page 1 gives the total; pages 2..n go through a pool of ``concurrency`` threads (each its own
    keep-alive session), at most that many in flight. ``on_page`` sees each page's jobs in page order.

    Returns:
        (total reported, pages fetched).
    """
    import threading
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        s: requests.Session = local.session
        return s

    token = _token(spec, session())
    first = _fetch_page(spec, session(), token, 1)
    total = int(first["totalCount"])
    on_page(first["jobs"])
    pages = max(1, math.ceil(total / spec["page_size"]))
    concurrency = spec["concurrency"]

    def fetch(page: int) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = _fetch_page(spec, session(), token, page)["jobs"]
        return jobs

    with ThreadPoolExecutor(concurrency) as pool:
        # Bounded submission: never more than `concurrency` pages queued or in flight.
        next_page = 2
        running: dict[Future[list[dict[str, Any]]], int] = {}
        done_pages: dict[int, list[dict[str, Any]]] = {}
        emit = 2
        while next_page <= pages or running:
            while next_page <= pages and len(running) < concurrency:
                running[pool.submit(fetch, next_page)] = next_page
                next_page += 1
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                done_pages[running.pop(future)] = future.result()
            while emit in done_pages:
                on_page(done_pages.pop(emit))
                emit += 1
    return total, pages


def run_transport(spec: dict[str, Any]) -> dict[str, Any]:
    rows = 0

    def count(jobs: list[dict[str, Any]]) -> None:
        nonlocal rows
        rows += len(jobs)

    rss0 = proc_status_mb("VmRSS")
    started = time.perf_counter()
    total, pages = _concurrent_pages(spec, count)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows_seen": rows,
        "total_reported": total,
        "pages": pages,
        "rss_after_imports_mb": rss0,
    }


#: Arrow types of the API's job fields (everything else in a job is an int64 count).
_STRING_FIELDS = (
    "module",
    "jobId",
    "startTime",
    "finishTime",
    "organizationId",
    "organizationName",
)
_FLOAT_FIELDS = ("durationHours",)
_TIME_FIELDS = ("startTime", "finishTime")


def run_prepare_arrow(spec: dict[str, Any]) -> dict[str, Any]:
    """Fetch every page (untimed preparation) into one typed Arrow table, saved as an Arrow IPC file."""
    import pyarrow as pa

    batches: list[pa.RecordBatch] = []
    schema: pa.Schema | None = None

    def add(jobs: list[dict[str, Any]]) -> None:
        nonlocal schema
        if not jobs:
            return
        if schema is None:
            fields = []
            for key in jobs[0]:
                kind = (
                    pa.string()
                    if key in _STRING_FIELDS
                    else pa.float64()
                    if key in _FLOAT_FIELDS
                    else pa.int64()
                )
                fields.append(pa.field(key, kind))
            schema = pa.schema(fields)
        batches.append(pa.RecordBatch.from_pylist(jobs, schema=schema))

    _concurrent_pages(spec, add)
    assert schema is not None, "no jobs fetched"
    table = pa.Table.from_batches(batches, schema=schema).combine_chunks()
    for name in _TIME_FIELDS:
        if name in table.column_names:
            index = table.column_names.index(name)
            typed = (
                table.column(name)
                .cast(pa.timestamp("ns", tz="UTC"))
                .cast(pa.timestamp("us", tz="UTC"), safe=False)
            )
            table = table.set_column(index, name, typed)
    with pa.OSFile(spec["arrow_path"], "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return {"rows_seen": table.num_rows, "seconds": 0.0}


def _arrow_rows(spec: dict[str, Any], share: float = 1.0) -> Any:
    """The last ``share`` of the prepared Arrow file's rows, materialized in memory (before timing)."""
    import pyarrow as pa

    with pa.memory_map(spec["arrow_path"], "r") as source:
        table = pa.ipc.open_file(source).read_all()
    rows = max(1, math.ceil(table.num_rows * share))
    return table.slice(table.num_rows - rows).combine_chunks()


def _timed_dlt_run(spec: dict[str, Any], name: str, data: Any, **run_args: Any) -> dict[str, Any]:
    """``pipeline.run(data)`` into the spec's DuckDB file as parquet, timed from pipeline creation."""
    rss0 = proc_status_mb("VmRSS")
    wall_start = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    pipeline = _duckdb_pipeline(spec, name)
    info = pipeline.run(data, loader_file_format="parquet", **run_args)
    seconds = time.perf_counter() - started
    wall_end = dt.datetime.now(dt.UTC)
    _check_load_info(info)
    return {
        "seconds": seconds,
        "phases": _phases(pipeline, wall_start, wall_end),
        "rss_after_imports_mb": rss0,
    }


def run_load_limit(spec: dict[str, Any]) -> dict[str, Any]:
    import dlt  # noqa: F401  (imported before timing, like every contender: ~0.4 s)

    table = _arrow_rows(spec)
    result = _timed_dlt_run(spec, "bench_load_limit", table, table_name="jobs")
    return {**result, "rows_seen": table.num_rows}


def run_dlt_merge(spec: dict[str, Any]) -> dict[str, Any]:
    """Merge the last ``share`` of the Arrow file's rows on ``jobId`` through dlt (parquet, declared
    deduplicated): with share 1 it seeds the table, with share 0.01 it is the incremental limit."""
    import dlt

    table = _arrow_rows(spec, spec["share"])
    deduplicated = dlt.mark.make_hints(additional_table_hints={"x-stage-data-deduplicated": True})
    resource = dlt.resource(
        [dlt.mark.with_hints(table, deduplicated)],
        name="jobs",
        primary_key="jobId",
        write_disposition="merge",
    )
    result = _timed_dlt_run(spec, "bench_incremental_limit", resource)
    return {**result, "rows_seen": table.num_rows}


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    from avepoint_dynamics import AvePointCredentials, avepoint_dynamics
    from avepoint_pipelines.avepoint_pipeline import Target, make_pipeline, run_load

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
    _check_load_info(info)
    return {
        "seconds": seconds,
        "phases": _phases(make_pipeline(target), wall_start, wall_end),
        "rss_after_imports_mb": rss0,
    }


def run_rest_api(spec: dict[str, Any]) -> dict[str, Any]:
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
    pipeline = _duckdb_pipeline(spec, "bench_rest_api")
    info = pipeline.run(source)
    seconds = time.perf_counter() - started
    wall_end = dt.datetime.now(dt.UTC)
    _check_load_info(info)
    return {
        "seconds": seconds,
        "phases": _phases(pipeline, wall_start, wall_end),
        "rss_after_imports_mb": rss0,
    }


def run_naive(spec: dict[str, Any]) -> dict[str, Any]:
    import dlt  # noqa: F401  (imported before timing, like every contender)

    rss0 = proc_status_mb("VmRSS")
    wall_start = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    session = requests.Session()
    token = _token(spec, session)
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        jobs = _fetch_page(spec, session, token, page)["jobs"]
        if not jobs:
            break
        rows.extend(jobs)
        page += 1
    fetched = time.perf_counter()
    pipeline = _duckdb_pipeline(spec, "bench_naive")
    info = pipeline.run(rows, table_name="jobs", write_disposition="merge", primary_key="jobId")
    seconds = time.perf_counter() - started
    wall_end = dt.datetime.now(dt.UTC)
    _check_load_info(info)
    phases = {"fetch": round(fetched - started, 3), **_phases(pipeline, wall_start, wall_end)}
    if "setup" in phases:  # dlt's run started after the fetch loop
        phases["setup"] = round(phases["setup"] - phases["fetch"], 3)
    return {
        "seconds": seconds,
        "rows_seen": len(rows),
        "phases": phases,
        "rss_after_imports_mb": rss0,
    }


CHILD_RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ours": run_ours,
    "ours_incremental": run_ours,  # same pipeline, same DuckDB file, second run
    "rest_api": run_rest_api,
    "naive": run_naive,
    "transport": run_transport,
    "load_limit": run_load_limit,
    "incremental_limit": run_dlt_merge,
    "seed_incremental_limit": run_dlt_merge,
    "prepare_arrow": run_prepare_arrow,
}


# ================================================================= parent side: processes
_CHILDREN: dict[int, subprocess.Popen[Any]] = {}


def _kill_group(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds; reap it."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(10)


def _kill_all_children() -> None:
    for proc in list(_CHILDREN.values()):
        _kill_group(proc, grace=3.0)
    _CHILDREN.clear()


def _on_signal(signum: int, frame: Any) -> None:
    _kill_all_children()
    raise SystemExit(128 + signum)


#: Where the snapshot of the project's packages is (children import it, not the live working tree).
_SNAPSHOT: list[Path] = []
#: The project's packages: (folder in the repository, import name).
PACKAGES = (
    ("sources/avepoint_dynamics", "avepoint_dynamics"),
    ("simulator/avepoint_simulator", "avepoint_simulator"),
    ("pipelines", "avepoint_pipelines"),
)


def _environment() -> str:
    """Which install the contenders ran in: extras change what dlt imports (sqlalchemy) and so RSS."""
    from importlib.util import find_spec

    extras = [name for name in ("sqlalchemy", "dagster", "psycopg2", "pytest") if find_spec(name)]
    kind = "base install" if not extras else "with " + ", ".join(extras)
    return f"interpreter {sys.prefix} ({kind})"


def snapshot_code(root: Path) -> dict[str, Any]:
    """Copy the connector, the simulator and the pipelines into ``root/code``, imported by every child.

    Other people edit the working tree while a 30-minute benchmark runs; without a snapshot, later
    scenarios would measure another version of the connector than earlier ones.
    """
    import hashlib

    code = root / "code"
    digest = hashlib.sha256()
    for folder, name in PACKAGES:
        shutil.copytree(
            HERE.parent / folder, code / name, ignore=shutil.ignore_patterns("__pycache__")
        )
        for path in sorted((code / name).rglob("*.py")):
            digest.update(str(path.relative_to(code)).encode())
            digest.update(path.read_bytes())
    _SNAPSHOT.append(code)
    dirty = git("status", "--porcelain", "--", *(folder for folder, _ in PACKAGES))
    return {"code_sha256": digest.hexdigest()[:16], "code_uncommitted_changes": bool(dirty)}


def base_env() -> dict[str, str]:
    """The parent's environment minus dlt config vars, importing the code snapshot first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV_PREFIXES)}
    if _SNAPSHOT:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(_SNAPSHOT[0]), *filter(None, [env.get("PYTHONPATH")])]
        )
    return env


def child_env(ca_file: str) -> dict[str, str]:
    """The base environment plus the simulator's CA for requests."""
    env = base_env()
    env["REQUESTS_CA_BUNDLE"] = ca_file
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"  # the same for everyone: no network calls home
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class SimulatorProcess:
    """``avepoint-simulator`` in its own process (its own GIL), driven through its control endpoints."""

    def __init__(
        self, jobs: int, seed: int, workdir: Path, extra_args: list[str] | None = None
    ) -> None:
        script = Path(sys.executable).parent / "avepoint-simulator"
        command = (
            [str(script)] if script.exists() else [sys.executable, "-m", "avepoint_simulator.cli"]
        )
        command += ["--jobs", str(jobs), "--port", "0", "--seed", str(seed), "--latency-ms", "0"]
        command += extra_args or []
        env = base_env()
        self.stderr = open(workdir / f"simulator-{jobs}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
        _CHILDREN[self.proc.pid] = self.proc
        self.info = self._read_info(timeout=300)
        self.session = requests.Session()
        self.session.trust_env = False
        self.ca_file: str = self.info["ca_file"]
        self.base_url: str = self.info["base_url"]

    def _read_info(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the simulator did not start (see its log in the work dir)")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    continue
                buffer += chunk
        info: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
        return info

    def control(self, method: str, action: str, payload: dict[str, Any] | None = None) -> Any:
        response = self.session.request(
            method,
            f"{self.base_url}/_simulator/{action}",
            json=payload,
            verify=self.ca_file,
            timeout=600,
        )
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.control("GET", "stats")
        return stats

    def reset_stats(self) -> None:
        self.control("POST", "reset_stats")

    def total(self) -> int:
        return int(self.control("POST", "jobs", {})["total"])

    def set_latency(self, latency_ms: float) -> None:
        self.control("POST", "faults", {"latency_ms": latency_ms})

    def stop(self) -> None:
        _kill_group(self.proc)
        _CHILDREN.pop(self.proc.pid, None)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


def run_child(
    contender: str, spec: dict[str, Any], workdir: Path, env: dict[str, str], max_minutes: float
) -> dict[str, Any]:
    """Run one contender in its own process; returns its report plus wall time and peak RSS (wait4)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "contender": contender, "result_path": str(workdir / "result.json")}
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    log_path = workdir / "child.log"
    with open(log_path, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,  # no .dlt/ of the repository or the developer in reach
            start_new_session=True,
        )
        _CHILDREN[proc.pid] = proc
        deadline = started + max_minutes * 60
        status: int | None = None
        rusage: Any = None
        timed_out = False
        while status is None:
            pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                status, rusage = wait_status, usage
                proc.returncode = os.waitstatus_to_exitcode(wait_status)
                break
            if time.perf_counter() > deadline:
                timed_out = True
                _kill_group(proc, grace=5.0)
                break
            time.sleep(0.05)
        process_seconds = time.perf_counter() - started
        _CHILDREN.pop(proc.pid, None)
    report: dict[str, Any] = {}
    result_path = Path(spec["result_path"])
    if result_path.exists():
        report = json.loads(result_path.read_text())
    report["process_seconds"] = process_seconds
    if rusage is not None:
        # An upper bound only: Linux carries ru_maxrss across execve (the parent's RSS at fork).
        report["wait4_maxrss_mb"] = rusage.ru_maxrss / 1024
    if "peak_rss_self_mb" in report:
        report["peak_rss_mb"] = report["peak_rss_self_mb"]
    if timed_out:
        report["status"] = "timeout"
        report["error"] = f"killed after --max-minutes {max_minutes:g}"
    elif proc.returncode != 0 or "error" in report:
        report["status"] = "error"
        report.setdefault("error", f"exit status {proc.returncode}")
        tail = log_path.read_text(errors="replace")[-3000:]
        log(f"  {contender} failed: {report['error']}\n{tail}")
    else:
        report["status"] = "ok"
    return report


# ================================================================= parent side: DuckDB checks
def duckdb_query(path: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        rows: list[tuple[Any, ...]] = con.execute(sql, params or []).fetchall()
        return rows


def count_rows(path: Path) -> tuple[int | None, int | None]:
    """(rows, distinct job ids) of the jobs table, or (None, None) if it is not there."""
    if not path.exists():
        return None, None
    try:
        rows = duckdb_query(path, f"SELECT count(*), count(DISTINCT job_id) FROM {DATASET}.jobs")
    except Exception as exc:
        log(f"  cannot count rows in {path}: {exc}")
        return None, None
    return int(rows[0][0]), int(rows[0][1])


# ================================================================= parent side: scenarios
def run_scenario(
    args: argparse.Namespace,
    jobs: int,
    latency_ms: float,
    root: Path,
    previous: list[dict[str, Any]],
) -> dict[str, Any]:
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
        if contender == "transport":
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
    report["jobs_requests"] = stats.get("jobs_requests")
    report["token_requests"] = stats.get("token_requests")
    report["max_in_flight"] = stats.get("max_in_flight")
    errors = {k: v for k, v in stats.get("requests", {}).items() if not k.endswith(" 200")}
    if errors:
        report["non_200"] = errors


def check_rows(contender: str, report: dict[str, Any], expected: int) -> None:
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
    seconds = report.get("seconds")
    rows = report.get("rows_loaded")
    if report.get("contender") in ("ours_incremental", "incremental_limit"):
        # The table holds every job; the run fetched ~1% of them: rows/s would mean nothing here.
        report.pop("rows_per_s", None)
    elif report.get("status") == "ok" and seconds and rows:
        report["rows_per_s"] = rows / seconds


def summary_line(report: dict[str, Any]) -> str:
    if report.get("status") != "ok":
        return f"{report.get('status')}: {report.get('note') or report.get('error')}"
    return (
        f"{report['seconds']:.2f} s, {fmt_num(report.get('rows_loaded'))} rows, "
        f"{fmt_num(report.get('rows_per_s'))} rows/s, peak RSS {fmt_num(report.get('peak_rss_mb'))} MB "
        f"(private {fmt_num(report.get('peak_private_mb'))} MB), "
        f"{fmt_num(report.get('jobs_requests'))} requests"
    )


# ================================================================= targets and output
def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def find(scenarios: list[dict[str, Any]], jobs: int, latency: float) -> dict[str, Any] | None:
    for scenario in scenarios:
        if scenario["jobs"] == jobs and scenario["latency_ms"] == latency:
            return scenario
    return None


def ok_value(scenario: dict[str, Any] | None, contender: str, key: str) -> float | None:
    if scenario is None:
        return None
    report = scenario["results"].get(contender, {})
    if report.get("status") != "ok":
        return None
    value = report.get(key)
    return float(value) if value is not None else None


def evaluate_targets(
    args: argparse.Namespace, scenarios: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The issue's targets, on the sizes and latencies of this run (small = the smallest size)."""
    targets: list[dict[str, Any]] = []
    sizes = sorted({s["jobs"] for s in scenarios})
    latencies = sorted({s["latency_ms"] for s in scenarios})
    if not sizes:
        return targets
    small, large = sizes[0], sizes[-1]
    slow_lat, fast_lat = max(latencies), min(latencies)

    def target(name: str, value: float | None, goal: str, passed: bool | None, unit: str) -> None:
        targets.append(
            {
                "target": name,
                "value": None if value is None else round(value, 3),
                "unit": unit,
                "goal": goal,
                "pass": passed if value is not None else None,
            }
        )

    at_slow = find(scenarios, small, slow_lat)
    speedup = ratio(ok_value(at_slow, "rest_api", "seconds"), ok_value(at_slow, "ours", "seconds"))
    target(
        f"{slow_lat:g} ms, {small:,} jobs: rest_api time / ours time",
        speedup,
        ">= 10",
        speedup is not None and speedup >= 10,
        "x",
    )
    to_limit = ratio(
        ok_value(at_slow, "ours", "seconds"), ok_value(at_slow, "transport", "seconds")
    )
    target(
        f"{slow_lat:g} ms, {small:,} jobs: ours time / transport-limit time",
        to_limit,
        "<= 1.3",
        to_limit is not None and to_limit <= 1.3,
        "x",
    )
    at_fast = find(scenarios, small, fast_lat)
    throughput = ratio(
        ok_value(at_fast, "ours", "rows_per_s"), ok_value(at_fast, "rest_api", "rows_per_s")
    )
    target(
        f"{fast_lat:g} ms, {small:,} jobs: ours rows/s / rest_api rows/s",
        throughput,
        ">= 10",
        throughput is not None and throughput >= 10,
        "x",
    )
    memory = (("peak_rss_mb", "peak RSS"), ("peak_private_mb", "peak private memory (RssAnon)"))
    for latency in latencies:
        for key, what in memory:
            rss_small = ok_value(find(scenarios, small, latency), "ours", key)
            target(
                f"{latency:g} ms, {small:,} jobs: {what} of ours",
                rss_small,
                "< 250 MB",
                rss_small is not None and rss_small < 250,
                "MB",
            )
            if large != small:
                rss_large = ok_value(find(scenarios, large, latency), "ours", key)
                growth = None
                if rss_small and rss_large is not None:
                    growth = rss_large / rss_small - 1
                target(
                    f"{latency:g} ms: {what} growth of ours, {small:,} -> {large:,} jobs",
                    growth,
                    "< 0.333 (a third)",
                    growth is not None and growth < 1 / 3,
                    "fraction",
                )
    for scenario in scenarios:
        incr = scenario["results"].get("ours_incremental", {})
        full = scenario["results"].get("ours", {})
        if incr.get("status") != "ok" or full.get("status") != "ok":
            continue
        time_share = ratio(incr.get("seconds"), full.get("seconds"))
        request_share = ratio(incr.get("jobs_requests"), full.get("jobs_requests"))
        label = f"{scenario['latency_ms']:g} ms, {scenario['jobs']:,} jobs: incremental (+1%)"
        target(
            f"{label} time / full time",
            time_share,
            "< 0.05",
            time_share is not None and time_share < 0.05,
            "fraction",
        )
        floor = scenario["results"].get("incremental_limit", {})
        if floor.get("status") == "ok":
            # Not a target: the least any dlt run merging this many rows costs, against the same
            # full run. When it alone is over 5 %, no dlt-based connector can meet the target here.
            floor_share = ratio(floor.get("seconds"), full.get("seconds"))
            target(
                f"{label}: incremental limit time / ours full time (reference)",
                floor_share,
                "reference",
                None,
                "fraction",
            )
        target(
            f"{label} requests / full requests",
            request_share,
            "< 0.05",
            request_share is not None and request_share < 0.05,
            "fraction",
        )
        updated = incr.get("finished_updated")
        target(
            f"{label}: previously running jobs final in DuckDB",
            1.0 if updated else 0.0,
            "all",
            bool(updated),
            "",
        )
    for scenario in scenarios:
        for contender, report in scenario["results"].items():
            if report.get("status") == "ok" and not report.get("rows_ok", True):
                target(
                    f"{scenario['name']}: {contender} loaded the expected rows",
                    float(report.get("rows_loaded") or 0),
                    f"= {report.get('expected_rows'):,}",
                    False,
                    "rows",
                )
    return targets


TABLE_HEADER = (
    "| contender | wall s | rows | rows/s | peak RSS MB | peak private MB | jobs requests | max in flight "
    "| notes |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---|",
)


def scenario_rows(scenario: dict[str, Any]) -> list[str]:
    lines = []
    for contender in CONTENDERS:
        report = scenario["results"].get(contender)
        if report is None:
            continue
        notes: list[str] = []
        if report.get("status") != "ok":
            notes.append(str(report.get("note") or report.get("error") or report.get("status")))
        else:
            if not report.get("rows_ok", True):
                notes.append(f"ROWS {report.get('rows_loaded')} != {report.get('expected_rows')}")
            if len(report.get("all_seconds") or []) > 1:
                notes.append("runs " + " / ".join(f"{v:.2f}" for v in report["all_seconds"]) + " s")
            phases = report.get("phases") or {}
            if phases:
                notes.append(
                    "fastest run: " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
                )
            if report.get("rss_after_imports_mb"):
                notes.append(f"RSS after imports {report['rss_after_imports_mb']:.0f} MB")
            if contender == "ours_incremental":
                notes.append(
                    f"+{report.get('added_jobs', 0):,} jobs; "
                    f"{report.get('previously_running', 0)} previously running jobs "
                    + ("final" if report.get("finished_updated") else "NOT final")
                )
            if contender == "incremental_limit":
                notes.append(f"merged {fmt_num(report.get('merged_rows'))} rows")
            if report.get("non_200"):
                notes.append(f"non-200: {report['non_200']}")
        seconds = report.get("seconds") if report.get("status") == "ok" else None
        lines.append(
            f"| {LABELS[contender]} | {fmt_num(seconds, 2)} | {fmt_num(report.get('rows_loaded'))} "
            f"| {fmt_num(report.get('rows_per_s'))} | {fmt_num(report.get('peak_rss_mb'))} "
            f"| {fmt_num(report.get('peak_private_mb'))} "
            f"| {fmt_num(report.get('jobs_requests'))} | {fmt_num(report.get('max_in_flight'))} "
            f"| {'; '.join(notes)} |"
        )
    return lines


def ratio_lines(scenario: dict[str, Any]) -> list[str]:
    results = scenario["results"]
    ours = ok_value(scenario, "ours", "seconds")
    parts = []
    for contender in ("rest_api", "naive"):
        speed = ratio(ok_value(scenario, contender, "seconds"), ours)
        if speed is not None:
            parts.append(f"ours is {speed:.1f}x faster than {contender}")
    limit = ratio(ours, ok_value(scenario, "transport", "seconds"))
    if limit is not None:
        parts.append(f"ours / transport limit = {limit:.2f}")
    load = ratio(ours, ok_value(scenario, "load_limit", "seconds"))
    if load is not None:
        parts.append(f"ours / load limit = {load:.1f}")
    floor = ratio(ok_value(scenario, "incremental_limit", "seconds"), ours)
    if floor is not None:
        parts.append(f"incremental limit = {floor * 100:.1f}% of ours' full time")
    incr = results.get("ours_incremental", {})
    if incr.get("status") == "ok" and ours:
        share = ratio(incr.get("seconds"), ours)
        req = ratio(incr.get("jobs_requests"), ok_value(scenario, "ours", "jobs_requests"))
        parts.append(
            f"incremental = {fmt_num(share and share * 100, 1)}% of the time, "
            f"{fmt_num(req and req * 100, 1)}% of the requests"
        )
    return parts


def _verdict(item: dict[str, Any]) -> str:
    """PASS / FAIL, n/a when not measured, info for a reference figure (goal "reference")."""
    if item["goal"] == "reference":
        return "info"
    if item["pass"] is None:
        return "n/a"
    return "PASS" if item["pass"] else "FAIL"


def _value_text(item: dict[str, Any]) -> str:
    return "-" if item["value"] is None else f"{item['value']:,.3f} {item['unit']}".strip()


def markdown(
    meta: dict[str, Any], scenarios: list[dict[str, Any]], targets: list[dict[str, Any]]
) -> str:
    lines = [
        "# Benchmark: avepoint_dynamics vs dlt rest_api, a naive loop and the limits",
        "",
        f"`{meta['command']}` — {meta['date']}, commit `{meta['git_commit']}`"
        + (" + uncommitted changes" if meta.get("code_uncommitted_changes") else "")
        + (f" (code snapshot {meta['code_sha256']})" if meta.get("code_sha256") else "")
        + f", Python {meta['python']}, "
        f"dlt {meta['dlt']}, {meta['cpus']} CPUs, {meta.get('environment', 'environment not recorded')}."
        f" Page size {meta['page_size']}, ours and the transport "
        f"limit at {meta['concurrency']} requests in flight. Simulator in its own process, each contender "
        "in its own process (peak RSS is that process's), fresh DuckDB file and dlt pipelines_dir each. "
        "Wall time excludes interpreter start and imports. "
        f"Each contender ran {meta['repeat']} time(s) (the incremental once): the fastest run is "
        "reported, with the highest peak RSS of all runs. Other processes shared the machine "
        f"(1-minute load average during runs: {meta.get('load_avg_range', '-')}).",
        "",
    ]
    for scenario in scenarios:
        lines.append(
            f"## {scenario['jobs']:,} jobs, {scenario['latency_ms']:g} ms latency "
            f"(expected rows {fmt_num(scenario.get('expected_rows'))})"
        )
        lines.append("")
        lines.extend(TABLE_HEADER)
        lines.extend(scenario_rows(scenario))
        ratios = ratio_lines(scenario)
        if ratios:
            lines.append("")
            lines.append("Ratios: " + "; ".join(ratios) + ".")
        lines.append("")
    lines.append("## Targets (issue 6)")
    lines.append("")
    lines.append("| target | value | goal | result |")
    lines.append("|---|---:|---|---|")
    for item in targets:
        lines.append(
            f"| {item['target']} | {_value_text(item)} | {item['goal']} | {_verdict(item)} |"
        )
    lines.append("")
    return "\n".join(lines)


def print_scenario(scenario: dict[str, Any]) -> None:
    print()
    print(
        f"== {scenario['jobs']:,} jobs, {scenario['latency_ms']:g} ms latency, page size "
        f"{scenario['page_size']} (expected rows {fmt_num(scenario.get('expected_rows'))})"
    )
    rows = [
        (
            "contender",
            "wall s",
            "rows",
            "rows/s",
            "peak RSS MB",
            "private MB",
            "requests",
            "in flight",
            "notes",
        )
    ]
    for contender in CONTENDERS:
        report = scenario["results"].get(contender)
        if report is None:
            continue
        ok = report.get("status") == "ok"
        note = "" if ok else str(report.get("note") or report.get("error"))
        if ok and not report.get("rows_ok", True):
            note = f"ROW COUNT {report.get('rows_loaded')} != {report.get('expected_rows')}"
        if ok and report.get("phases"):
            note = (note + " " if note else "") + ", ".join(
                f"{k} {v:.1f}s" for k, v in report["phases"].items()
            )
        rows.append(
            (
                contender,
                fmt_num(report.get("seconds") if ok else None, 2),
                fmt_num(report.get("rows_loaded")),
                fmt_num(report.get("rows_per_s")),
                fmt_num(report.get("peak_rss_mb")),
                fmt_num(report.get("peak_private_mb")),
                fmt_num(report.get("jobs_requests")),
                fmt_num(report.get("max_in_flight")),
                note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(8)]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, 7)]
        print("  " + "  ".join(cells) + "  " + row[7])
    ratios = ratio_lines(scenario)
    if ratios:
        print("  " + "; ".join(ratios))


def git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=HERE.parent, capture_output=True, text=True, timeout=30
        )
        return out.stdout.strip()
    except Exception:
        return ""


def git_commit() -> str:
    return git("rev-parse", "--short", "HEAD") or "unknown"


def write_results(
    args: argparse.Namespace,
    meta: dict[str, Any],
    scenarios: list[dict[str, Any]],
    targets: list[dict[str, Any]],
) -> None:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loads = [
        load
        for scenario in scenarios
        for report in scenario["results"].values()
        for load in report.get("load_avg_1m_runs") or [report.get("load_avg_1m")]
        if load is not None
    ]
    if loads:
        meta["load_avg_range"] = f"{min(loads):.1f} to {max(loads):.1f} on {meta['cpus']} CPUs"
    stem = args.stem
    payload = {"meta": meta, "scenarios": scenarios, "targets": targets}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(markdown(meta, scenarios, targets))


def render(args: argparse.Namespace) -> int:
    """Re-render an earlier run's figures (after a change to the presentation or the targets)."""
    path = Path(args.render)
    payload = json.loads(path.read_text())
    scenarios = payload["scenarios"]
    for scenario in scenarios:
        for contender, report in scenario["results"].items():
            report.setdefault("contender", contender)
            finish_report(report)
    args.out_dir = str(path.parent)
    args.stem = path.stem
    targets = evaluate_targets(args, scenarios)
    write_results(args, payload["meta"], scenarios, targets)
    print(f"rewrote {path} and {path.with_suffix('.md')}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark avepoint_dynamics against dlt rest_api, a naive loop and the limits.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 jobs")
    parser.add_argument(
        "--jobs", type=int, nargs="+", default=None, help="history sizes (default 100000 1000000)"
    )
    parser.add_argument(
        "--latencies", type=float, nargs="+", default=[0.0, 50.0], help="ms added per request"
    )
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8, help="ours and the transport limit")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs per contender, the fastest reported (default 2; the incremental runs once)",
    )
    parser.add_argument(
        "--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS, metavar="NAME"
    )
    parser.add_argument(
        "--slow-max-jobs",
        type=int,
        default=100_000,
        help="run rest_api and the naive loop only up to this many jobs (default 100000)",
    )
    parser.add_argument(
        "--max-minutes", type=float, default=20.0, help="kill a contender after this long"
    )
    parser.add_argument(
        "--incremental-share", type=float, default=0.01, help="new jobs before the incremental run"
    )
    parser.add_argument(
        "--workdir", default=None, help="where DuckDB files go (default: a temp dir)"
    )
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument(
        "--no-snapshot",
        dest="snapshot",
        action="store_false",
        help="import the live working tree instead of a copy made at start",
    )
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    parser.add_argument(
        "--render",
        default=None,
        metavar="JSON",
        help="only rewrite the markdown and the targets of an earlier run's JSON (no benchmark)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.stem = "bench-quick" if args.quick else "bench"
    if args.jobs is None:
        args.jobs = [20_000] if args.quick else [100_000, 1_000_000]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    if args.render:
        return render(args)
    atexit.register(_kill_all_children)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    from importlib.metadata import version

    root = Path(args.workdir or tempfile.mkdtemp(prefix="avepoint-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join(
            ["scripts/bench", *(argv if argv is not None else sys.argv[1:])]
        ).strip(),
        "environment": _environment(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "dlt": version("dlt"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "page_size": args.page_size,
        "concurrency": args.concurrency,
        "seed": args.seed,
        "jobs": args.jobs,
        "latencies_ms": args.latencies,
        "slow_max_jobs": args.slow_max_jobs,
        "max_minutes": args.max_minutes,
        "repeat": args.repeat,
    }
    if args.snapshot:
        meta.update(snapshot_code(root))
    log(f"work dir {root}")
    scenarios: list[dict[str, Any]] = []
    try:
        for jobs in args.jobs:
            for latency in args.latencies:
                scenario = run_scenario(args, jobs, latency, root, scenarios)
                scenarios.append(scenario)
                print_scenario(scenario)
                write_results(args, meta, scenarios, evaluate_targets(args, scenarios))
    finally:
        _kill_all_children()
        if not args.keep_workdir and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    targets = evaluate_targets(args, scenarios)
    write_results(args, meta, scenarios, targets)
    print()
    print("== targets (issue 6)")
    for item in targets:
        print(f"  {_verdict(item):4}  {item['target']}: {_value_text(item)} (goal {item['goal']})")
    print()
    stem = "bench-quick" if args.quick else "bench"
    print(
        f"wrote {Path(args.out_dir) / (stem + '.json')} and {Path(args.out_dir) / (stem + '.md')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
