"""Identity: discovery, client-credentials tokens by secret or certificate, bearer checks, msal."""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import msal
import pytest
import requests
from avepoint_simulator import Simulator, make_certificate, make_pfx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ..waiting import wait_until
from .conftest import SimClient

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def assertion(
    sim: Simulator, key_pem: str | None = None, cert_pem: str | None = None, **claims: Any
) -> str:
    key_pem = key_pem or sim.private_key_pem
    cert = x509.load_pem_x509_certificate((cert_pem or sim.certificate_pem).encode())
    x5t = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).rstrip(b"=").decode()
    now = time.time()
    payload: dict[str, Any] = {
        "iss": sim.client_id,
        "sub": sim.client_id,
        "aud": sim.token_url,
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": str(uuid.uuid4()),
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key_pem, algorithm="RS256", headers={"x5t": x5t})


def assertion_form(sim: Simulator, token: str, client_id: str | None = None) -> dict[str, Any]:
    return {
        "client_secret": None,
        "client_id": client_id or sim.client_id,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": token,
    }


class RootDiscoveryClient(requests.Session):
    """msal appends /.well-known/openid-configuration to the authority's path; AvePoint (and
    the simulator) serve it at the root, so this http_client asks the root."""

    def __init__(self, ca_file: str | None) -> None:
        super().__init__()
        self.trust_env = False
        self.verify = ca_file if ca_file else True

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:
        text = url.decode() if isinstance(url, bytes) else url
        if text.endswith("/.well-known/openid-configuration"):
            scheme, _, rest = text.partition("://")
            text = f"{scheme}://{rest.split('/')[0]}/.well-known/openid-configuration"
        return super().get(text, **kwargs)


# ---------------------------------------------------------------------- discovery
def test_discovery_at_root(client: SimClient, sim: Simulator) -> None:
    doc = client.request("GET", "/.well-known/openid-configuration").json()
    assert doc["issuer"] == sim.identity_url
    assert not doc["issuer"].endswith("/")
    assert doc["token_endpoint"] == sim.token_url
    assert doc["jwks_uri"] == sim.identity_url + "/.well-known/openid-configuration/jwks"
    assert "authorization_endpoint" in doc
    assert "client_credentials" in doc["grant_types_supported"]
    jwks = client.request("GET", doc["jwks_uri"]).json()
    assert jwks["keys"] and jwks["keys"][0]["kty"] == "EC"
    assert client.request("GET", "/connect/.well-known/openid-configuration").status_code == 404
    assert sim.stats()["requests"]["discovery 200"] == 2


# ---------------------------------------------------------------------- secrets
def test_token_with_secret_post_and_basic(client: SimClient, sim: Simulator) -> None:
    response = client.token_response(scope="Dynamics.ReadWrite.All")
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "dynamics.readwrite.all" and len(body["access_token"]) > 20
    assert response.headers["Cache-Control"] == "no-store"
    basic = client.request(
        "POST",
        "/connect/token",
        data={"grant_type": "client_credentials", "scope": "dynamics.readwrite.all"},
        auth=(sim.client_id, sim.client_secret),
    )
    assert basic.status_code == 200, basic.text
    assert sim.stats()["token_requests"] == 2


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"client_secret": "wrong"}, 400, "invalid_client"),
        ({"client_id": "no-such-client"}, 400, "invalid_client"),
        ({"client_secret": None}, 400, "invalid_client"),
        ({"scope": "offline_access"}, 400, "invalid_scope"),
        ({"scope": "dynamics.readwrite.all offline_access"}, 400, "invalid_scope"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": None}, 400, "invalid_request"),
    ],
)
def test_token_errors(client: SimClient, form: dict[str, Any], status: int, error: str) -> None:
    response = client.token_response(**form)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error and body["error_description"]


def test_token_wrong_secret_by_basic_is_401(client: SimClient, sim: Simulator) -> None:
    response = client.request(
        "POST",
        "/connect/token",
        data={"grant_type": "client_credentials"},
        auth=(sim.client_id, "nope"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "WWW-Authenticate" in response.headers


def test_token_request_must_be_form_encoded_without_repeats(
    client: SimClient, sim: Simulator
) -> None:
    as_json = client.request("POST", "/connect/token", json={"grant_type": "client_credentials"})
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    repeated = client.request(
        "POST",
        "/connect/token",
        data=[
            ("grant_type", "client_credentials"),
            ("scope", "a"),
            ("scope", "b"),
            ("client_id", sim.client_id),
            ("client_secret", sim.client_secret),
        ],
    )
    assert repeated.status_code == 400 and repeated.json()["error"] == "invalid_request"


def test_app_without_scope_grant(client: SimClient, sim: Simulator) -> None:
    app = sim.register_app(client_secret="s3cret", scopes=())
    response = client.token_response(client_id=app.client_id, client_secret="s3cret")
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


# ---------------------------------------------------------------------- certificates
def test_token_with_client_assertion(client: SimClient, sim: Simulator) -> None:
    response = client.token_response(**assertion_form(sim, assertion(sim)))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://identity.avepointonlineservices.com/connect/token"}, "aud"),
        ({"aud": "PLACEHOLDER_ROOT"}, "aud"),
        (
            {"exp": time.time() - 3600, "iat": time.time() - 4000, "nbf": time.time() - 4000},
            "expired",
        ),
        ({"exp": time.time() + 7200}, "1 hour"),
        ({"nbf": time.time() + 600}, "future"),
        ({"iss": "someone-else"}, "iss"),
        ({"jti": None}, "jti"),
    ],
)
def test_assertion_claims_rejected(
    client: SimClient, sim: Simulator, claims: dict[str, Any], reason: str
) -> None:
    if claims.get("aud") == "PLACEHOLDER_ROOT":
        claims = {"aud": sim.identity_url}  # the identity root is not the token URL
    response = client.token_response(**assertion_form(sim, assertion(sim, **claims)))
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_client"
    assert reason in body["error_description"]


def test_assertion_replayed_jti(client: SimClient, sim: Simulator) -> None:
    token = assertion(sim)
    assert client.token_response(**assertion_form(sim, token)).status_code == 200
    replay = client.token_response(**assertion_form(sim, token))
    assert replay.status_code == 400 and "replay" in replay.json()["error_description"]


def test_assertion_bad_signature(client: SimClient, sim: Simulator) -> None:
    other_key, _ = make_certificate("intruder")
    # Signed by another key but claiming the registered certificate's thumbprint.
    response = client.token_response(**assertion_form(sim, assertion(sim, key_pem=other_key)))
    assert response.status_code == 400
    assert "signature" in response.json()["error_description"]


def test_assertion_unregistered_certificate(client: SimClient, sim: Simulator) -> None:
    key, cert = make_certificate("stranger")
    response = client.token_response(
        **assertion_form(sim, assertion(sim, key_pem=key, cert_pem=cert))
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_client"


def test_assertion_with_expired_certificate(client: SimClient, sim: Simulator) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    key, cert = make_certificate("old", not_before=past - dt.timedelta(days=365), not_after=past)
    app = sim.register_app(client_id="expired-app", certificate_pem=cert)
    token = assertion(sim, key_pem=key, cert_pem=cert, iss=app.client_id, sub=app.client_id)
    response = client.token_response(**assertion_form(sim, token, client_id=app.client_id))
    assert response.status_code == 400
    assert "expired" in response.json()["error_description"]


def test_assertion_and_secret_together_is_invalid_request(
    client: SimClient, sim: Simulator
) -> None:
    form = assertion_form(sim, assertion(sim))
    form["client_secret"] = sim.client_secret
    response = client.token_response(**form)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


# ---------------------------------------------------------------------- bearer
def test_missing_unknown_and_expired_bearer(
    client: SimClient, avepoint_simulator_factory: Any
) -> None:
    body = {"pageInfo": {"currentPage": 1, "pageSize": 10}}
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}):
        response = client.request("POST", "/api/OpenApi/GetJobs", json=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert response.json()["statusCode"] == 401
    short = avepoint_simulator_factory(jobs=50, token_lifetime_s=1)
    short_client = SimClient(short)
    assert short_client.token_response().json()["expires_in"] == 1
    assert short_client.v1().status_code == 200
    answers: list[requests.Response] = []

    def refused() -> bool:
        answers.append(short_client.v1())
        return answers[-1].status_code != 200

    wait_until(refused, "the one-second token to expire", interval_s=0.1)
    expired = answers[-1]
    assert expired.status_code == 401 and "expired" in expired.headers["WWW-Authenticate"]
    assert short_client.v2().status_code == 401


# ---------------------------------------------------------------------- msal
def _msal_app(sim: Simulator, credential: Any) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sim.client_id,
        client_credential=credential,
        oidc_authority=sim.identity_url + "/connect",
        http_client=RootDiscoveryClient(sim.ca_file),
    )


def test_msal_with_secret(sim: Simulator, client: SimClient) -> None:
    result = _msal_app(sim, sim.client_secret).acquire_token_for_client(
        scopes=["dynamics.readwrite.all"]
    )
    assert "access_token" in result, result
    client._token = result["access_token"]
    assert client.v1().status_code == 200


def test_msal_with_certificate_thumbprint(sim: Simulator) -> None:
    credential = {"private_key": sim.private_key_pem, "thumbprint": sim.thumbprint}
    result = _msal_app(sim, credential).acquire_token_for_client(scopes=["dynamics.readwrite.all"])
    assert "access_token" in result, result


def test_msal_with_pfx(sim: Simulator, tmp_path: Path) -> None:
    # msal signs PS256 with x5t#S256 when it reads a PFX: IdentityServer accepts it, so must we.
    credential = {"private_key_pfx_path": sim.pfx_path, "passphrase": sim.pfx_password}
    result = _msal_app(sim, credential).acquire_token_for_client(scopes=["dynamics.readwrite.all"])
    assert "access_token" in result, result
    # make_pfx also builds one for another key, without a password.
    key, cert = make_certificate("extra")
    path = tmp_path / "extra.pfx"
    path.write_bytes(make_pfx(key, cert, None))
    sim.register_app(client_id="pfx-app", certificate_pem=cert)
    app = msal.ConfidentialClientApplication(
        "pfx-app",
        client_credential={"private_key_pfx_path": str(path)},
        oidc_authority=sim.identity_url + "/connect",
        http_client=RootDiscoveryClient(sim.ca_file),
    )
    assert "access_token" in app.acquire_token_for_client(scopes=["dynamics.readwrite.all"])


def test_msal_reports_bad_secret(sim: Simulator) -> None:
    result = _msal_app(sim, "wrong").acquire_token_for_client(scopes=["dynamics.readwrite.all"])
    assert result.get("error") == "invalid_client"
