"""The console script: prints how to connect, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import requests
from avepoint_simulator.times import parse_time


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


@pytest.mark.unit
def test_cli_rejects_bad_settings() -> None:
    from avepoint_simulator.cli import main

    assert main(["--error-rate", "3"]) == 2


def test_cli_switches_reach_the_service() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "from avepoint_simulator.cli import main; raise SystemExit(main())",
         "--jobs", "300", "--running", "150", "--history-days", "10", "--strict-get",
         "--window-selects", "finish", "--window", "inclusive", "--max-page-size", "50",
         "--oversize-pages", "cap", "--repeat-in-page", "2", "--next-link", "short", "--no-tls"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        session = requests.Session()
        session.trust_env = False
        faults = session.get(info["base_url"] + "/_simulator/faults", timeout=30).json()
        assert {
            key: faults[key]
            for key in ("strict_get", "window_selects", "window", "max_page_size",
                        "oversize_pages", "repeat_in_page", "next_link")
        } == {
            "strict_get": True, "window_selects": "finish", "window": "inclusive",
            "max_page_size": 50, "oversize_pages": "cap", "repeat_in_page": 2, "next_link": "short",
        }  # fmt: skip
        truth = session.get(info["base_url"] + "/_simulator/ground_truth", timeout=30).json()
        newest = sorted(truth, key=lambda job: parse_time(job["startTime"]))[-150:]
        assert all(job["status"] == 2 for job in newest)  # a busy tenant: the newest all run
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
