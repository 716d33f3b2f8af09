"""The console script: prints how to connect, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import requests


def test_cli_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "from avepoint_simulator.cli import main; raise SystemExit(main())",
         "--jobs", "300", "--seed", "2", "--latency-ms", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        assert set(info) >= {"base_url", "identity_url", "client_id", "client_secret", "ca_file"}
        lines = [process.stdout.readline().rstrip("\n") for _ in range(6)]
        assert lines[0].startswith("# ")
        prefix = "export SOURCES__AVEPOINT_DYNAMICS__"
        assert lines[1:] == [
            f"{prefix}BASE_URL={info['base_url']}",
            f"{prefix}CREDENTIALS__IDENTITY_URL={info['identity_url']}",
            f"{prefix}CREDENTIALS__CLIENT_ID={info['client_id']}",
            f"{prefix}CREDENTIALS__CLIENT_SECRET={info['client_secret']}",
            f"{prefix}CA_BUNDLE={info['ca_file']}",
        ]
        session = requests.Session()
        session.trust_env = False
        token = session.post(
            info["identity_url"] + "/connect/token",
            data={"grant_type": "client_credentials", "client_id": info["client_id"],
                  "client_secret": info["client_secret"], "scope": "dynamics.readwrite.all"},
            verify=info["ca_file"], timeout=30,
        ).json()["access_token"]  # fmt: skip
        answer = session.get(
            info["base_url"] + "/dynamicsbackup/jobs",
            headers={"Authorization": f"Bearer {token}"},
            verify=info["ca_file"],
            timeout=30,
        ).json()
        assert answer["totalCount"] == 300
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_cli_rejects_bad_settings() -> None:
    from avepoint_simulator.cli import main

    assert main(["--error-rate", "3"]) == 2
