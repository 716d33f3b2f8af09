"""The simulator in a process of its own: started, driven through its control endpoints, stopped.

A fresh ``avepoint-simulator`` per scenario, with its own GIL: serving TLS and JSON would otherwise
compete with the contender it serves.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from bench.harness import CHILDREN, base_env, kill_group


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
        CHILDREN[self.proc.pid] = self.proc
        self.info = self._read_info(timeout=300)
        self.session = requests.Session()
        self.session.trust_env = False
        self.ca_file: str = self.info["ca_file"]
        self.base_url: str = self.info["base_url"]

    def _read_info(self, timeout: float) -> dict[str, Any]:
        """The first line the simulator prints: its URLs, credentials and CA file, as JSON."""
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
        """Call ``/_simulator/ACTION`` (stats, reset_stats, jobs, faults); its JSON answer."""
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
        """The simulator's counters: ``jobs_requests``, ``token_requests``, ``max_in_flight``, ..."""
        stats: dict[str, Any] = self.control("GET", "stats")
        return stats

    def reset_stats(self) -> None:
        """Zero the counters, before each contender."""
        self.control("POST", "reset_stats")

    def total(self) -> int:
        """How many jobs the simulator's history holds now."""
        return int(self.control("POST", "jobs", {})["total"])

    def set_latency(self, latency_ms: float) -> None:
        """Add ``latency_ms`` to every request from now on."""
        self.control("POST", "faults", {"latency_ms": latency_ms})

    def stop(self) -> None:
        """Kill the simulator's process group and close its pipes."""
        kill_group(self.proc)
        CHILDREN.pop(self.proc.pid, None)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()
