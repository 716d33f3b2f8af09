"""Identity, as AvePoint Online Services' IdentityServer does it: discovery and client credentials.

Tokens are opaque random strings held in memory (the API checks them by lookup), which is all a
client may assume about them anyway.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from avepoint_simulator.certs import thumbprints
from avepoint_simulator.times import ServiceClock

__all__ = ["SCOPE", "App", "Identity", "TokenError"]

#: The one scope the jobs API needs.
SCOPE = "dynamics.readwrite.all"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: IdentityServer accepts any asymmetric signature; msal signs PS256 when it knows the SHA-256
#: thumbprint (a PFX) and RS256 with a SHA-1 thumbprint.
ASSERTION_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
CLOCK_SKEW_S = 60
MAX_ASSERTION_LIFETIME_S = 3600


@dataclass
class App:
    """An app registration in AvePoint Online Services.

    Attributes:
        client_id: The app (client) id.
        client_secret: Its secret, or None when it only has certificates.
        certificate_pems: Registered certificates (PEM) accepted for client assertions.
        scopes: Scopes it was granted (lower case).
        private_key_pem: The key of the first certificate, when the simulator made it.
    """

    client_id: str
    client_secret: str | None = None
    certificate_pems: list[str] = field(default_factory=list)
    scopes: tuple[str, ...] = (SCOPE,)
    private_key_pem: str | None = None

    @property
    def certificate_pem(self) -> str | None:
        """The first registered certificate, if any."""
        return self.certificate_pems[0] if self.certificate_pems else None


class TokenError(Exception):
    """An OAuth2 error answer of the token endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        """The RFC 6749 §5.2 JSON body."""
        return {"error": self.error, "error_description": self.description}


class Identity:
    """App registrations, token issuing and bearer checks.

    Args:
        signing_key: Public key published in the JWKS (the server's; tokens are opaque).
        clock: The service's clock, against which client assertions' times are checked.
    """

    def __init__(
        self,
        signing_key: ec.EllipticCurvePublicKey | None = None,
        clock: ServiceClock | None = None,
    ) -> None:
        self._clock = clock or ServiceClock()
        self._lock = threading.Lock()
        self._apps: dict[str, App] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._seen_jti: dict[str, float] = {}
        self._signing_key = signing_key

    # ------------------------------------------------------------------ apps
    def register(self, app: App) -> App:
        """Register (or replace) an app."""
        app.scopes = tuple(s.lower() for s in app.scopes)
        with self._lock:
            self._apps[app.client_id] = app
        return app

    # ------------------------------------------------------------------ discovery
    @staticmethod
    def discovery(root: str) -> dict[str, Any]:
        """The OpenID configuration; ``root`` is the scheme+host+port, no trailing slash."""
        return {
            "issuer": root,
            "jwks_uri": f"{root}/.well-known/openid-configuration/jwks",
            "authorization_endpoint": f"{root}/connect/authorize",
            "token_endpoint": f"{root}/connect/token",
            "userinfo_endpoint": f"{root}/connect/userinfo",
            "end_session_endpoint": f"{root}/connect/endsession",
            "revocation_endpoint": f"{root}/connect/revocation",
            "introspection_endpoint": f"{root}/connect/introspect",
            "frontchannel_logout_supported": True,
            "backchannel_logout_supported": True,
            "scopes_supported": [SCOPE, "offline_access"],
            "claims_supported": ["sub", "client_id"],
            "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
            "response_types_supported": ["code", "token", "id_token"],
            "response_modes_supported": ["form_post", "query", "fragment"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
            ],
            "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "request_parameter_supported": True,
        }

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set (the server's public key)."""
        if self._signing_key is None:
            return {"keys": []}
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(self._signing_key, as_dict=True)
        jwk.update({"use": "sig", "alg": "ES256", "kid": "simulator"})
        return {"keys": [jwk]}

    # ------------------------------------------------------------------ tokens
    def issue(
        self,
        content_type: str,
        body: bytes,
        authorization: str | None,
        token_urls: set[str],
        lifetime_s: float,
    ) -> dict[str, Any]:
        """Answer a token request (client credentials).

        Args:
            content_type: The request's Content-Type.
            body: The raw form body.
            authorization: The Authorization header (HTTP Basic client auth), if any.
            token_urls: The URLs a client assertion's ``aud`` may name (the token URL).
            lifetime_s: ``expires_in`` of the token.

        Returns:
            The success JSON body.

        Raises:
            TokenError: The OAuth2 error to answer with.
        """
        if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            raise TokenError("invalid_request", "the token request must be form-encoded")
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body)
            )
        except (UnicodeDecodeError, ValueError):
            raise TokenError("invalid_request", "malformed form body") from None
        form: dict[str, str] = {}
        for key, value in pairs:
            if key in form:
                raise TokenError("invalid_request", f"parameter {key} is repeated")
            form[key] = value
        app, used_basic = self._authenticate(form, authorization, token_urls)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise TokenError("invalid_request", "grant_type is missing")
        if grant_type != "client_credentials":
            raise TokenError("unsupported_grant_type", f"grant type {grant_type} is not supported")
        requested = form.get("scope", "").lower().split()
        if not app.scopes:
            raise TokenError("invalid_scope", "the client is not allowed any scope")
        # IdentityServer grants every allowed scope when none is asked for.
        granted = requested or list(app.scopes)
        refused = [s for s in granted if s not in app.scopes]
        if refused:
            raise TokenError(
                "invalid_scope", f"scope(s) not allowed for this client: {' '.join(refused)}"
            )
        del used_basic
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            # Prune expired tokens as we go so a long run does not grow without bound.
            if len(self._tokens) > 1000:
                self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (app.client_id, now + lifetime_s)
        return {
            "access_token": token,
            "expires_in": int(lifetime_s) if float(lifetime_s).is_integer() else lifetime_s,
            "token_type": "Bearer",
            "scope": " ".join(dict.fromkeys(granted)),
        }

    def _authenticate(
        self, form: dict[str, str], authorization: str | None, token_urls: set[str]
    ) -> tuple[App, bool]:
        basic = authorization is not None and authorization[:6].lower() == "basic "
        status = 401 if basic else 400
        secret: str | None
        if basic:
            assert authorization is not None
            if "client_secret" in form or "client_assertion" in form:
                raise TokenError("invalid_request", "more than one client authentication method")
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                raw_id, _, raw_secret = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise TokenError("invalid_client", "malformed Basic authorization", 401) from None
            client_id = urllib.parse.unquote_plus(raw_id)
            secret = urllib.parse.unquote_plus(raw_secret)
            if form.get("client_id", client_id) != client_id:
                raise TokenError(
                    "invalid_request", "client_id differs from the Basic authorization"
                )
        else:
            client_id = form.get("client_id", "")
            secret = form.get("client_secret")
        if "client_assertion" in form or "client_assertion_type" in form:
            if secret is not None:
                raise TokenError("invalid_request", "more than one client authentication method")
            return self._authenticate_assertion(form, token_urls), False
        if not client_id:
            raise TokenError("invalid_client", "no client authentication was given", status)
        with self._lock:
            app = self._apps.get(client_id)
        if app is None:
            raise TokenError("invalid_client", f"unknown client {client_id}", status)
        if secret is None:
            raise TokenError(
                "invalid_client", "no client secret or client assertion was given", status
            )
        if app.client_secret is None or not secrets.compare_digest(
            secret.encode(), app.client_secret.encode()
        ):
            raise TokenError("invalid_client", "invalid client secret", status)
        return app, basic

    def _authenticate_assertion(self, form: dict[str, str], token_urls: set[str]) -> App:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise TokenError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion", "")
        if not assertion:
            raise TokenError("invalid_request", "client_assertion is missing")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenError("invalid_client", "client_assertion is not a JWT") from None
        client_id = form.get("client_id") or claims.get("sub") or claims.get("iss")
        if not isinstance(client_id, str) or not client_id:
            raise TokenError("invalid_client", "client_assertion names no client")
        with self._lock:
            app = self._apps.get(client_id)
        if app is None:
            raise TokenError("invalid_client", f"unknown client {client_id}")
        if header.get("alg") not in ASSERTION_ALGORITHMS:
            raise TokenError(
                "invalid_client", f"signature algorithm {header.get('alg')} is not accepted"
            )
        certificates = [x509.load_pem_x509_certificate(p.encode()) for p in app.certificate_pems]
        if not certificates:
            raise TokenError("invalid_client", "the client has no certificate registered")
        # msal keeps base64 padding on thumbprints, RFC 7515 drops it: accept both.
        x5t, x5t256 = (str(header.get(k) or "").rstrip("=") or None for k in ("x5t", "x5t#S256"))
        if x5t or x5t256:
            certificates = [
                c for c in certificates if thumbprints(c)[0] == x5t or thumbprints(c)[1] == x5t256
            ]
            if not certificates:
                raise TokenError(
                    "invalid_client", "no registered certificate matches the assertion's thumbprint"
                )
        now_utc = dt.datetime.fromtimestamp(self._clock.seconds(), dt.UTC)
        valid = [
            c for c in certificates if c.not_valid_before_utc <= now_utc <= c.not_valid_after_utc
        ]
        if not valid:
            raise TokenError(
                "invalid_client", "the client certificate has expired (or is not yet valid)"
            )
        verified: dict[str, Any] | None = None
        for certificate in valid:
            try:
                verified = jwt.decode(
                    assertion,
                    certificate.public_key(),  # type: ignore[arg-type]
                    algorithms=ASSERTION_ALGORITHMS,
                    options={
                        "verify_aud": False,
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                    },
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise TokenError("invalid_client", f"invalid client_assertion: {exc}") from None
        if verified is None:
            raise TokenError("invalid_client", "client_assertion signature does not verify")
        self._check_claims(verified, client_id, token_urls)
        return app

    def _check_claims(self, claims: dict[str, Any], client_id: str, token_urls: set[str]) -> None:
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise TokenError(
                "invalid_client", "client_assertion iss and sub must both be the client id"
            )
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if not any(a in token_urls for a in audiences):
            raise TokenError(
                "invalid_client",
                f"client_assertion aud must be the token URL {sorted(token_urls)[0]}",
            )
        now = self._clock.seconds()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise TokenError("invalid_client", "client_assertion has no exp")
        if exp <= now - CLOCK_SKEW_S:
            raise TokenError("invalid_client", "client_assertion has expired")
        if exp > now + MAX_ASSERTION_LIFETIME_S + CLOCK_SKEW_S:
            raise TokenError("invalid_client", "client_assertion exp is more than 1 hour away")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and value > now + CLOCK_SKEW_S
            ):
                raise TokenError("invalid_client", f"client_assertion {name} is in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise TokenError("invalid_client", "client_assertion has no jti")
        with self._lock:
            self._seen_jti = (
                {k: v for k, v in self._seen_jti.items() if v > now - CLOCK_SKEW_S}
                if len(self._seen_jti) > 10_000
                else self._seen_jti
            )
            if jti in self._seen_jti:
                raise TokenError("invalid_client", "client_assertion jti was already used (replay)")
            self._seen_jti[jti] = float(exp)

    def issued_tokens(self) -> list[str]:
        """The access tokens handed out and still held (live, or expired and not yet pruned)."""
        with self._lock:
            return list(self._tokens)

    def check_bearer(self, authorization: str | None) -> str | None:
        """None when the Authorization header carries a live token, else why not."""
        if not authorization or authorization[:7].lower() != "bearer ":
            return "missing bearer token"
        token = authorization[7:].strip()
        with self._lock:
            held = self._tokens.get(token)
        if held is None:
            return "unknown bearer token"
        if held[1] <= time.monotonic():
            return "the bearer token has expired"
        return None
