"""A plain client of the jobs API (``requests``, no dlt): the token, one page, pages N in flight.

The transport limit, the load limit's preparation and the naive loop fetch pages through it; dlt's
``rest_api`` and ours use their own clients.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import requests

SCOPE = "dynamics.readwrite.all"
JOBS_PATH = "/api/OpenApi/GetJobs"


def token(spec: dict[str, Any], session: requests.Session) -> str:
    """An access token from the simulator's identity endpoint (client credentials)."""
    response = session.post(
        spec["token_url"],
        data={
            "grant_type": "client_credentials",
            "client_id": spec["client_id"],
            "client_secret": spec["client_secret"],
            "scope": SCOPE,
        },
        verify=spec["ca_file"],
        timeout=60,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def fetch_page(
    spec: dict[str, Any], session: requests.Session, access_token: str, page: int
) -> dict[str, Any]:
    """One page of ``GetJobs`` (1-based), parsed."""
    response = session.post(
        spec["base_url"] + JOBS_PATH,
        json={"pageInfo": {"currentPage": page, "pageSize": spec["page_size"]}},
        headers={"Authorization": f"Bearer {access_token}"},
        verify=spec["ca_file"],
        timeout=120,
    )
    response.raise_for_status()
    payload: dict[str, Any] = response.json()
    return payload


def concurrent_pages(
    spec: dict[str, Any], on_page: Callable[[list[dict[str, Any]]], None]
) -> tuple[int, int]:
    """Page 1 gives the total; pages 2..n go through a pool of ``concurrency`` threads (each its own
    keep-alive session), at most that many in flight. ``on_page`` sees each page's jobs in page order.

    Returns:
        (total reported, pages fetched).
    """
    # Imported here: a contender that never pages concurrently should not carry it in its RSS.
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        s: requests.Session = local.session
        return s

    access_token = token(spec, session())
    first = fetch_page(spec, session(), access_token, 1)
    total = int(first["totalCount"])
    on_page(first["jobs"])
    pages = max(1, math.ceil(total / spec["page_size"]))
    concurrency = spec["concurrency"]

    def fetch(page: int) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = fetch_page(spec, session(), access_token, page)["jobs"]
        return jobs

    with ThreadPoolExecutor(concurrency) as pool:
        # Bounded submission: never more than `concurrency` pages queued or in flight.
        next_page = 2
        running: dict[Future[list[dict[str, Any]]], int] = {}
        done_pages: dict[int, list[dict[str, Any]]] = {}
        emit = 2
        while next_page <= pages or running:
            while next_page <= pages and len(running) < concurrency:
                running[pool.submit(fetch, next_page)] = next_page
                next_page += 1
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                done_pages[running.pop(future)] = future.result()
            while emit in done_pages:
                on_page(done_pages.pop(emit))
                emit += 1
    return total, pages
