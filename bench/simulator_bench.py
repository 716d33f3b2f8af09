"""Benchmark of the AvePoint simulator: start time and memory of a 1,000,000-job history, and
page latency over real HTTPS with a bearer token.

Run: ``python bench/simulator_bench.py [--jobs N] [--requests N]``. Prints a table and writes
``bench/results/simulator.json``. The client runs in the same process as the server (so the
RSS figure is the simulator's own), which makes the latencies slightly pessimistic.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import requests
from avepoint_simulator import Simulator
from avepoint_simulator.times import format_ticks, parse_time

RESULTS = Path(__file__).parent / "results" / "simulator.json"


def rss_mb() -> float:
    """Resident set size of this process (MB), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario")
    args = parser.parse_args()

    rss_before = rss_mb()
    started = time.perf_counter()
    sim = Simulator(jobs=args.jobs, seed=1).start()
    start_s = time.perf_counter() - started
    rss_after = rss_mb()
    try:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
        token = session.post(
            sim.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
                "scope": "dynamics.readwrite.all",
            },
            verify=sim.ca_file,
            timeout=30,
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        rng = random.Random(7)
        orgs = [o["id"] for o in sim.world.organizations]
        first = sim.world.ground_truth()[0] if args.jobs <= 10_000 else None
        total = sim.world.total()
        last_page = (total + 99) // 100
        # Start-time range of the history, for random windows.
        oldest_page = session.post(
            sim.base_url + "/api/OpenApi/GetJobs",
            json={"pageInfo": {"currentPage": last_page, "pageSize": 100}},
            headers=headers,
            verify=sim.ca_file,
            timeout=30,
        ).json()["jobs"]
        low = parse_time((first or oldest_page[-1])["startTime"])
        high = parse_time(
            session.post(
                sim.base_url + "/api/OpenApi/GetJobs",
                json={"pageInfo": {"currentPage": 1, "pageSize": 1}},
                headers=headers,
                verify=sim.ca_file,
                timeout=30,
            ).json()["jobs"][0]["startTime"]
        )

        def window() -> dict[str, Any]:
            a = rng.randrange(low, high)
            b = a + rng.randrange(3600, 7 * 86_400) * 10**7
            return {"startTime": format_ticks(a), "endTime": format_ticks(b)}

        scenarios: dict[str, Any] = {
            "unfiltered page 1": lambda: {"pageInfo": {"currentPage": 1, "pageSize": 100}},
            "unfiltered random page": lambda: {
                "pageInfo": {"currentPage": rng.randint(1, last_page), "pageSize": 100}
            },
            "deep pages near the end": lambda: {
                "pageInfo": {"currentPage": last_page - rng.randint(0, 20), "pageSize": 100}
            },
            "filtered by org": lambda: {
                "organizationId": rng.choice(orgs),
                "pageInfo": {"currentPage": rng.randint(1, 500), "pageSize": 100},
            },
            "window (1 h..7 d)": lambda: {
                **window(),
                "pageInfo": {"currentPage": 1, "pageSize": 100},
            },
            "window + org + status": lambda: {
                **window(),
                "organizationId": rng.choice(orgs),
                "status": 3,
                "pageInfo": {"currentPage": 1, "pageSize": 100},
            },
            "org + type + status (whole history)": lambda: {
                "organizationId": rng.choice(orgs),
                "type": 1,
                "status": 4,
                "pageInfo": {"currentPage": rng.randint(1, 20), "pageSize": 100},
            },
        }
        results: dict[str, dict[str, float]] = {}
        for name, make_body in scenarios.items():
            timings = []
            for _ in range(args.requests):
                body = make_body()
                t0 = time.perf_counter()
                response = session.post(
                    sim.base_url + "/api/OpenApi/GetJobs",
                    json=body,
                    headers=headers,
                    verify=sim.ca_file,
                    timeout=30,
                )
                response.json()
                timings.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, response.text
            results[name] = {
                "p50_ms": round(statistics.median(timings), 2),
                "p95_ms": round(percentile(timings, 0.95), 2),
                "max_ms": round(max(timings), 2),
            }
    finally:
        sim.stop()

    report = {
        "jobs": args.jobs,
        "start_seconds": round(start_s, 3),
        "rss_increase_mb": round(rss_after - rss_before, 1),
        "requests_per_scenario": args.requests,
        "page_size": 100,
        "transport": "HTTPS keep-alive, bearer token, client in the same process",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "latency": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"jobs: {args.jobs:,}  start: {start_s:.2f} s  RSS increase: {rss_after - rss_before:.1f} MB"
    )
    print(f"{'scenario':40} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, figures in results.items():
        print(
            f"{name:40} {figures['p50_ms']:8.2f} {figures['p95_ms']:8.2f} {figures['max_ms']:8.2f}"
        )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
