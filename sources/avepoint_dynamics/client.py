"""One request for one page of jobs, for both API generations, with retries and rate-limit manners."""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import requests
import requests.auth
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from .auth import TokenProvider
from .errors import ApiError, AuthError
from .query import JobsQuery
from .settings import API_PATHS
from .times import format_api_time

logger = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Window:
    """A half-open range of job start times ``[start, end)``; ``start=None`` means from the beginning."""

    start: datetime | None
    end: datetime

    def __str__(self) -> str:
        start = format_api_time(self.start) if self.start else "beginning"
        return f"[{start}, {format_api_time(self.end)})"


@dataclass
class JobsPage:
    """One answer of the jobs API, whichever wrapper it came in.

    Attributes:
        jobs: The job objects, as the API sent them.
        total: The number of jobs the API says match the request (None if it did not say).
        number: The 1-based page number asked for.
    """

    jobs: list[dict[str, Any]]
    total: int | None
    number: int


@dataclass
class RetryPolicy:
    """How hard to try before giving up on a page (``[runtime]``-like settings of the source).

    Attributes:
        max_attempts: Attempts per request, the first included.
        max_seconds: Total time one request may spend retrying.
        backoff_s: Base of the exponential backoff; each wait is random in [0, backoff * 2**n] (full jitter).
        max_delay_s: Cap of one wait (a longer ``Retry-After`` is honoured up to ``max_seconds``).
        timeout_s: Connect and read timeout of one attempt.
    """

    max_attempts: int = 8
    max_seconds: float = 300.0
    backoff_s: float = 0.5
    max_delay_s: float = 30.0
    timeout_s: float = 60.0


class _Bearer(requests.auth.AuthBase):
    """The bearer token as requests' auth: also spares requests a ~/.netrc lookup on every page."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_Bearer(<token>)"  # never the token itself


class _Transient(Exception):
    """A failure worth another attempt; carries what to say if attempts run out."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


@dataclass
class AdaptiveLimit:
    """How many requests may be in flight: halves on a 429, grows back by one after a run of successes.

    A ``Retry-After`` pauses every worker, not only the one that was told: the server spoke to the client.
    """

    ceiling: int
    limit: int = 0
    in_flight: int = 0
    _successes: int = 0
    _paused_until: float = 0.0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.limit = self.ceiling

    def acquire(self) -> None:
        with self._cond:
            while True:
                wait = self._paused_until - time.monotonic()
                if wait <= 0 and self.in_flight < self.limit:
                    self.in_flight += 1
                    return
                self._cond.wait(timeout=wait if wait > 0 else None)

    def release(self, *, throttled: bool, pause_s: float | None = None) -> None:
        with self._cond:
            self.in_flight -= 1
            if throttled:
                self.limit = max(1, self.limit // 2)
                self._successes = 0
                if pause_s:
                    self._paused_until = max(self._paused_until, time.monotonic() + pause_s)
            else:
                self._successes += 1
                if self.limit < self.ceiling and self._successes >= self.limit * 4:
                    self.limit += 1
                    self._successes = 0
            self._cond.notify_all()


class JobsClient:
    """Asks the jobs API for one page at a time; thread-safe, so pages can be fetched concurrently.

    Args:
        query: Validated filters, API root and generation.
        tokens: Source of bearer tokens.
        verify: ``True`` or the path of a CA bundle.
        retry: Retry and timeout settings.

    Example:
        >>> client = JobsClient(query, tokens)
        >>> page = client.fetch_page(Window(None, datetime.now(timezone.utc)), number=1)
        >>> page.total, len(page.jobs)
        (1234, 100)
    """

    def __init__(
        self,
        query: JobsQuery,
        tokens: TokenProvider,
        *,
        verify: bool | str = True,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.query = query
        self.tokens = tokens
        self.retry = retry or RetryPolicy()
        self.limit = AdaptiveLimit(query.max_concurrency)
        self.requests_sent = 0
        self._url = query.base_url + API_PATHS[query.api_version]
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(query.max_concurrency, 4))
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        # The environment (HTTPS_PROXY / NO_PROXY, REQUESTS_CA_BUNDLE when verify is True) is read once,
        # by requests' own rules, for the one URL we call: per request it walked every environment
        # variable twice (~0.15 ms of GIL time a request). Passed per request, as a session's `verify`
        # would lose to REQUESTS_CA_BUNDLE.
        environment = self._session.merge_environment_settings(self._url, {}, None, verify, None)
        self._proxies = dict(environment["proxies"])
        self._verify: bool | str = (
            environment["verify"] if environment["verify"] is not None else True
        )
        self._session.trust_env = False

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def fetch_page(self, window: Window, number: int, page_size: int | None = None) -> JobsPage:
        """Fetch page ``number`` (1-based) of the jobs that started in ``window``.

        Retries transient failures (429, 5xx, timeouts, dropped connections, a cut JSON body) with
        exponential backoff and full jitter, honouring ``Retry-After``; renews the token once on a 401.

        Raises:
            ApiError: a non-retryable answer, an answer that makes no sense, or retries ran out.
            AuthError: the API still says 401 after a token renewal.
        """
        size = page_size or self.query.page_size
        what = f"page {number} of window {window} (page size {size})"
        policy = self.retry
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_seconds),
            wait=self._wait,
            before_sleep=lambda state: logger.info(
                "retrying %s after attempt %d: %s", what, state.attempt_number, _outcome(state)
            ),
            reraise=True,
        )
        try:
            return retrying(self._attempt, window, number, size, what)
        except _Transient as error:
            raise ApiError(
                f"gave up on {what} at {self._url} after {policy.max_attempts} attempts or "
                f"{policy.max_seconds:.0f} s; last answer: {error}"
            ) from None

    def _wait(self, state: RetryCallState) -> float:
        policy = self.retry
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Transient) and error.retry_after is not None:
            return min(error.retry_after, policy.max_seconds)
        ceiling = min(policy.max_delay_s, policy.backoff_s * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)

    def _attempt(self, window: Window, number: int, size: int, what: str) -> JobsPage:
        response, token = self._send(window, number, size, rejected=None)
        if response.status_code == 401:
            response, _ = self._send(window, number, size, rejected=token)
            if response.status_code == 401:
                raise AuthError(
                    f"the jobs API at {self._url} refused a fresh token for {what} (401 twice); "
                    "the app may lack the Dynamics.ReadWrite.All permission in this region"
                )
        return self._read(response, number, what)

    def _send(
        self, window: Window, number: int, size: int, rejected: str | None
    ) -> tuple[requests.Response, str]:
        """One HTTP request; the token is taken once a slot is free, so a wait never ages it."""
        headers = {"Accept": "application/json"}
        timeout = (min(10.0, self.retry.timeout_s), self.retry.timeout_s)
        self.limit.acquire()
        throttled, pause = False, None
        try:
            token = self.tokens.token() if rejected is None else self.tokens.renew(rejected)
            auth = _Bearer(token)
            self.requests_sent += 1
            method, payload = self._page_request(window, number, size)
            response = self._session.request(
                method,
                self._url,
                headers=headers,
                auth=auth,
                timeout=timeout,
                verify=self._verify,
                proxies=self._proxies,
                **payload,
            )
            if response.status_code == 429:
                throttled, pause = True, _retry_after(response)
        except requests.exceptions.SSLError as error:
            raise ApiError(
                f"TLS to {self._url} failed ({_short(str(error), 120)}); if a proxy or private CA "
                "signs this host, set ca_bundle to its CA file"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise _Transient(f"{type(error).__name__}: {_short(str(error))}") from None
        except requests.exceptions.ChunkedEncodingError as error:
            raise _Transient(f"connection dropped mid-body ({_short(str(error))})") from None
        finally:
            self.limit.release(throttled=throttled, pause_s=pause)
        return response, token

    def _page_request(self, window: Window, number: int, size: int) -> tuple[str, dict[str, Any]]:
        """v1 POSTs a JSON body; v2 GETs the same filters as a query, its window end named finishTime."""
        bounds = {"startTime": format_api_time(window.start)} if window.start is not None else {}
        end = format_api_time(window.end)
        if self.query.api_version == "v1":
            page_info = {"currentPage": number, "pageSize": size}
            body = {"pageInfo": page_info, **self.query.filters(), **bounds, "endTime": end}
            return "POST", {"json": body}
        query = {"pageIndex": number, "pageSize": size, **self.query.filters(), **bounds}
        return "GET", {"params": {**query, "finishTime": end}}

    def _read(self, response: requests.Response, number: int, what: str) -> JobsPage:
        status = response.status_code
        if status in _RETRY_STATUSES:
            raise _Transient(
                f"HTTP {status}: {_short(response.text)}",
                retry_after=_retry_after(response) if status in (429, 503) else None,
            )
        if status == 404:
            raise ApiError(
                f"the jobs API is not at {self._url} (404 for {what}); check region / base_url "
                f"(Cloud Backup for Dynamics 365 may not be offered there) and api_version"
            )
        if status == 403:
            raise ApiError(
                f"the jobs API at {self._url} forbids {what} (403); grant the app "
                "Dynamics.ReadWrite.All in AvePoint Online Services"
            )
        if status >= 400:
            raise ApiError(f"the jobs API rejected {what} (HTTP {status}): {_short(response.text)}")
        try:
            payload = orjson.loads(
                response.content
            )  # ~2x stdlib json, and pages are parsed on workers
        except orjson.JSONDecodeError:
            raise _Transient(
                f"HTTP {status} with a body that is not complete JSON "
                f"({len(response.content)} bytes, starts {_short(response.text, 60)!r})"
            ) from None
        return _page(payload, number, what)


def _page(payload: Any, number: int, what: str) -> JobsPage:
    """Accept both wrappers: ``{"totalCount", "jobs"}`` and the draft ``{"totalNumber", "result"}``."""
    if not isinstance(payload, dict):
        raise ApiError(f"the answer to {what} is JSON {type(payload).__name__}, not an object")
    jobs = payload.get("jobs", payload.get("result"))
    if not isinstance(jobs, list):
        raise ApiError(
            f"the answer to {what} has no job list ('jobs' or 'result'); keys: {sorted(payload)[:10]}"
        )
    raw_total = payload.get("totalCount", payload.get("totalNumber"))
    total: int | None = None
    if raw_total is not None:
        if isinstance(raw_total, bool) or not isinstance(raw_total, int | str):
            raise ApiError(f"the answer to {what} has a total that is not a number: {raw_total!r}")
        try:
            total = int(raw_total)
        except ValueError:
            raise ApiError(
                f"the answer to {what} has a total that is not a number: {raw_total!r}"
            ) from None
        if total < 0:
            raise ApiError(f"the answer to {what} has a negative total: {total}")
    bad = next((job for job in jobs if not isinstance(job, dict)), None)
    if bad is not None:
        raise ApiError(
            f"the answer to {what} lists a job that is not an object: {_short(repr(bad))}"
        )
    return JobsPage(jobs=jobs, total=total, number=number)


def _retry_after(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds, given as seconds or as an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _outcome(state: RetryCallState) -> str:
    error = state.outcome.exception() if state.outcome else None
    return str(error) if error else "ok"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
