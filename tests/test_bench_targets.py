"""The benchmark's verdicts (bench/targets.py, ``scripts/bench --ci``): what passes, what fails CI.

CI fails only on a target missed by more than its band (2x by default) or on a correctness check; these
tests feed the evaluation figures of a made-up run and read the verdicts.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.cli import ci_verdict
from bench.targets import evaluate_targets, far_outside

pytestmark = pytest.mark.unit


def scenario(jobs: int, latency: float, **results: dict[str, Any]) -> dict[str, Any]:
    for report in results.values():
        report.setdefault("status", "ok")
    return {"name": f"{jobs}-{latency:g}", "jobs": jobs, "latency_ms": latency, "results": results}


def run(ours_at_50ms: float, plain_rss_large: float, finished: bool = True) -> list[dict[str, Any]]:
    return [
        scenario(
            100_000,
            0,
            ours={"seconds": 4.0, "peak_rss_mb": 250, "peak_private_mb": 150},
            plain={"seconds": 4.0, "peak_rss_mb": 250, "peak_private_mb": 150},
            transport_c1={"seconds": 2.0},
            load_limit={"seconds": 1.0},
        ),
        scenario(
            100_000,
            50,
            ours={"seconds": ours_at_50ms, "peak_rss_mb": 250, "peak_private_mb": 150},
            plain={"seconds": 8.0, "peak_rss_mb": 250, "peak_private_mb": 150},
            transport={"seconds": 8.0},
            rest_api={"seconds": 100.0},
            ours_incremental={"seconds": 1.0, "jobs_requests": 30, "finished_updated": finished},
        ),
        scenario(
            1_000_000,
            50,
            ours={"seconds": 80.0, "peak_rss_mb": 260, "peak_private_mb": 155},
            plain={"seconds": 80.0, "peak_rss_mb": plain_rss_large, "peak_private_mb": 155},
        ),
    ]


def by_name(targets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["target"]: item for item in targets}


def test_the_issues_ratios_are_judged_at_100000_jobs() -> None:
    targets = by_name(evaluate_targets(run(ours_at_50ms=9.0, plain_rss_large=270)))

    assert targets["50 ms, 100,000 jobs: ours time / transport-limit time"]["value"] == 1.125
    assert targets["50 ms, 100,000 jobs: rest_api time / ours time"]["pass"] is True
    both = targets["0 ms, 100,000 jobs: ours time / (transport limit at 1 in flight + load limit)"]
    assert (both["value"], both["pass"]) == (pytest.approx(4 / 3, abs=1e-3), True)
    growth = targets["50 ms: peak RSS of plain, 1,000,000 / 100,000 jobs"]
    assert (growth["value"], growth["pass"]) == (1.08, True)
    assert targets["50 ms, 100,000 jobs: incremental (+1%) time / full time"]["pass"] is True


def test_a_missed_goal_fails_ci_only_beyond_the_band() -> None:
    within = evaluate_targets(run(ours_at_50ms=12.0, plain_rss_large=400))  # 1.5x, +60 %: FAIL
    beyond = evaluate_targets(run(ours_at_50ms=24.0, plain_rss_large=400))  # 3x the transport limit

    assert any(item["pass"] is False for item in within)
    assert ci_verdict([], within, band=2.0) == 0
    assert ci_verdict([], beyond, band=2.0) == 1


def test_a_wrong_result_fails_ci_whatever_the_band() -> None:
    targets = evaluate_targets(run(ours_at_50ms=9.0, plain_rss_large=270, finished=False))
    final = by_name(targets)[
        "50 ms, 100,000 jobs: incremental (+1%): previously running jobs final in DuckDB"
    ]

    assert far_outside(final, 100.0)
    assert ci_verdict([], targets, band=2.0) == 1


def test_a_contender_that_failed_fails_ci() -> None:
    failed = [scenario(10_000, 0, ours={"status": "error", "error": "boom"})]

    assert ci_verdict(failed, [], band=2.0) == 1
