"""When to try a request again, for both services (the identity service and the jobs API).

One policy for every request: 429 (honouring ``Retry-After``), 500/502/503/504, timeouts, dropped
connections. A host that has never answered gets a short budget: a refused connection or an unknown name
on the very first request is a wrong address far more often than an outage. Once a host has answered,
failures get the patient retries.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from .errors import ConfigError
from .stopping import interruptible_sleep
from .times import parse_http_date

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Statuses worth another attempt.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Attempts at a host that has never answered (connection refused, unknown host, timeouts).
FIRST_CONTACT_ATTEMPTS = 3


@dataclass
class RetryPolicy:
    """How hard to try before giving up on a request (``max_attempts`` is a source setting).

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


class Transient(Exception):
    """A failure worth another attempt; carries what to say if attempts run out.

    Args:
        what: The failure, in a few words (``HTTP 503: ...``, ``ConnectionError: ...``).
        retry_after: Seconds the service asked us to wait, if it did.
        unreached: The host did not answer at all (refused, unknown, timed out).
        status: The HTTP status of the answer, if there was one.
    """

    def __init__(
        self,
        what: str,
        retry_after: float | None = None,
        unreached: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(what)
        self.retry_after = retry_after
        self.unreached = unreached
        self.status = status


class RequestTally:
    """How many attempts were repeated, and how many answers were 429 (thread-safe): the run log's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries = 0
        self.rate_limited = 0

    def retried(self, error: BaseException | None) -> None:
        """One more attempt after ``error``; a 429 counts as rate limited too."""
        with self._lock:
            self.retries += 1
            if isinstance(error, Transient) and error.status == 429:
                self.rate_limited += 1


class HostContact:
    """Whether a host has answered once (thread-safe): until it has, connection failures are not retried long."""

    def __init__(self) -> None:
        self._answered = threading.Event()

    @property
    def answered(self) -> bool:
        return self._answered.is_set()

    def mark_answered(self) -> None:
        self._answered.set()


def retrying(
    policy: RetryPolicy,
    contact: HostContact,
    what: Callable[[], str],
    tally: RequestTally | None = None,
) -> Retrying:
    """A tenacity ``Retrying`` that retries :class:`Transient` under ``policy``.

    Its waits end at once when the run is stopped (:mod:`avepoint_dynamics.stopping`).

    Args:
        policy: Attempts, time and backoff.
        contact: The host's contact state: a host that never answered gets ``FIRST_CONTACT_ATTEMPTS``.
        what: Names the request in the log line before each retry.
        tally: Counts the retries (and the 429s among them), if given.
    """

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= policy.max_attempts:
            return True
        if (
            state.seconds_since_start is not None
            and state.seconds_since_start >= policy.max_seconds
        ):
            return True
        error = state.outcome.exception() if state.outcome else None
        first_contact = isinstance(error, Transient) and error.unreached and not contact.answered
        return first_contact and state.attempt_number >= FIRST_CONTACT_ATTEMPTS

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, Transient) and error.retry_after:
            # ``Retry-After: 0`` or a date already past says "now": that is the backoff below, not a
            # hot loop of immediate retries.
            return min(error.retry_after, policy.max_seconds)
        if isinstance(error, Transient) and error.unreached and not contact.answered:
            return min(1.0, policy.backoff_s * state.attempt_number)  # a few seconds in all
        ceiling = min(policy.max_delay_s, policy.backoff_s * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.info("retrying %s after attempt %d: %s", what(), state.attempt_number, error)
        if tally is not None:
            tally.retried(error)

    return Retrying(
        retry=retry_if_exception_type(Transient),
        stop=stop,
        wait=wait,
        before_sleep=before_sleep,
        sleep=interruptible_sleep,
        reraise=True,
    )


def transient_answer(response: requests.Response) -> Transient | None:
    """A :class:`Transient` for an answer worth retrying (429, 5xx), else None."""
    status = response.status_code
    if status not in RETRY_STATUSES:
        return None
    retry_after = retry_after_seconds(response) if status in (429, 503) else None
    return Transient(
        f"HTTP {status}: {short(response.text)}", retry_after=retry_after, status=status
    )


def transient_exception(error: requests.RequestException) -> Transient | None:
    """A :class:`Transient` for a connection failure worth retrying, else None (a TLS trust failure is not)."""
    text = str(error)
    if isinstance(error, requests.exceptions.SSLError):
        if tls_trust_failure(error) is not None:
            return None
        return Transient(f"TLS error ({short(text, 120)})")  # an EOF mid-handshake: a drop
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return Transient(f"connection dropped mid-body ({short(text)})")
    if isinstance(error, requests.exceptions.ProxyError):
        return Transient(
            f"the proxy refused or could not be reached ({_reason(error)}; HTTPS_PROXY / NO_PROXY)",
            unreached=True,
        )
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return Transient(f"connect timeout ({short(text, 120)})", unreached=True)
    if isinstance(error, requests.ConnectionError):
        # Refused, or a name that does not resolve: nothing answered. A connection the server accepted
        # and then dropped proves the host is there: that one is an ordinary transient failure.
        unreached = "Failed to establish a new connection" in text or "NameResolution" in text
        reason = _reason(error)
        url = str(getattr(error.request, "url", "") or "")
        if url.lower().startswith("http://") and reason in _DROPPED:
            # A plain-HTTP request to an HTTPS port is dropped without an answer: say the likely
            # cause, and give it the short budget of a host that never answered.
            return Transient(
                f"{reason}; the URL is http://: if the service speaks HTTPS (AvePoint's does), "
                "use https://",
                unreached=True,
            )
        return Transient(reason, unreached=unreached)
    if isinstance(error, requests.Timeout):
        return Transient(f"read timeout ({short(text, 120)})")
    return None


def tls_trust_failure(error: requests.RequestException) -> str | None:
    """What TLS refused, when the failure is about trust (certificate or host name); else None."""
    text = str(error)
    for marker, what in (
        ("CERTIFICATE_VERIFY_FAILED", "its certificate is not signed by a CA this machine trusts"),
        ("certificate verify failed", "its certificate is not signed by a CA this machine trusts"),
        ("doesn't match", "its certificate is for another host name"),
        ("hostname mismatch", "its certificate is for another host name"),
    ):
        if marker in text:
            return what
    return None


def retry_after_seconds(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds, given as seconds or as an HTTP date.

    A date is measured against the answer's own ``Date`` header (the service's clock), not this
    machine's: with a loader clock hours off, the local reading would wait hours or not at all.
    """
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    moment = parse_http_date(value)
    if moment is None:
        return None
    served = parse_http_date(response.headers.get("Date"))
    if served is None:
        return max(0.0, moment.timestamp() - time.time())
    return max(0.0, (moment - served).total_seconds())


def tls_trust_error(service: str, root: str, error: requests.RequestException) -> ConfigError:
    """A TLS trust failure, named as such, with the setting that fixes it."""
    what = tls_trust_failure(error) or "the TLS handshake failed"
    return ConfigError(
        "ca_bundle",
        f"TLS trust failure talking to {service} at {root}: {what}. If a proxy or a private CA "
        "signs it, set ca_bundle (or REQUESTS_CA_BUNDLE) to that CA's PEM file; otherwise check "
        "the host name",
    )


#: Reasons of a connection the host accepted and then dropped without answering.
_DROPPED = ("connection reset", "remotedisconnected", "connection aborted")


def _reason(error: requests.ConnectionError) -> str:
    """The innermost reason of a connection failure (refused, name not known, reset)."""
    text = str(error)
    for marker in (
        "Name or service not known",
        "NameResolutionError",
        "nodename nor servname",
        "Temporary failure in name resolution",
        "No address associated",
        "Connection refused",
        "Connection reset",
        "RemoteDisconnected",
        "Connection aborted",
    ):
        if marker in text:
            return marker.lower()
    return f"{type(error).__name__}: {short(text, 120)}"


def short(text: str, limit: int = 200) -> str:
    """One line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
