"""Access tokens from AvePoint's identity service, through msal, held in memory only."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msal
import requests

from .credentials import AvePointCredentials
from .errors import AuthError

logger = logging.getLogger(__name__)

_DISCOVERY = "/.well-known/openid-configuration"
#: Renew this long before expiry at most; short-lived tokens renew at 90 % of their lifetime.
_MAX_RENEW_MARGIN_S = 300.0


class _RootDiscoveryHttpClient:
    """msal's HTTP client, serving msal's discovery request from where IdentityServer publishes it.

    msal's ``oidc_authority`` must have a path segment and msal reads ``{authority}/.well-known/...``, while
    AvePoint's IdentityServer publishes discovery at the host root (its issuer has no path). msal documents
    ``http_client`` as the application's own transport, so we give it one that maps that single URL to the
    root document. Everything else (the token endpoint taken from discovery, the issuer check, which accepts
    the same scheme and host) stays msal's own logic.
    """

    def __init__(
        self, session: requests.Session, authority: str, identity_root: str, verify: bool | str
    ) -> None:
        self._session = session
        self._verify = verify
        self._authority_discovery = authority + _DISCOVERY
        self._root_discovery = identity_root + _DISCOVERY

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        if url == self._authority_discovery:
            url = self._root_discovery
        # `verify` per request: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
        return self._session.get(url, verify=self._verify, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._session.post(url, verify=self._verify, **kwargs)

    def close(self) -> None:
        self._session.close()


class TokenProvider:
    """Client-credentials tokens for the jobs API, renewed shortly before they expire.

    Thread-safe: concurrent page requests share one token, and a 401 renews it once for all of them.

    Args:
        credentials: The app registration (client secret, certificate or PFX).
        identity_root: Identity service root, e.g. ``https://identity.avepointonlineservices.com``.
        verify: ``True``, or the path of a CA bundle (a private CA, or the simulator's).
        timeout: Seconds to wait for the identity service.

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
        timeout: float = 30.0,
    ) -> None:
        self._client_credential = credentials.msal_credential()  # validates before any request
        self._client_id = str(credentials.client_id).strip()
        self._scope = str(credentials.scope or "").strip()
        self._identity_root = identity_root.rstrip("/")
        self._verify = verify
        self._timeout = timeout
        self._lock = threading.Lock()
        self._app: msal.ConfidentialClientApplication | None = None
        self._token: str | None = None
        self._renew_at = 0.0
        self.tokens_fetched = 0

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

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            session = requests.Session()
            authority = self._identity_root + "/connect"
            try:
                self._app = msal.ConfidentialClientApplication(
                    self._client_id,
                    client_credential=self._client_credential,
                    oidc_authority=authority,
                    http_client=_RootDiscoveryHttpClient(
                        session, authority, self._identity_root, self._verify
                    ),
                    timeout=self._timeout,
                    token_cache=msal.TokenCache(),  # memory only: tokens never touch disk
                )
            except requests.RequestException as error:
                raise AuthError(
                    f"cannot reach the identity service at {self._identity_root} "
                    f"({type(error).__name__}); check region / credentials.identity_url and the network"
                ) from None
            except ValueError as error:
                raise AuthError(
                    f"the identity service at {self._identity_root} has no usable OpenID discovery "
                    f"document ({_first_line(error)}); check region / credentials.identity_url"
                ) from None
        return self._app

    def _fetch(self, *, force: bool) -> None:
        app = self._application()
        if force:
            app.remove_tokens_for_client()  # otherwise msal would hand back the token the API just refused
        started = time.monotonic()
        try:
            result: dict[str, Any] = app.acquire_token_for_client(scopes=[self._scope])
        except requests.RequestException as error:
            raise AuthError(
                f"cannot reach the identity service at {self._identity_root} "
                f"({type(error).__name__}); check region / credentials.identity_url and the network"
            ) from None
        if "access_token" not in result:
            raise AuthError(_explain(result, self._client_id, self._scope, self._identity_root))
        self.tokens_fetched += 1
        lifetime = float(result.get("expires_in") or 3600)
        margin = min(_MAX_RENEW_MARGIN_S, lifetime * 0.1)
        self._token = str(result["access_token"])
        self._renew_at = started + max(lifetime - margin, 0.0)
        logger.debug("new access token for client %s, valid %.0f s", self._client_id, lifetime)


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
