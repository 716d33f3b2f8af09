"""Signing in as AvePoint customers do: secret, PEM certificate or PFX through msal, and every refusal."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from avepoint_dynamics import (
    ApiError,
    AuthError,
    ConfigError,
    UnavailableError,
    check_connection,
    jobs_setup,
)
from avepoint_simulator import Simulator
from avepoint_simulator.certs import make_certificate, make_pfx

from .cli_runs import cli
from .conftest import Loader, config_env, credentials_for
from .expected import assert_rows_equal
from .test_jobs_source import _root


def _certificate_credentials(sim: Simulator, **extra: Any) -> Any:
    values = {
        "client_secret": None,
        "private_key": sim.private_key_pem,
        "certificate": sim.certificate_pem,
    }
    return credentials_for(sim, **{**values, **extra})


def test_secret_pem_and_pfx_load_the_same_jobs(sim: Simulator, tmp_path: Path) -> None:
    key_file, cert_file, pfx_file = tmp_path / "app.key", tmp_path / "app.crt", tmp_path / "app.pfx"
    key_file.write_text(sim.private_key_pem)
    cert_file.write_text(sim.certificate_pem)
    pfx_file.write_bytes(make_pfx(sim.private_key_pem, sim.certificate_pem, "pfx-pass"))
    kinds = {
        "secret": credentials_for(sim),
        "pem_text": _certificate_credentials(sim),
        "pem_files": credentials_for(
            sim, client_secret=None, private_key=str(key_file), certificate=str(cert_file)
        ),
        "pfx": credentials_for(
            sim, client_secret=None, pfx_path=str(pfx_file), pfx_password="pfx-pass"
        ),
        "simulator_pfx": credentials_for(
            sim, client_secret=None, pfx_path=sim.pfx_path, pfx_password=sim.pfx_password
        ),
    }
    truth = sim.world.ground_truth()
    for name, credentials in kinds.items():
        before = sim.stats()["requests"].get("token 200", 0)
        loader = Loader(sim, tmp_path / name)
        loader.load(credentials=credentials)
        assert_rows_equal(loader.rows(), truth)
        assert sim.stats()["requests"].get("token 200", 0) == before + 1, name


def test_a_run_longer_than_the_token_lifetime_renews_without_a_token_per_page(
    tmp_path: Path,
) -> None:
    with Simulator(jobs=3_000, seed=21, token_lifetime_s=2, latency_ms=60) as short_lived:
        loader = Loader(short_lived, tmp_path)
        loader.load(page_size=20, max_concurrency=2)

        stats = short_lived.stats()
        pages = stats["jobs_requests"]
        assert pages >= 120  # 150 pages at 60 ms, two at a time: the run outlasts its first token
        assert stats["token_requests"] >= 2, "the token was renewed"
        assert stats["token_requests"] < pages / 10, "not a token per page"
        assert_rows_equal(loader.rows(), short_lived.world.ground_truth())


def test_wrong_secret_is_one_clear_line_and_not_retried(sim: Simulator, loader: Loader) -> None:
    with pytest.raises(Exception) as failure:
        loader.load(credentials=credentials_for(sim, client_secret="not-the-secret"))

    error = _root(failure.value)
    assert isinstance(error, AuthError)
    assert "invalid_client" in str(error) and "client secret or certificate" in str(error)
    assert "not-the-secret" not in str(error) and "\n" not in str(error)
    assert sim.stats()["token_requests"] == 1
    assert sim.stats()["jobs_requests"] == 0


def test_unknown_client(sim: Simulator, loader: Loader) -> None:
    with pytest.raises(Exception) as failure:
        loader.load(
            credentials=credentials_for(sim, client_id="00000000-0000-0000-0000-000000000000")
        )

    error = _root(failure.value)
    assert isinstance(error, AuthError) and "invalid_client" in str(error)
    assert sim.stats()["token_requests"] == 1


def test_a_scope_the_app_was_not_granted(sim: Simulator, loader: Loader) -> None:
    app = sim.register_app(scopes=())

    with pytest.raises(Exception) as failure:
        loader.load(
            credentials=credentials_for(
                sim, client_id=app.client_id, client_secret=app.client_secret
            )
        )

    error = _root(failure.value)
    assert isinstance(error, AuthError)
    assert "invalid_scope" in str(error) and "Dynamics.ReadWrite.All" in str(error)
    assert sim.stats()["token_requests"] == 1


def test_a_certificate_the_app_does_not_have_is_refused_by_the_identity_service(
    sim: Simulator, loader: Loader
) -> None:
    key, cert = make_certificate("someone-else")

    with pytest.raises(Exception) as failure:
        loader.load(
            credentials=credentials_for(sim, client_secret=None, private_key=key, certificate=cert)
        )

    error = _root(failure.value)
    assert isinstance(error, AuthError) and "invalid_client" in str(error)
    assert sim.stats()["token_requests"] == 1


def test_an_expired_certificate_fails_before_any_request(sim: Simulator, loader: Loader) -> None:
    past = datetime.now(UTC) - timedelta(days=2)
    key, cert = make_certificate("expired", not_before=past - timedelta(days=365), not_after=past)
    sim.register_app(client_id="expired-app", certificate_pem=cert)

    with pytest.raises(ConfigError) as failure:
        loader.source(
            credentials=credentials_for(
                sim, client_id="expired-app", client_secret=None, private_key=key, certificate=cert
            )
        )

    assert "is not valid now" in str(failure.value) and "credentials.certificate" in str(
        failure.value
    )
    assert sim.stats()["token_requests"] == 0


def test_a_certificate_that_does_not_match_the_key_fails_before_any_request(
    sim: Simulator, loader: Loader
) -> None:
    _other_key, other_cert = make_certificate("other")

    with pytest.raises(ConfigError) as failure:
        loader.source(credentials=_certificate_credentials(sim, certificate=other_cert))

    assert "does not match the private key" in str(failure.value)
    assert sim.stats()["token_requests"] == 0


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"client_secret": None}, "given: none"),
        (
            {"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"},
            "given: secret and certificate",
        ),
        (
            {
                "client_secret": None,
                "private_key": "/no/such/key.pem",
                "certificate": "/no/such.crt",
            },
            "neither PEM text",
        ),
        ({"client_secret": None, "pfx_path": "/no/such.pfx"}, "no such file"),
        ({"client_id": ""}, "client_id"),
    ],
)
def test_credential_config_errors(
    sim: Simulator, loader: Loader, overrides: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError) as failure:
        loader.source(credentials=credentials_for(sim, **overrides))

    assert says in str(failure.value) and "\n" not in str(failure.value)


def test_a_wrong_pfx_password(sim: Simulator, loader: Loader) -> None:
    with pytest.raises(ConfigError) as failure:
        loader.source(
            credentials=credentials_for(
                sim, client_secret=None, pfx_path=sim.pfx_path, pfx_password="wrong"
            )
        )
    assert (
        "wrong password" in str(failure.value) and "wrong" not in str(failure.value).split(":")[0]
    )


def test_an_identity_host_that_cannot_be_reached(loader: Loader, sim: Simulator) -> None:
    with pytest.raises(Exception) as failure:
        loader.load(credentials=credentials_for(sim, identity_url="https://127.0.0.1:9"))

    error = _root(failure.value)
    # a refused first contact is a wrong address far more often than an outage: a few quick attempts,
    # then the host and the keys that set it
    assert isinstance(error, UnavailableError), error
    assert "cannot connect to the identity service at https://127.0.0.1:9" in str(error)
    assert "credentials.identity_url" in str(error) and error.exit_code == 4


def test_a_region_without_dynamics_365_is_a_404_said_plainly(
    sim: Simulator, loader: Loader
) -> None:
    with pytest.raises(Exception) as failure:
        loader.load(base_url=sim.base_url + "/no-dynamics-here")

    error = _root(failure.value)
    assert isinstance(error, ApiError) and "404" in str(error) and "region" in str(error)
    assert sim.stats()["requests"].get("other 404", 0) + sim.stats()["jobs_requests"] == 1


def test_regions_set_both_hosts_and_unknown_ones_list_the_valid(sim: Simulator) -> None:
    from avepoint_dynamics import avepoint_dynamics

    credentials = credentials_for(sim, identity_url=None)
    setups = {
        region: jobs_setup(avepoint_dynamics(credentials=credentials, region=region))
        for region in ("us", "we", "gov", "fedramp", "aos2")
    }
    assert setups["us"].query.base_url == "https://graph-us.avepointonlineservices.com"
    assert setups["us"].identity_root == "https://identity.avepointonlineservices.com"
    assert setups["gov"].identity_root == "https://identity-gov.avepointonlineservices.com"
    assert setups["fedramp"].query.base_url == "https://graphusgovapi.online15.net"
    assert setups["fedramp"].identity_root == "https://identity.online15.net"
    assert setups["aos2"].identity_root == "https://identity-aos2.avepointonlineservices.com"
    with pytest.raises(ConfigError) as failure:
        avepoint_dynamics(credentials=credentials, region="atlantis")
    assert "uk" in str(failure.value) and "fedramp" in str(failure.value)


def test_check_reports_the_total_and_loads_nothing(sim: Simulator, loader: Loader) -> None:
    result = check_connection(loader.source())

    assert result["total_jobs"] == len(sim.world.ground_truth())
    assert sim.stats()["jobs_requests"] == 1
    assert not loader.duckdb_path.exists()


def test_check_command_exit_codes(sim: Simulator, tmp_path: Path) -> None:
    env = config_env(sim)
    ok = cli(["check"], None, tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert f"holds {len(sim.world.ground_truth()):,} jobs" in ok.stdout

    bad = cli(
        ["check"],
        None,
        tmp_path,
        env={**env, "SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_SECRET": "nope"},
    )
    assert bad.returncode == 3
    assert bad.stderr.strip().splitlines()[-1].startswith("error: the identity service rejected")

    # check reads one job, so it offers no --page-size; a bad value in config still fails it
    config = cli(
        ["check"], None, tmp_path, env={**env, "SOURCES__AVEPOINT_DYNAMICS__PAGE_SIZE": "500"}
    )
    assert config.returncode == 2 and "page_size" in config.stderr

    down = cli(
        ["check"],
        None,
        tmp_path,
        env={**env, "SOURCES__AVEPOINT_DYNAMICS__BASE_URL": sim.base_url + "/x"},
    )
    assert down.returncode == 4 and "404" in down.stderr


def test_secrets_and_tokens_appear_nowhere(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key_body = "".join(sim.private_key_pem.strip().splitlines()[1:-1])[40:100]
    loader = Loader(sim, tmp_path / "secret")
    loader.load()
    cert_loader = Loader(sim, tmp_path / "cert")
    cert_loader.load(credentials=_certificate_credentials(sim))
    with pytest.raises(Exception) as failure:  # a failing run's messages too
        Loader(sim, tmp_path / "bad").load(
            credentials=credentials_for(sim, client_secret=sim.client_secret + "x")
        )

    issued = sim.issued_tokens()  # the simulator's own record of every token it handed out
    assert len(issued) >= 2
    needles = {
        "client secret": sim.client_secret,
        "private key": key_body,
        **{f"token {i}": t for i, t in enumerate(issued)},
    }
    haystacks: dict[str, bytes] = {
        "logs": caplog.text.encode(),
        "error": str(failure.value).encode(),
    }
    for path in tmp_path.rglob("*"):
        if path.is_file():
            haystacks[str(path.relative_to(tmp_path))] = path.read_bytes()
    assert any(name.endswith("jobs.duckdb") for name in haystacks)
    assert any("trace" in name for name in haystacks), (
        "dlt's trace should be among the files searched"
    )
    assert "DEBUG" in caplog.text
    for what, needle in needles.items():
        for where, data in haystacks.items():
            assert needle.encode() not in data, f"{what} found in {where}"
