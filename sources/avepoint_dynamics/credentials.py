"""The app registration's credentials, resolved by dlt from secrets.toml or env vars.

Exactly one kind of credential is accepted: a client secret, a PEM private key with its certificate, or a
PFX file with its password. Thumbprints are derived from the certificate, never typed in. A certificate
signs a fresh client assertion for every token request: AvePoint's IdentityServer refuses an assertion
whose ``jti`` it has seen before.
"""

from __future__ import annotations

import base64
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dlt.common.configuration import configspec
from dlt.common.configuration.specs import CredentialsConfiguration
from dlt.common.typing import TSecretStrValue

from .errors import ConfigError
from .settings import DEFAULT_SCOPE

_KEY = "credentials"


@configspec
class AvePointCredentials(CredentialsConfiguration):
    """``[sources.avepoint_dynamics.credentials]``: an app registered in AvePoint Online Services.

    Example ``.dlt/secrets.toml``::

        [sources.avepoint_dynamics.credentials]
        client_id = "4f1c..."
        client_secret = "..."          # or: private_key + certificate, or: pfx_path + pfx_password
    """

    client_id: str = None  # type: ignore[assignment]  # dlt: None marks a required field
    client_secret: TSecretStrValue | None = None
    private_key: TSecretStrValue | None = None
    """PEM text of the private key, or the path of a PEM file."""
    private_key_password: TSecretStrValue | None = None
    certificate: str | None = None
    """PEM text of the app's certificate, or the path of a PEM file."""
    pfx_path: str | None = None
    pfx_password: TSecretStrValue | None = None
    identity_url: str | None = None
    """Identity service root; derived from ``region`` when not set."""
    scope: str = DEFAULT_SCOPE

    def __repr__(self) -> str:
        # dataclass repr would print the secret fields; an exception or a log line must never hold them.
        return f"AvePointCredentials(client_id={self.client_id!r}, kind={self.kind_name()!r})"

    __str__ = __repr__

    def kind_name(self) -> str:
        """``secret``, ``certificate``, ``pfx``, or ``none`` / ``ambiguous`` when misconfigured."""
        kinds = self._kinds()
        return kinds[0] if len(kinds) == 1 else ("none" if not kinds else "ambiguous")

    def _kinds(self) -> list[str]:
        kinds = []
        if self.client_secret:
            kinds.append("secret")
        if self.private_key or self.certificate:
            kinds.append("certificate")
        if self.pfx_path:
            kinds.append("pfx")
        return kinds

    def client_credential(self) -> str | AssertionSigner:
        """The client secret, or the signer of client assertions for a certificate or PFX.

        Certificates are always sent as RS256 assertions with the SHA-1 thumbprint (``x5t``), which is what
        AvePoint's IdentityServer documents; msal would otherwise pick PS256 for a PFX or a bare certificate.

        Raises:
            ConfigError: not exactly one kind of credential, or a key/certificate that cannot be used.
        """
        if not self.client_id or not str(self.client_id).strip():
            raise ConfigError(
                f"{_KEY}.client_id",
                "missing; set the app's client id from AvePoint Online Services > App registration",
            )
        kinds = self._kinds()
        if len(kinds) != 1:
            given = " and ".join(kinds) if kinds else "none"
            raise ConfigError(
                _KEY,
                f"give exactly one of client_secret, private_key + certificate, or pfx_path "
                f"(+ pfx_password); given: {given}",
            )
        if kinds[0] == "secret":
            return str(self.client_secret)
        if kinds[0] == "pfx":
            key, cert = _load_pfx(str(self.pfx_path), self.pfx_password)
        else:
            if not self.private_key or not self.certificate:
                missing = "certificate" if self.private_key else "private_key"
                raise ConfigError(
                    f"{_KEY}.{missing}",
                    "a certificate credential needs both private_key and certificate",
                )
            key = _load_private_key(
                _pem_text(str(self.private_key), "private_key"), self.private_key_password
            )
            cert = _load_certificate(_pem_text(self.certificate, "certificate"))
        return _certificate_credential(str(self.client_id).strip(), key, cert)


#: How long a client assertion is valid; each is used for one token request only.
ASSERTION_LIFETIME_S = 600


@dataclass(frozen=True)
class AssertionSigner:
    """Signs a new RS256 client assertion (``private_key_jwt``) for each token request.

    msal would reuse one assertion for up to 9 minutes, and IdentityServer refuses a ``jti`` it has seen
    (``invalid_client: client assertion replayed``): a 401 renewal or a short-lived token would fail.

    Attributes:
        client_id: The app's client id (``iss`` and ``sub``).
        thumbprint: SHA-1 thumbprint of the certificate (hex), sent as ``x5t``.
    """

    client_id: str
    thumbprint: str
    _key: Any = field(repr=False)

    def assertion(self, audience: str, now: float) -> str:
        """A new signed assertion for ``audience`` (the token URL), valid from ``now`` (epoch seconds).

        Example:
            >>> signer.assertion("https://identity.avepointonlineservices.com/connect/token", time.time())
            'eyJhbGciOiJSUzI1NiIs...'
        """
        issued = int(now)
        claims = {
            "aud": audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": str(uuid.uuid4()),
            "iat": issued,
            "nbf": issued,
            "exp": issued + ASSERTION_LIFETIME_S,
        }
        x5t = base64.urlsafe_b64encode(bytes.fromhex(self.thumbprint)).decode().rstrip("=")
        # Imported here: only certificate sign-in signs, and PyJWT's import (its crypto backends) is
        # ~25 ms of every run's start-up otherwise (docs/performance.md).
        import jwt

        return jwt.encode(claims, self._key, algorithm="RS256", headers={"x5t": x5t})

    def __repr__(self) -> str:
        return f"AssertionSigner(client_id={self.client_id!r}, thumbprint={self.thumbprint!r})"


def _pem_text(value: str, field: str) -> bytes:
    """PEM given inline or as a path to a file."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.encode()
    path = os.path.expanduser(text)
    if not os.path.isfile(path):
        raise ConfigError(
            f"{_KEY}.{field}",
            "is neither PEM text (-----BEGIN ...) nor the path of an existing file",
        )
    with open(path, "rb") as handle:
        return handle.read()


def _load_private_key(pem: bytes, password: str | None) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(pem, password.encode() if password else None)
    except (ValueError, TypeError) as error:
        # cryptography's message names the problem (encrypted, wrong password, not a key); never the key.
        raise ConfigError(
            f"{_KEY}.private_key", f"cannot be read as a PEM private key ({_first_line(error)})"
        ) from None


def _load_certificate(pem: bytes) -> Any:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise ConfigError(
            f"{_KEY}.certificate", f"cannot be read as a PEM certificate ({_first_line(error)})"
        ) from None


def _load_pfx(path: str, password: str | None) -> tuple[Any, Any]:
    from cryptography.hazmat.primitives.serialization import pkcs12

    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        raise ConfigError(f"{_KEY}.pfx_path", f"no such file: {path}")
    with open(full, "rb") as handle:
        data = handle.read()
    try:
        key, cert, _chain = pkcs12.load_key_and_certificates(
            data, password.encode() if password else None
        )
    except ValueError:
        raise ConfigError(
            f"{_KEY}.pfx_password", f"cannot open {path}: wrong password or not a PFX/PKCS#12 file"
        ) from None
    if key is None or cert is None:
        raise ConfigError(
            f"{_KEY}.pfx_path", f"{path} must hold both the private key and the certificate"
        )
    return key, cert


def _certificate_credential(client_id: str, key: Any, cert: Any) -> AssertionSigner:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            f"{_KEY}.private_key", "must be an RSA key (AvePoint's identity service expects RS256)"
        )
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise ConfigError(
            f"{_KEY}.certificate",
            "does not match the private key; give the certificate issued for this key",
        )
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError(
            f"{_KEY}.certificate",
            f"is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}); upload a new certificate to the app registration",
        )
    return AssertionSigner(client_id, cert.fingerprint(hashes.SHA1()).hex(), key)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
