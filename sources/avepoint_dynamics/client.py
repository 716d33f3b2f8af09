"""One request for one page of jobs, for both API generations, with retries and rate-limit manners."""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import requests
import requests.auth
from requests.adapters import HTTPAdapter

from .auth import TokenProvider
from .errors import ApiError, AuthError, ContractError
from .model import JobsPage, Window
from .query import JobsQuery
from .retries import (
    HostContact,
    RequestTally,
    RetryPolicy,
    Transient,
    retry_after_seconds,
    retrying,
    short,
    tls_trust_error,
    transient_answer,
    transient_exception,
)
from .settings import API_PATHS
from .stopping import current_stop
from .times import ServiceClock, format_api_time

__all__ = ["AdaptiveLimit", "JobsClient", "JobsPage", "RetryPolicy", "Window"]

logger = logging.getLogger(__name__)

_MICROSECOND = timedelta(microseconds=1)
#: The start sent for an open start bound in v2 (which requires one): before any job of this service.
V2_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)
#: "The startTime field is required." (ASP.NET's wording), "'pageSize' must be ...": a field named.
_NAMED_FIELD = re.compile(r"\bThe '?([A-Za-z][\w.]*)'? field is required|^'([A-Za-z][\w.]*)'")


class _Bearer(requests.auth.AuthBase):
    """The bearer token as requests' auth: also spares requests a ~/.netrc lookup on every page."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_Bearer(<token>)"  # never the token itself


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
        #: The jobs API's clock, read from the ``Date`` of its answers: a run's windows end by it.
        self.clock = ServiceClock()
        #: The service excludes the window's start bound (``check --deep``).
        self.start_exclusive = False
        self._contact = HostContact()
        #: Retries and 429s of this client's requests (the run log's).
        self.tally = RequestTally()
        self._count_lock = threading.Lock()
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
        """Fetch page ``number`` (1-based) of the jobs ``window`` selects.

        Retries transient failures (429, 5xx, timeouts, dropped connections, a cut JSON body) with
        exponential backoff and full jitter, honouring ``Retry-After``; renews the token once on a 401.
        A host that never answered gets a few quick attempts only: that is a wrong address, not an outage.

        Raises:
            ApiError: a non-retryable answer, an answer that makes no sense, or retries ran out.
            AuthError: the API still says 401 after a token renewal.
        """
        size = page_size or self.query.page_size
        what = f"page {number} of window {window} (page size {size})"
        policy = self.retry
        try:
            page = retrying(policy, self._contact, lambda: what, self.tally)(
                self._attempt, window, number, size, what
            )
        except Transient as error:
            if error.unreached and not self._contact.answered:
                raise ApiError(
                    f"cannot connect to the jobs API at {self.query.base_url} ({error}); check "
                    f"{self.query.base_url_from} and the network"
                ) from None
            raise ApiError(
                f"gave up on {what} at {self._url} after {policy.max_attempts} attempts or "
                f"{policy.max_seconds:.0f} s; last answer: {error}",
                error.status,
            ) from None
        page.window = window
        return page

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
        stop = current_stop()
        if stop is not None:
            stop.check()  # a stopped run sends nothing more
        self.limit.acquire()
        throttled, pause = False, None
        try:
            token = self.tokens.token() if rejected is None else self.tokens.renew(rejected)
            auth = _Bearer(token)
            with self._count_lock:
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
            self._contact.mark_answered()
            self.clock.observe(response.headers.get("Date"))
            if response.status_code == 429:
                throttled, pause = True, retry_after_seconds(response)
        except requests.RequestException as error:
            transient = transient_exception(error)
            if transient is None:
                raise tls_trust_error("the jobs API", self.query.base_url, error) from None
            raise transient from None
        finally:
            self.limit.release(throttled=throttled, pause_s=pause)
        return response, token

    def _page_request(self, window: Window, number: int, size: int) -> tuple[str, dict[str, Any]]:
        """v1 POSTs a JSON body; v2 GETs the same filters as a query, its window end named finishTime.

        Windows are half-open ``[start, end)``. A service known (``check --deep``) to exclude its start
        bound gets a start one microsecond earlier: a job at exactly ``start`` must not fall between two
        windows. Whatever a bound lets in twice (an inclusive end, that microsecond) is a job outside
        the window it was asked for, left to the window it belongs to (``rows``).

        v1 sends only what the seed's body declares, each field only when set (every one is optional).
        v2 always sends ``type``, ``startTime`` and ``finishTime``: AvePoint's page marks them
        *Required: Yes*. An open start is :data:`V2_FLOOR`, an open end the latest the service's
        time can be now (``ServiceClock.latest``): no job that has started is left out.
        """
        v2 = self.query.api_version == "v2"
        bounds: dict[str, Any] = {}
        start = window.start if window.start is not None or not v2 else V2_FLOOR
        if start is not None:
            if self.start_exclusive and window.start is not None:
                start -= _MICROSECOND
            bounds["startTime"] = format_api_time(start)
        filters = self.query.filters()
        if window.status is not None:
            filters["status"] = window.status
        end = window.end if window.end is not None or not v2 else self.clock.latest()
        if end is not None:
            bounds["finishTime" if v2 else "endTime"] = format_api_time(end)
        if not v2:
            page_info = {"currentPage": number, "pageSize": size}
            return "POST", {"json": {"pageInfo": page_info, **filters, **bounds}}
        query = {"pageIndex": number, "pageSize": size, "type": 0, **filters, **bounds}
        return "GET", {"params": query}

    def _read(self, response: requests.Response, number: int, what: str) -> JobsPage:
        status = response.status_code
        transient = transient_answer(response)
        if transient is not None:
            raise transient
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
        if status == 400:
            fields = named_fields(response)
            if fields:
                raise ContractError(
                    f"the jobs API at {self._url} refused {what} naming the field(s) "
                    f"{', '.join(fields)} (HTTP 400: {short(response.text)}); the request this "
                    f"connector builds for api_version {self.query.api_version!r} does not match "
                    "what this service requires: check api_version, and report it with this line",
                    fields,
                )
        if status >= 400:
            raise ApiError(
                f"the jobs API rejected {what} (HTTP {status}): {short(response.text)}", status
            )
        try:
            # ~2x stdlib json, and pages are parsed on the worker threads
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise Transient(
                f"HTTP {status} with a body that is not complete JSON "
                f"({len(response.content)} bytes, starts {short(response.text, 60)!r})"
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
            f"the answer to {what} lists a job that is not an object: {short(repr(bad))}"
        )
    return JobsPage(jobs=_once_each(jobs), total=total, number=number, keys=tuple(sorted(payload)))


def _once_each(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The page with each ``jobId`` once: AvePoint's own response sample lists one job three times.

    The first copy stays; a page whose ids are all distinct is returned as it is.
    """
    ids = [job.get("jobId") for job in jobs]
    if len(set(map(repr, ids))) == len(ids):
        return jobs
    seen: set[str] = set()
    kept = []
    for job, job_id in zip(jobs, ids, strict=True):
        key = repr(job_id)
        if job_id is None or key not in seen:
            seen.add(key)
            kept.append(job)
    return kept


def named_fields(response: requests.Response) -> list[str]:
    """The request fields a 400 names: AvePoint's ``field``, ASP.NET's ``errors`` keys, or its wording.

    Args:
        response: A 400 answer.

    Returns:
        The field names in the order named (empty when the answer names none).
    """
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    names: list[str] = []
    messages: list[str] = []
    if isinstance(body, dict):
        if isinstance(body.get("field"), str):
            names.append(body["field"])
        errors = body.get("errors")
        if isinstance(errors, dict):
            for key, said in errors.items():
                if isinstance(key, str) and key and not key.startswith("$"):
                    names.append(key)
                messages.extend(str(item) for item in (said if isinstance(said, list) else [said]))
        messages.extend(str(body.get(key) or "") for key in ("message", "title"))
    else:
        messages.append(response.text[:2000])
    for message in messages:
        for match in _NAMED_FIELD.finditer(message):
            names.append(match.group(1) or match.group(2))
    return list(dict.fromkeys(names))
