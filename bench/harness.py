"""The process harness (parent side): start each contender in a process of its own, wait, kill, collect.

Every child runs ``python -m bench --child SPEC`` in an empty working directory (no ``.dlt/`` in reach),
in its own process group, with an environment stripped of dlt configuration. The parent waits with
``os.wait4`` and kills the whole group on a timeout, a signal or exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.render import log
from bench.snapshot import REPO, SNAPSHOT

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

#: The children alive now (contenders and simulators), by pid: killed on exit or signal.
CHILDREN: dict[int, subprocess.Popen[Any]] = {}


def kill_group(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
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


def kill_all_children() -> None:
    """Kill every child still alive (see ``kill_group``)."""
    for proc in list(CHILDREN.values()):
        kill_group(proc, grace=3.0)
    CHILDREN.clear()


def on_signal(signum: int, frame: Any) -> None:
    """Signal handler: no simulator or contender outlives the benchmark."""
    kill_all_children()
    raise SystemExit(128 + signum)


def base_env() -> dict[str, str]:
    """The parent's environment minus dlt config vars, importing the code snapshot first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV_PREFIXES)}
    if SNAPSHOT:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SNAPSHOT[0]), *filter(None, [env.get("PYTHONPATH")])]
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


def run_child(
    contender: str, spec: dict[str, Any], workdir: Path, env: dict[str, str], max_minutes: float
) -> dict[str, Any]:
    """Run one contender in its own process; returns its report plus wall time and peak RSS (wait4)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "contender": contender, "result_path": str(workdir / "result.json")}
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    # The child starts in `workdir`, so `-m bench` finds this package through the repository's root,
    # put last: the snapshot of the connector (first in PYTHONPATH) still wins.
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))}
    log_path = workdir / "child.log"
    with open(log_path, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench", "--child", str(spec_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,  # no .dlt/ of the repository or the developer in reach
            start_new_session=True,
        )
        CHILDREN[proc.pid] = proc
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
                kill_group(proc, grace=5.0)
                break
            time.sleep(0.05)
        process_seconds = time.perf_counter() - started
        CHILDREN.pop(proc.pid, None)
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
