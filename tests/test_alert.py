"""``avepoint-dynamics alert``: exit 6 and one line per organization whose backups went stale.

An organization is made stale in the simulator (its successful backups of the last 40 hours turned into
failures), loaded into DuckDB and PostgreSQL, and the alert reads the ``backup_freshness`` view there. The
expected organizations and hours are computed from the simulator's ground truth, not from the view.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from avepoint_pipelines.cli import main
from avepoint_pipelines.load.pipeline import Target, run_load
from avepoint_simulator import Simulator

from .conftest import Loader, PostgresServer
from .test_destinations import source_for
from .test_views_report import expected_freshness

STALE_AFTER = 26.0
#: hours_since_success moves while the test runs; the view and the oracle read the clock apart
HOURS_TOLERANCE = 0.2
#: An organization that only ever restored: never a successful backup.
NEVER_ORG = "0e0e0e0e-5555-4666-8777-888888888888"
LINE = re.compile(
    r"stale: (?P<name>.+?)(?: \(tenant (?P<tenant>\w+)\))?: "
    r"(?:last successful backup (?P<hours>[\d.]+) hours ago|no successful backup ever) "
    r"\(threshold (?P<threshold>[\d.]+) hours\)"
)


def _utc(text: str) -> datetime:
    from .expected import api_time

    moment = api_time(text)
    assert moment is not None
    return moment


def make_stale(sim: Simulator, organization: str, hours: float = 40) -> list[str]:
    """Turn ``organization``'s successful backups that finished in the last ``hours`` into failures."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    failed = []
    for job in sim.world.ground_truth():
        if (
            job["organizationId"] == organization
            and job["type"] == 1
            and job["status"] in (3, 7)
            and _utc(job["finishTime"]) > since
        ):
            sim.world.patch_job(job["jobId"], status=4)
            failed.append(job["jobId"])
    return failed


@pytest.fixture
def stale_world(sim: Simulator) -> dict[str, Any]:
    """contoso-prod made stale, an organization that never backed up; what the oracle says of them."""
    names = {org["id"]: org["name"] for org in sim.world.organizations}
    stale_org = next(org for org, name in names.items() if name == "contoso-prod")
    assert make_stale(sim, stale_org), "contoso-prod should have backed up in the last 40 hours"
    for job in sim.world.add_jobs(2, organization_id=NEVER_ORG):
        sim.world.patch_job(job["jobId"], type=2)
    return {"names": names, "stale_org": stale_org}


def expected(sim: Simulator, threshold: float = STALE_AFTER) -> dict[str, dict[str, Any]]:
    """Organization id -> the oracle's hours since success and staleness, now."""
    want = expected_freshness(sim.world.ground_truth(), datetime.now(UTC), threshold)
    for org, row in want.items():
        hours = row["hours_since_success"]
        assert hours is None or abs(hours - threshold) > 1, f"{org} is too close to call"
    return want


def name_of(sim: Simulator, organization: str) -> str:
    rows = [j for j in sim.world.ground_truth() if j["organizationId"] == organization]
    return str(rows[0].get("organizationName") or organization)


def assert_stale_lines(
    lines: list[str], sim: Simulator, threshold: float = STALE_AFTER, only: set[str] | None = None
) -> None:
    """Exactly one line per stale organization (oldest first), hours as the oracle says."""
    want = {
        org: row
        for org, row in expected(sim, threshold).items()
        if row["stale"] and (only is None or org in only)
    }
    order = sorted(
        want,
        key=lambda org: -(want[org]["hours_since_success"] or float("inf")),
    )
    assert len(lines) == len(order), lines
    for line, org in zip(lines, order, strict=True):
        hours = want[org]["hours_since_success"]
        name = name_of(sim, org)
        if hours is None:
            assert line == (
                f"stale: {name}: no successful backup ever (threshold {threshold:g} hours)"
            )
            continue
        shown = LINE.fullmatch(line)
        assert shown is not None, line
        assert line == (
            f"stale: {name}: last successful backup {shown['hours']} hours ago "
            f"(threshold {threshold:g} hours)"
        )
        assert float(shown["hours"]) == pytest.approx(hours, abs=HOURS_TOLERANCE)


def alert(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    """Run ``avepoint-dynamics alert ARGS`` in-process: exit code, stdout lines, stderr lines."""
    capsys.readouterr()
    code = main(["alert", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


# ---------------------------------------------------------------------------------------- DuckDB
def test_alert_names_each_stale_organization_and_exits_6_on_duckdb(
    sim: Simulator,
    loader: Loader,
    stale_world: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    loader.load()
    where = ["--duckdb-path", str(loader.duckdb_path), "--pipeline-name", loader.pipeline_name]
    where += ["--pipelines-dir", str(loader.workdir / "pipelines")]

    code, lines, errors = alert(capsys, *where)

    assert (code, errors) == (6, [])
    assert_stale_lines(lines, sim)
    stale_name = name_of(sim, stale_world["stale_org"])
    assert any(line.startswith(f"stale: {stale_name}: last successful backup") for line in lines)
    assert lines[0].endswith(": no successful backup ever (threshold 26 hours)")  # oldest first

    code, out, _ = alert(capsys, *where, "--json")

    assert code == 6
    report = json.loads("\n".join(out))
    want = expected(sim)
    assert report["ok"] is False and report["checked"] == len(want)
    stale = {row["organization_id"]: row for row in report["stale"]}
    assert stale.keys() == {org for org, row in want.items() if row["stale"]}
    for org, row in stale.items():
        assert row["stale"] is True and row["stale_after_hours"] == STALE_AFTER
        if want[org]["hours_since_success"] is None:
            assert row["hours_since_success"] is None and row["last_successful_backup_at"] is None
        else:
            assert row["hours_since_success"] == pytest.approx(
                want[org]["hours_since_success"], abs=HOURS_TOLERANCE
            )

    # Only the organizations asked for: by name and by id, repeated or comma-separated.
    fresh = [org for org, row in want.items() if not row["stale"]]
    names = [name_of(sim, org) for org in fresh[:2]]
    code, lines, _ = alert(capsys, *where, "--organization", ",".join(names))
    assert (code, lines) == (0, ["ok: 2 organizations backed up within 26 hours (duckdb:avepoint)"])

    code, lines, _ = alert(
        capsys, *where, "--organization", stale_world["stale_org"], "--organization", names[0]
    )
    assert code == 6
    assert_stale_lines(lines, sim, only={stale_world["stale_org"]})

    # A year's threshold: only the organization that never backed up is stale.
    code, lines, _ = alert(capsys, *where, "--stale-hours", "8760")
    assert code == 6
    assert_stale_lines(lines, sim, threshold=8760)
    assert len(lines) == 1 and "no successful backup ever (threshold 8760 hours)" in lines[0]


def test_alert_errors_are_one_line_with_exit_2(
    sim: Simulator, loader: Loader, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.duckdb"
    code, out, errors = alert(capsys, "--duckdb-path", str(missing))
    assert (code, out) == (2, [])
    assert errors == [
        f"error: no DuckDB file at {missing}: check --duckdb-path (alert reads what load wrote)"
    ]

    loader.load()
    where = ["--duckdb-path", str(loader.duckdb_path), "--pipeline-name", loader.pipeline_name]
    where += ["--pipelines-dir", str(loader.workdir / "pipelines")]
    code, out, errors = alert(capsys, *where, "--organization", "nobody")
    assert (code, out) == (2, [])
    assert len(errors) == 1
    assert errors[0].startswith(
        "error: organization 'nobody' is in no row of backup_freshness (no job of it was loaded); "
        "give a name or id it lists: "
    )

    code, out, errors = alert(capsys, *where, "--dataset", "elsewhere")
    assert (code, out) == (2, [])
    assert errors == [
        "error: no backup_freshness view in dataset 'elsewhere': nothing was loaded there yet (or "
        "not with this pipeline); run avepoint-dynamics load first, or check --dataset"
    ]

    code, out, errors = alert(capsys, *where, "--stale-hours", "-3")
    assert (code, errors) == (2, ["error: --stale-hours -3 is not a positive number of hours"])

    code, out, errors = alert(capsys, "--destination", "filesystem")
    assert code == 2
    assert errors == [
        "error: the filesystem destination holds no views, so there is no backup_freshness to "
        "read: alert reads a SQL destination (--destination duckdb, postgres, ...)"
    ]


# ---------------------------------------------------------------------------------------- PostgreSQL
def test_alert_reads_backup_freshness_in_postgres(
    sim: Simulator,
    stale_world: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", server.url)
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    target = Target(
        destination="postgres",
        dataset_name="alert_pg",
        pipeline_name="avepoint_alert_pg",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    run_load(source_for(sim), target)
    # Another machine: nothing local, only the destination.
    where = ["--destination", "postgres", "--dataset", "alert_pg"]
    where += ["--pipeline-name", "avepoint_alert_pg", "--pipelines-dir", str(tmp_path / "other")]

    code, lines, errors = alert(capsys, *where)

    assert (code, errors) == (6, [])
    assert_stale_lines(lines, sim)
    assert all(line.endswith("(threshold 26 hours)") for line in lines)

    code, out, _ = alert(capsys, *where, "--json", "--stale-hours", "100")

    assert code == 6
    report = json.loads("\n".join(out))
    want = expected(sim, threshold=100)
    assert {row["organization_id"] for row in report["stale"]} == {
        org for org, row in want.items() if row["stale"]
    }
    assert report["stale_after_hours"] == 100

    fresh = [org for org, row in want.items() if not row["stale"]]
    code, lines, _ = alert(capsys, *where, "--stale-hours", "100", "--organization", fresh[0])
    assert (code, lines) == (
        0,
        ["ok: 1 organization backed up within 100 hours (postgres:alert_pg)"],
    )


# ---------------------------------------------------------------------------------------- tenants
def test_alert_names_the_tenant_of_a_stale_organization_when_tenants_share_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from avepoint_pipelines.load.tenant_runs import run_tenants

    from .test_tenants import _configure

    with Simulator(jobs=3_000, seed=41) as contoso, Simulator(jobs=3_000, seed=42) as fabrikam:
        _configure(monkeypatch, "contoso", contoso)
        _configure(monkeypatch, "fabrikam", fabrikam)
        # the same organization name in both tenants; stale in fabrikam's only
        organization = next(o for o in fabrikam.world.organizations if o["name"] == "contoso-prod")
        assert make_stale(fabrikam, organization["id"])
        assert any(o["name"] == "contoso-prod" for o in contoso.world.organizations)
        target = Target(
            duckdb_path=str(tmp_path / "jobs.duckdb"), pipelines_dir=str(tmp_path / "pipelines")
        )
        results = run_tenants(["contoso", "fabrikam"], target, parallel=2)
        assert all(r.ok for r in results), [r.error for r in results]

        code, lines, errors = alert(capsys, "--duckdb-path", target.duckdb_path)

    assert (code, errors) == (6, [])
    shown = [LINE.fullmatch(line) for line in lines]
    assert all(shown), lines
    stale = {(m["name"], m["tenant"]) for m in shown if m}
    assert ("contoso-prod", "fabrikam") in stale
    assert ("contoso-prod", "contoso") not in stale
    assert all(tenant in ("contoso", "fabrikam") for _, tenant in stale)
