"""Fixtures for the simulator's own tests: a simulator over real HTTPS and a small client for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from avepoint_simulator import Faults, Simulator

GET_JOBS = "/api/OpenApi/GetJobs"
V2_JOBS = "/dynamicsbackup/jobs"


class SimClient:
    """requests against one simulator: verify= passed per request (REQUESTS_CA_BUNDLE would
    otherwise override a session's verify), a bearer token fetched on demand."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.session = requests.Session()
        self.session.trust_env = False
        self._token: str | None = None

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", self.sim.ca_file)
        kwargs.setdefault("timeout", 30)
        url = path if path.startswith("http") else self.sim.base_url + path
        return self.session.request(method, url, **kwargs)

    def token_response(self, **form: Any) -> requests.Response:
        data = {
            "grant_type": "client_credentials",
            "client_id": self.sim.client_id,
            "client_secret": self.sim.client_secret,
            "scope": "dynamics.readwrite.all",
        }
        data.update(form)
        return self.request(
            "POST", "/connect/token", data={k: v for k, v in data.items() if v is not None}
        )

    @property
    def token(self) -> str:
        if self._token is None:
            response = self.token_response()
            assert response.status_code == 200, response.text
            self._token = response.json()["access_token"]
        return self._token

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def v1(self, body: Any = None, **kwargs: Any) -> requests.Response:
        headers = {**self.auth(), **kwargs.pop("headers", {})}
        if body is None:
            body = {"pageInfo": {"currentPage": 1, "pageSize": 10}}
        return self.request("POST", GET_JOBS, json=body, headers=headers, **kwargs)

    def v2(self, params: dict[str, Any] | str | None = None, **kwargs: Any) -> requests.Response:
        headers = {**self.auth(), **kwargs.pop("headers", {})}
        return self.request("GET", V2_JOBS, params=params, headers=headers, **kwargs)

    def all_v1(self, body: dict[str, Any], page_size: int = 100) -> list[dict[str, Any]]:
        """Every job of a query, paging v1 until the total is reached."""
        jobs: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self.v1(
                {**body, "pageInfo": {"currentPage": page, "pageSize": page_size}}
            ).json()
            jobs += answer["jobs"]
            if page * page_size >= answer["totalCount"]:
                return jobs
            page += 1


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """2,000 jobs, seed 3, HTTPS; shared by a module's tests, which must not change its jobs
    (use ``fresh_sim`` for that). Faults and stats are reset for each test by ``client``."""
    with Simulator(jobs=2_000, seed=3) as simulator:
        yield simulator


@pytest.fixture
def client(sim: Simulator) -> SimClient:
    sim.set_faults(**Faults().as_dict())
    sim.reset_stats()
    return SimClient(sim)


@pytest.fixture
def fresh_sim() -> Iterator[Simulator]:
    """A simulator of this test's own (500 jobs, seed 5)."""
    with Simulator(jobs=500, seed=5) as simulator:
        yield simulator


@pytest.fixture
def fresh_client(fresh_sim: Simulator) -> SimClient:
    return SimClient(fresh_sim)
