"""Access tokens from AvePoint's identity service, through msal, held in memory only.

msal does the OAuth; we give it its HTTP client (msal documents ``http_client`` as the application's own,
retries included), which does three things msal cannot know about AvePoint:

- discovery: msal's ``oidc_authority`` must have a path and msal reads ``{authority}/.well-known/...``,
  while AvePoint's IdentityServer publishes discovery at the host root (its issuer has no path);
- the service's clock, from each answer's ``Date``: certificate assertions are dated by it, so a loader
  clock that is hours off still signs in;
- transient failures (5xx, 429, drops, timeouts) raised instead of returned, so that a token request is
  retried like a page request, each attempt with a fresh client assertion.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msal
import orjson
import requests

from .credentials import AssertionSigner, AvePointCredentials
from .errors import AuthError, UnavailableError
from .retries import (
    HostContact,
    RequestTally,
    RetryPolicy,
    Transient,
    retrying,
    tls_trust_error,
    transient_answer,
    transient_exception,
)
from .times import ServiceClock

logger = logging.getLogger(__name__)

_DISCOVERY = "/.well-known/openid-configuration"
_TOKEN_PATH = "/connect/token"
#: Renew this long before expiry at most; short-lived tokens renew at 90 % of their lifetime.
_MAX_RENEW_MARGIN_S = 300.0


class _IdentityHttpClient:
    """msal's HTTP client for AvePoint's IdentityServer (see the module's docstring)."""

    def __init__(
        self,
        authority: str,
        identity_root: str,
        *,
        verify: bool | str,
        timeout: float,
        clock: ServiceClock,
        contact: HostContact,
    ) -> None:
        self._session = requests.Session()
        self._verify = verify
        self._timeout = timeout
        self._clock = clock
        self._contact = contact
        self._identity_root = identity_root
        self._authority_discovery = authority + _DISCOVERY
        self._root_discovery = identity_root + _DISCOVERY

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        if url == self._authority_discovery:
            url = self._root_discovery
        return self._request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._request("POST", url, **kwargs)

    def close(self) -> None:
        self._session.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        try:
            # `verify` per request: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
            response = self._session.request(method, url, verify=self._verify, **kwargs)
        except requests.RequestException as error:
            transient = transient_exception(error)
            if transient is not None:
                raise transient from None
            raise tls_trust_error("the identity service", self._identity_root, error) from None
        self._contact.mark_answered()
        self._clock.observe(response.headers.get("Date"))
        transient = transient_answer(response)
        if transient is not None:
            raise transient
        if response.status_code == 200:
            try:
                orjson.loads(response.content)
            except orjson.JSONDecodeError:
                # msal would log the whole body of a cut token answer: a token must never reach a log.
                raise Transient(
                    f"HTTP 200 with a body that is not complete JSON ({len(response.content)} bytes)"
                ) from None
        return response


class TokenProvider:
    """Client-credentials tokens for the jobs API, renewed shortly before they expire.

    Thread-safe: concurrent page requests share one token, and a 401 renews it once for all of them.
    A token request that fails on the way (5xx, 429, a drop, a timeout) is retried like a page request;
    a refusal (wrong secret, scope not granted) fails at once.

    Args:
        credentials: The app registration (client secret, certificate or PFX).
        identity_root: Identity service root, e.g. ``https://identity.avepointonlineservices.com``.
        verify: ``True``, or the path of a CA bundle (a private CA, or the simulator's).
        retry: Retry settings (the same as the jobs API's).
        timeout: Seconds to wait for one answer of the identity service.

    Example:
        >>> tokens = TokenProvider(credentials, "https://identity.avepointonlineservices.com")
        >>> session.headers["Authorization"] = f"Bearer {tokens.token()}"
    """

    def __init__(
        self,
        credentials: AvePointCredentials,
        identity_root: str,
        *,
        verify: bool | str = True,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._credential = credentials.client_credential()  # validates before any request
        self._client_id = str(credentials.client_id).strip()
        self._scope = str(credentials.scope or "").strip()
        self._identity_root = identity_root.rstrip("/")
        self._verify = verify
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._lock = threading.Lock()
        self._app: msal.ConfidentialClientApplication | None = None
        self._http: _IdentityHttpClient | None = None
        self._token: str | None = None
        self._renew_at = 0.0
        self._attempt_started = 0.0
        #: The identity service's clock, read from its answers; certificate assertions are dated by it.
        self.clock = ServiceClock()
        self._contact = HostContact()
        self.tokens_fetched = 0
        #: Retries and 429s of the token requests (the run log's).
        self.tally = RequestTally()

    def token(self) -> str:
        """A valid access token: the held one, or a new one when it is about to expire."""
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._fetch(force=False)
            assert self._token is not None
            return self._token

    def renew(self, rejected: str) -> str:
        """A new token after the API rejected ``rejected`` (a 401); renews only once per rejected token."""
        with self._lock:
            stale = self._token is None or time.monotonic() >= self._renew_at
            if self._token == rejected or stale:
                self._fetch(force=True)
            assert self._token is not None
            return self._token

    def close(self) -> None:
        """Close the identity service's connections."""
        if self._http is not None:
            self._http.close()

    def _fetch(self, *, force: bool) -> None:
        try:
            result = retrying(self._retry, self._contact, self._what, self.tally)(
                self._acquire, force
            )
        except Transient as error:
            raise self._unavailable(error) from None
        if "access_token" not in result:
            raise AuthError(_explain(result, self._client_id, self._scope, self._identity_root))
        self.tokens_fetched += 1
        lifetime = float(result.get("expires_in") or 3600)
        margin = min(_MAX_RENEW_MARGIN_S, lifetime * 0.1)
        self._token = str(result["access_token"])
        self._renew_at = self._attempt_started + max(lifetime - margin, 0.0)
        logger.debug("new access token for client %s, valid %.0f s", self._client_id, lifetime)

    def _what(self) -> str:
        return f"the token request to {self._identity_root}"

    def _acquire(self, force: bool) -> dict[str, Any]:
        """One attempt: discovery if not done yet, then a token request (a new assertion each time)."""
        self._attempt_started = time.monotonic()
        app = self._application()
        if force:
            app.remove_tokens_for_client()  # otherwise msal would hand back the token the API just refused
        result: dict[str, Any] = app.acquire_token_for_client(scopes=[self._scope])
        return result

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            authority = self._identity_root + "/connect"
            self._http = _IdentityHttpClient(
                authority,
                self._identity_root,
                verify=self._verify,
                timeout=self._timeout,
                clock=self.clock,
                contact=self._contact,
            )
            credential: Any = self._credential
            if isinstance(credential, AssertionSigner):
                credential = {"client_assertion": self._assertion}
            try:
                self._app = msal.ConfidentialClientApplication(
                    self._client_id,
                    client_credential=credential,
                    oidc_authority=authority,
                    http_client=self._http,
                    token_cache=msal.TokenCache(),  # memory only: tokens never touch disk
                )
            except ValueError as error:
                raise AuthError(
                    f"the identity service at {self._identity_root} has no usable OpenID discovery "
                    f"document ({_first_line(error)}); check region / credentials.identity_url"
                ) from None
        return self._app

    def _assertion(self) -> str:
        """A fresh client assertion, dated by the identity service's clock (msal calls this per request)."""
        signer = self._credential
        assert isinstance(signer, AssertionSigner)
        audience = self._identity_root + _TOKEN_PATH
        if self._app is not None:
            audience = str(getattr(self._app.authority, "token_endpoint", audience) or audience)
        return signer.assertion(audience, self.clock.now().timestamp())

    def _unavailable(self, error: Transient) -> UnavailableError:
        if error.unreached and not self._contact.answered:
            return UnavailableError(
                f"cannot connect to the identity service at {self._identity_root} ({error}); "
                "check region / credentials.identity_url and the network"
            )
        return UnavailableError(
            f"the identity service at {self._identity_root} stayed unavailable through "
            f"{self._retry.max_attempts} attempts or {self._retry.max_seconds:.0f} s "
            f"(last: {error}); try again later"
        )


def _explain(result: dict[str, Any], client_id: str, scope: str, identity: str) -> str:
    """One line saying why the identity service said no, and what to fix."""
    error = str(result.get("error") or "unknown_error")
    description = _first_line(Exception(result.get("error_description") or "")) or "no description"
    if error == "invalid_client":
        return (
            f"the identity service rejected client {client_id} (invalid_client: {description}); "
            "check credentials.client_id and the client secret or certificate registered for the app"
        )
    if error == "invalid_scope":
        return (
            f"the app {client_id} may not request scope {scope!r} (invalid_scope: {description}); "
            "grant it Dynamics.ReadWrite.All in AvePoint Online Services, or fix credentials.scope"
        )
    if error == "unauthorized_client":
        return f"the app {client_id} may not use client credentials ({description})"
    return f"the identity service at {identity} refused a token ({error}: {description})"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
