"""Faults: what makes the simulator behave like a service on a bad day, seeded so runs replay."""

from __future__ import annotations

import dataclasses
import email.utils
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["FaultInjector", "Faults", "Verdict"]

SORTS = ("newest", "oldest")
WRAPPERS = ("current", "draft")
RETRY_AFTER_FORMATS = ("seconds", "date", "none")
MALFORMED = (None, "not_json", "no_job_list", "html")
WINDOWS = ("half_open", "inclusive", "ignored")
WINDOW_SELECTS = ("start", "overlap", "finish")
OVERSIZE = ("refuse", "cap", "serve", "413", "422", "500", "drop")
TIES = ("stable", "shuffled")
NEXT_LINKS = ("full", "short")
TIMES_SHOWN = ("held", "milliseconds")


@dataclass
class Faults:
    """Fault settings; all default to a healthy service.

    Faults apply to the jobs endpoints (v1 and v2). The token endpoint only gets ``latency_ms``,
    unless ``faults_on_token`` is set.

    Attributes:
        latency_ms: Sleep before answering each request (in its own thread: concurrent
            requests overlap).
        error_rate: Probability of a 500/502/503 (picked from ``error_statuses``) with a JSON body.
        error_statuses: The statuses ``error_rate`` picks from.
        drop_rate: Probability of closing the connection without any response.
        truncate_rate: Probability of a 200 whose body is cut mid-JSON (Content-Length matches
            the cut body, so HTTP-wise the answer is complete).
        rate_limit_per_second: Token bucket (capacity: one second's worth, at least 1);
            requests over it get 429.
        rate_limit_burst: Probability of a 429 regardless of the bucket.
        max_in_flight: Jobs requests beyond this many at once get 429.
        retry_after_s: Retry-After for 429s not caused by the bucket (the bucket computes its own).
        retry_after_format: ``"seconds"``, ``"date"`` (an HTTP date) or ``"none"`` (no header).
        token_lifetime_s: ``expires_in`` of new tokens; tokens stop working after it.
        churn_per_page: On every jobs request, insert this many new jobs and purge as many
            of the oldest, before answering.
        sort: ``"newest"`` (startTime desc, jobId desc) or ``"oldest"`` (the reverse).
        wrapper: ``"current"`` ({"totalCount", "pageIndex", "pageSize", "nextLink", "jobs"}) or
            ``"draft"`` ({"totalNumber", "result"}).
        repeat_page: A broken server: page 1's jobs whatever page is asked.
        total_offset: A broken server: reports totalCount + this.
        malformed_response: ``None``, ``"not_json"``, ``"no_job_list"`` or ``"html"``: served
            with status 200 instead of the answer.
        faults_on_token: Apply drop/error/rate-limit/truncate to the token endpoint too.
        token_error_rate: Probability of a 503 from the token endpoint alone (the jobs API stays
            healthy): an identity outage.
        token_drop_rate: Probability that the token endpoint alone closes the connection unanswered.
        clock_offset_s: The service's clock runs this many seconds ahead of this machine's (negative:
            behind). Start and finish times, the ``Date`` header and expiry checks follow it.
        window: How the server reads ``startTime``/``endTime``: ``"half_open"`` (``[start, end)``, the
            default), ``"inclusive"`` (``[start, end]``: a job at exactly ``endTime`` is served too) or
            ``"ignored"`` (a broken server: every job, whatever the window).
        window_selects: What the window selects: ``"start"`` (jobs that started in it, the default),
            ``"overlap"`` (jobs that ran during it: started before its end, not finished before its
            start; running jobs too) or ``"finish"`` (jobs that finished in it; never a running job).
        window_start_exclusive: The window's start bound is exclusive: ``(start, end)``.
        max_page_size: The largest page size served as asked.
        oversize_pages: A larger ``pageSize``: ``"refuse"`` (400, the default), ``"cap"`` (served at
            ``max_page_size``), ``"serve"`` (served as asked, any size), or ``"413"``, ``"422"``,
            ``"500"`` (answered with that status, every time) or ``"drop"`` (the connection closed
            unanswered, every time).
        ties: Order of jobs with equal start times: ``"stable"`` (by jobId) or ``"shuffled"`` (anew
            for every request).
        report_total: Whether answers carry the total (``totalCount`` / ``totalNumber``).
        strict_get: v2 as AvePoint's page documents it: ``type``, ``startTime`` and ``finishTime`` are
            required; a request without one of them is answered 400 with ASP.NET's validation body
            naming each (``"The startTime field is required."``).
        repeat_in_page: The first job of every page is listed this many extra times at the end of
            the page (AvePoint's own response sample lists one job three times); totals unchanged.
        next_link: ``"full"`` (``/dynamicsbackup/jobs?...``) or ``"short"`` (``/jobs?...``, without
            the prefix, as in AvePoint's response sample).
        times_shown: ``"held"`` (times as the service holds them, 0 to 7 fractional digits) or
            ``"milliseconds"`` (rounded to the millisecond, as AvePoint's samples suggest, while
            windows still filter on the finer time held).
    """

    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    rate_limit_per_second: float | None = None
    rate_limit_burst: float = 0.0
    max_in_flight: int | None = None
    retry_after_s: int = 1
    retry_after_format: str = "seconds"
    token_lifetime_s: float = 3600
    churn_per_page: int = 0
    sort: str = "newest"
    wrapper: str = "current"
    repeat_page: bool = False
    total_offset: int = 0
    malformed_response: str | None = None
    faults_on_token: bool = False
    token_error_rate: float = 0.0
    token_drop_rate: float = 0.0
    clock_offset_s: float = 0.0
    window: str = "half_open"
    window_selects: str = "start"
    window_start_exclusive: bool = False
    max_page_size: int = 100
    oversize_pages: str = "refuse"
    ties: str = "stable"
    report_total: bool = True
    strict_get: bool = False
    repeat_in_page: int = 0
    next_link: str = "full"
    times_shown: str = "held"

    def __post_init__(self) -> None:
        self.error_statuses = tuple(self.error_statuses)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        for name in (
            "error_rate",
            "drop_rate",
            "truncate_rate",
            "rate_limit_burst",
            "token_error_rate",
            "token_drop_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value!r}")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.rate_limit_per_second is not None and self.rate_limit_per_second <= 0:
            raise ValueError("rate_limit_per_second must be > 0 or None")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1 or None")
        if self.token_lifetime_s <= 0:
            raise ValueError("token_lifetime_s must be > 0")
        if self.churn_per_page < 0:
            raise ValueError("churn_per_page must be >= 0")
        if not self.error_statuses:
            raise ValueError("error_statuses must not be empty")
        checks: tuple[tuple[str, Any, tuple[Any, ...]], ...] = (
            ("sort", self.sort, SORTS),
            ("wrapper", self.wrapper, WRAPPERS),
            ("retry_after_format", self.retry_after_format, RETRY_AFTER_FORMATS),
            ("malformed_response", self.malformed_response, MALFORMED),
            ("window", self.window, WINDOWS),
            ("window_selects", self.window_selects, WINDOW_SELECTS),
            ("oversize_pages", self.oversize_pages, OVERSIZE),
            ("ties", self.ties, TIES),
            ("next_link", self.next_link, NEXT_LINKS),
            ("times_shown", self.times_shown, TIMES_SHOWN),
        )
        if self.repeat_in_page < 0:
            raise ValueError("repeat_in_page must be >= 0")
        if self.max_page_size < 1:
            raise ValueError("max_page_size must be >= 1")
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    def replace(self, **changes: Any) -> Faults:
        """A copy with some settings changed (TypeError names an unknown setting)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown fault setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-friendly values."""
        out = dataclasses.asdict(self)
        out["error_statuses"] = list(self.error_statuses)
        return out


@dataclass(frozen=True)
class Verdict:
    """What to do with a request instead of answering it."""

    kind: Literal["drop", "429", "error"]
    status: int = 0
    retry_after: str | None = None


class FaultInjector:
    """Draws faults from one seeded RNG (sequential runs replay exactly) and keeps the bucket.

    Args:
        seed: The simulator's seed.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"faults:{seed}")
        self._lock = threading.Lock()
        self._tokens: float | None = None
        self._refilled = time.monotonic()
        self._rate: float | None = None

    def _chance(self, probability: float) -> bool:
        # Draw only when the fault is on, so turning one fault on does not reshuffle others.
        return probability > 0 and self._rng.random() < probability

    def before(self, faults: Faults, in_flight: int, now_s: float | None = None) -> Verdict | None:
        """Decide, before answering, whether a request is dropped, limited or fails.

        Args:
            faults: Current settings.
            in_flight: Requests of the same kind in flight, this one included.
            now_s: The service's clock (epoch seconds), for ``Retry-After`` dates; default this machine's.
        """
        now = time.time() if now_s is None else now_s
        with self._lock:
            if self._chance(faults.drop_rate):
                return Verdict("drop")
            if faults.max_in_flight is not None and in_flight > faults.max_in_flight:
                return Verdict("429", 429, self._retry_after(faults, faults.retry_after_s, now))
            wait = self._take_token(faults.rate_limit_per_second)
            if wait is not None:
                return Verdict("429", 429, self._retry_after(faults, wait, now))
            if self._chance(faults.rate_limit_burst):
                return Verdict("429", 429, self._retry_after(faults, faults.retry_after_s, now))
            if self._chance(faults.error_rate):
                statuses = faults.error_statuses
                return Verdict("error", statuses[self._rng.randrange(len(statuses))])
            return None

    def before_token(self, faults: Faults) -> Verdict | None:
        """The identity service's own outage: a drop or a 503 of the token endpoint alone."""
        with self._lock:
            if self._chance(faults.token_drop_rate):
                return Verdict("drop")
            if self._chance(faults.token_error_rate):
                return Verdict("error", 503)
            return None

    def truncate(self, faults: Faults) -> float | None:
        """If this 200 is to be cut short, the fraction of the body to keep."""
        with self._lock:
            if self._chance(faults.truncate_rate):
                return 0.2 + 0.6 * self._rng.random()
            return None

    def _take_token(self, rate: float | None) -> int | None:
        """Token bucket: None when a token was taken, else seconds until the next one."""
        now = time.monotonic()
        if rate is None:
            self._tokens = None
            return None
        capacity = max(1.0, rate)
        if self._tokens is None or self._rate != rate:
            self._tokens, self._rate = capacity, rate
        else:
            self._tokens = min(capacity, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self._tokens) / rate))

    @staticmethod
    def _retry_after(faults: Faults, seconds: int, now_s: float) -> str | None:
        if faults.retry_after_format == "none":
            return None
        if faults.retry_after_format == "date":
            return email.utils.formatdate(now_s + seconds, usegmt=True)
        return str(int(seconds))
