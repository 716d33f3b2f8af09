"""Request counters for tests: by endpoint and status, and the most jobs requests in flight."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

__all__ = ["Stats"]


class Stats:
    """Thread-safe counters.

    ``in_flight`` / ``max_in_flight`` count requests to the jobs endpoints (v1 and v2), the API
    under test; token requests are counted apart in ``token_requests``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._token_requests = 0
        self._jobs_requests = 0
        self._in_flight = 0
        self._max_in_flight = 0

    def enter_jobs(self) -> int:
        """A jobs request starts; returns how many are in flight now, itself included."""
        with self._lock:
            self._jobs_requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return self._in_flight

    def leave_jobs(self) -> None:
        """A jobs request ended (answered or dropped)."""
        with self._lock:
            self._in_flight -= 1

    def token_request(self) -> None:
        """A token request arrived."""
        with self._lock:
            self._token_requests += 1

    def record(self, endpoint: str, status: int | str) -> None:
        """Count one answer (``status`` is ``"drop"`` for a dropped connection)."""
        with self._lock:
            self._requests[f"{endpoint} {status}"] += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"requests": {"GetJobs 200": n, ...}, "max_in_flight", "token_requests", "jobs_requests", "in_flight"}``."""
        with self._lock:
            return {
                "requests": dict(sorted(self._requests.items())),
                "max_in_flight": self._max_in_flight,
                "token_requests": self._token_requests,
                "jobs_requests": self._jobs_requests,
                "in_flight": self._in_flight,
            }

    def reset(self) -> None:
        """Zero the counters (requests still in flight stay counted as in flight)."""
        with self._lock:
            self._requests.clear()
            self._token_requests = 0
            self._jobs_requests = 0
            self._max_in_flight = self._in_flight
