"""Analyst views and the HTML report, checked against the simulator's ground truth.

The jobs travel the real way (simulator over HTTPS on loopback → connector → dlt → a DuckDB file, and a
PostgreSQL server when one is installed); every expectation is computed here, in Python, from
``sim.world.ground_truth()``, never from the code under test. The report is opened in headless Chromium.
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
import struct
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import pytest
from avepoint_pipelines.analytics.report import (
    DEFAULT_DAYS,
    DEFAULT_MAX_FAILURES,
    ReportData,
    ReportError,
    read_report_data,
    render_html,
    write_report,
)
from avepoint_pipelines.analytics.views import (
    RUN_LOG_VIEW,
    VIEW_NAMES,
    create_views,
    refresh_views_after_load,
)
from avepoint_pipelines.cli import main
from avepoint_pipelines.load.pipeline import Target, make_pipeline, run_load
from avepoint_simulator import Simulator

from tests.conftest import Loader, PostgresServer

STALE_AFTER = 26.0
#: Tolerance between the view's now() and ours, in hours (the query takes milliseconds; allow 36 s).
HOURS_TOLERANCE = 0.01
#: A session time zone far from UTC: a view that took the session's day instead of the UTC day would show it.
FAR_ZONE = "Pacific/Kiritimati"
BUCKETS = {3: "finished", 4: "failed", 7: "finished_with_exception", 2: "in_progress"}
NEW_ORG = "0f0f0f0f-1111-4222-8333-444444444444"
NEVER_ORG = "0e0e0e0e-5555-4666-8777-888888888888"

Rows = list[dict[str, Any]]
Fetch = Callable[[str], Rows]


# ---------------------------------------------------------------------------------------- the world
@dataclass
class Arranged:
    """A simulator whose history was bent on purpose, and the jobs the arrangement relies on."""

    sim: Simulator
    stale_org: str
    exception_org: str


def arrange(sim: Simulator) -> Arranged:
    """Make one organization stale, one fresh and new, one that never backed up, odd statuses."""
    world = sim.world
    truth = world.ground_truth()
    now = datetime.now(UTC)
    orgs = [org["id"] for org in world.organizations]
    stale_org, exception_org = orgs[3], orgs[0]
    # Stale: every backup of the last three days failed.
    for job in truth:
        if (
            job["organizationId"] == stale_org
            and job["type"] == 1
            and job["status"] in (3, 7)
            and utc(job["finishTime"]) > now - timedelta(hours=72)
        ):
            world.patch_job(job["jobId"], status=4)
    # The newest successful backup of another organization finished with exception.
    newest = max(
        (
            j
            for j in truth
            if j["organizationId"] == exception_org and j["type"] == 1 and j["status"] == 3
        ),
        key=lambda j: utc(j["finishTime"]),
    )
    world.patch_job(newest["jobId"], status=7)
    # A new organization with one fresh backup, and one that only ever restored.
    fresh = world.add_jobs(3, organization_id=NEW_ORG)
    world.patch_job(fresh[-1]["jobId"], type=1, status=3)
    for job in world.add_jobs(2, organization_id=NEVER_ORG):
        world.patch_job(job["jobId"], type=2)
    # Statuses nobody documented, and none at all, count as "other".
    world.patch_job(truth[10]["jobId"], status=5)
    world.drop_field(truth[11]["jobId"], "status")
    return Arranged(sim, stale_org, exception_org)


@pytest.fixture(scope="module")
def arranged() -> Iterator[Arranged]:
    with Simulator(jobs=3_000, seed=23) as sim:
        yield arrange(sim)


@pytest.fixture(scope="module")
def loaded(arranged: Arranged, tmp_path_factory: pytest.TempPathFactory) -> Loader:
    """The arranged history loaded once into a DuckDB file through ``run_load`` (which creates the views)."""
    loader = Loader(arranged.sim, tmp_path_factory.mktemp("views"))
    loader.load()
    return loader


@pytest.fixture(scope="module")
def truth(arranged: Arranged, loaded: Loader) -> Rows:
    return arranged.sim.world.ground_truth()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def duckdb_fetch(path: Path, dataset: str = "avepoint") -> Fetch:
    def fetch(view: str) -> Rows:
        with duckdb.connect(str(path), read_only=True) as con:
            con.execute(f"SET TimeZone = '{FAR_ZONE}'")
            cursor = con.execute(f'SELECT * FROM "{dataset}"."{view}"')
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return fetch


# ---------------------------------------------------------------------------------- expectations
def percentile_cont(values: list[float], q: float) -> float:
    """SQL's percentile_cont: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def expected_outcomes(jobs: Rows) -> dict[tuple[Any, ...], dict[str, Any]]:
    counts: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)
    for job in jobs:
        key = (utc(job["startTime"]).date(), job["organizationId"], job["type"])
        counts[key][BUCKETS.get(job.get("status"), "other")] += 1  # type: ignore[arg-type]
    expected = {}
    for key, counter in counts.items():
        completed = counter["finished"] + counter["failed"] + counter["finished_with_exception"]
        expected[key] = {
            **{name: counter[name] for name in [*BUCKETS.values(), "other"]},
            "total": sum(counter.values()),
            "completed": completed,
            "success_rate": counter["finished"] / completed if completed else None,
        }
    return expected


def expected_freshness(
    jobs: Rows, now: datetime, threshold: float = STALE_AFTER
) -> dict[str, dict[str, Any]]:
    expected: dict[str, dict[str, Any]] = {}
    for org in {job["organizationId"] for job in jobs}:
        backups = [j for j in jobs if j["organizationId"] == org and j["type"] == 1]
        success = [utc(j["finishTime"]) for j in backups if j.get("status") in (3, 7)]
        clean = [utc(j["finishTime"]) for j in backups if j.get("status") == 3]
        last = max(success, default=None)
        hours = (now - last).total_seconds() / 3600 if last else None
        expected[org] = {
            "last_successful_backup_at": last,
            "last_clean_backup_at": max(clean, default=None),
            "last_backup_started_at": max((utc(j["startTime"]) for j in backups), default=None),
            "last_success_had_exceptions": None
            if last is None
            else max(clean, default=None) != last,
            "hours_since_success": hours,
            "stale": hours is None or hours > threshold,
        }
    return expected


def assert_same_time(actual: datetime | None, expected: datetime | None) -> None:
    if expected is None:
        assert actual is None
    else:
        assert actual is not None
        assert abs(actual - expected) <= timedelta(microseconds=1)


def assert_freshness(rows: Rows, expected: dict[str, dict[str, Any]], threshold: float) -> None:
    by_org = {row["organization_id"]: row for row in rows}
    assert set(by_org) == set(expected)
    for org, want in expected.items():
        row = by_org[org]
        for column in (
            "last_successful_backup_at",
            "last_clean_backup_at",
            "last_backup_started_at",
        ):
            assert_same_time(row[column], want[column])
        assert row["last_success_had_exceptions"] == want["last_success_had_exceptions"], org
        assert row["stale_after_hours"] == threshold
        if want["hours_since_success"] is None:
            assert row["hours_since_success"] is None
            assert row["stale"] is True
            continue
        assert row["hours_since_success"] == pytest.approx(
            want["hours_since_success"], abs=HOURS_TOLERANCE
        )
        if abs(want["hours_since_success"] - threshold) > HOURS_TOLERANCE:
            assert row["stale"] is want["stale"], org


def check_all_views(fetch: Fetch, jobs: Rows, arranged: Arranged) -> None:
    """Every view against the ground truth; shared by the DuckDB and the PostgreSQL tests."""
    names = {job["organizationId"]: job["organizationName"] for job in jobs}

    outcomes = fetch("job_outcomes_daily")
    actual = {(r["day"], r["organization_id"], r["type"]): r for r in outcomes}
    assert len(actual) == len(outcomes), "one row per day x organization x type"
    expected = expected_outcomes(jobs)
    assert set(actual) == set(expected)
    for key, want in expected.items():
        row = actual[key]
        assert row["organization_name"] == names[key[1]]
        for column, value in want.items():
            assert row[column] == pytest.approx(value), (key, column)
    assert sum(r["other"] for r in outcomes) == 2

    failures = fetch("job_failures")
    want_failures = {
        j["jobId"]: (
            j["status"],
            j["organizationId"],
            j["failedEntity"],
            j["failedRecord"],
            j["warningEntity"],
            j["warningRecord"],
            j["durationHours"],
        )
        for j in jobs
        if j.get("status") in (4, 7)
    }
    assert {
        r["job_id"]: (
            r["status"],
            r["organization_id"],
            r["failed_entity"],
            r["failed_record"],
            r["warning_entity"],
            r["warning_record"],
            r["duration_hours"],
        )
        for r in failures
    } == want_failures
    assert {r["status_name"] for r in failures} == {"failed", "finished with exception"}

    durations: dict[tuple[str, int], list[float]] = defaultdict(list)
    for job in jobs:
        if job.get("status") in (3, 4, 7) and job["durationHours"] is not None:
            durations[(job["organizationId"], job["type"])].append(job["durationHours"])
    percentiles = {(r["organization_id"], r["type"]): r for r in fetch("job_duration_percentiles")}
    assert set(percentiles) == set(durations)
    for key, values in durations.items():
        row = percentiles[key]
        assert row["jobs"] == len(values)
        assert row["max_hours"] == max(values)
        for q, column in ((0.5, "p50_hours"), (0.9, "p90_hours"), (0.95, "p95_hours")):
            assert row[column] == pytest.approx(percentile_cont(values, q), rel=1e-9, abs=1e-12)

    rows = fetch("backup_freshness")
    want = expected_freshness(jobs, datetime.now(UTC))
    assert_freshness(rows, want, STALE_AFTER)
    # What the arrangement was for: the view must see it, not just agree with a lucky history.
    flags = {row["organization_id"]: row for row in rows}
    assert flags[arranged.stale_org]["stale"] is True
    assert (
        flags[NEVER_ORG]["stale"] is True and flags[NEVER_ORG]["last_successful_backup_at"] is None
    )
    assert flags[NEW_ORG]["stale"] is False
    assert flags[arranged.exception_org]["last_success_had_exceptions"] is True


# -------------------------------------------------------------------------------------- the views
def test_views_match_ground_truth_in_duckdb(
    loaded: Loader, truth: Rows, arranged: Arranged
) -> None:
    check_all_views(duckdb_fetch(loaded.duckdb_path), truth, arranged)


def test_stale_threshold_is_a_parameter(loaded: Loader, truth: Rows, tmp_path: Path) -> None:
    # Copy the file: this test recreates views, the others read the module's file.
    copy = tmp_path / "copy.duckdb"
    shutil.copyfile(loaded.duckdb_path, copy)
    hours = sorted(
        h
        for h in (
            v["hours_since_success"] for v in expected_freshness(truth, datetime.now(UTC)).values()
        )
        if h
    )
    # A threshold between two organizations, far from both, so the flags split.
    gaps = [(b - a, (a + b) / 2) for a, b in itertools.pairwise(hours) if b - a > 0.2]
    threshold = max(gaps)[1]
    target = Target(duckdb_path=str(copy), pipelines_dir=str(tmp_path / "pipelines"))
    # the run log's view too: the loaded file has one
    views = create_views(make_pipeline(target), stale_after_hours=threshold)
    assert views == [*VIEW_NAMES, RUN_LOG_VIEW]
    rows = duckdb_fetch(copy)("backup_freshness")
    expected = expected_freshness(truth, datetime.now(UTC), threshold)
    assert_freshness(rows, expected, threshold)
    assert {row["stale"] for row in rows} == {True, False}

    with pytest.raises(ValueError, match="stale_after_hours"):
        create_views(make_pipeline(target), stale_after_hours=-1)


def test_no_jobs_table_no_views(tmp_path: Path) -> None:
    target = Target(duckdb_path=str(tmp_path / "empty.duckdb"), pipelines_dir=str(tmp_path / "p"))
    assert create_views(make_pipeline(target)) == []


def test_empty_history(tmp_path: Path) -> None:
    """No jobs: no views (there is no table to build them on), and the report says so in one line."""
    with Simulator(jobs=0, seed=3) as sim:
        loader = Loader(sim, tmp_path)
        loader.load()
    assert create_views(make_pipeline(loader.target())) == []
    with pytest.raises(ReportError, match="no jobs in 'avepoint'"):
        read_report_data(loader.duckdb_path)
    # Views that exist but hold nothing (every job deleted) still give a readable page.
    text = render_html(ReportData("avepoint", datetime.now(UTC), STALE_AFTER))
    assert "No jobs loaded yet." in text and "No failed or finished-with-exception jobs." in text


@pytest.mark.unit
def test_page_template_is_filled_once() -> None:
    """The page (package data) gets every placeholder filled; a ``$`` in the data is text, not a placeholder."""
    dataset = "cost$ ${tiles} $$"
    text = render_html(ReportData(dataset, datetime(2026, 1, 2, 3, 4, tzinfo=UTC), STALE_AFTER))
    assert text.startswith("<!DOCTYPE html>") and text.endswith("</body></html>")
    assert f"<code>{dataset}</code> · generated 2026-01-02 03:04 UTC" in text
    assert text.count("${") == 1, "only the dataset's own ${tiles} is left"
    assert "<style>" in text and 'getElementById("failures")' in text


def test_a_view_that_cannot_be_created_does_not_fail_the_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``jobs`` table of someone else's, without our columns: the load's outcome stands, a warning says why."""
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA avepoint; CREATE TABLE avepoint.jobs (id INTEGER)")
    pipeline = make_pipeline(Target(duckdb_path=str(path), pipelines_dir=str(tmp_path / "p")))
    assert refresh_views_after_load(pipeline) == []
    assert "analyst views were not created in avepoint" in caplog.text
    with pytest.raises(ReportError, match="every load creates the views"):
        read_report_data(path)


def test_tenant_column_is_grouped_on(tmp_path: Path) -> None:
    """Two tenants in one dataset, sharing an organization id: the views keep them apart."""
    shared = "0d0d0d0d-9999-4aaa-8bbb-cccccccccccc"
    tenants: dict[str, Rows] = {}
    with Simulator(jobs=400, seed=31) as north, Simulator(jobs=400, seed=32) as south:
        for name, sim in (("north", north), ("south", south)):
            added = sim.world.add_jobs(4, organization_id=shared)
            sim.world.patch_job(added[-1]["jobId"], type=1, status=3)
            loader = Loader(
                sim, tmp_path, pipeline_name=f"tenant_{name}", source_args={"tenant": name}
            )
            loader.load()
            tenants[name] = sim.world.ground_truth()
    assert not {j["jobId"] for j in tenants["north"]} & {j["jobId"] for j in tenants["south"]}
    fetch = duckdb_fetch(tmp_path / "jobs.duckdb")

    outcomes = fetch("job_outcomes_daily")
    assert next(iter(outcomes[0])) == "tenant"
    expected = {
        (tenant, *key): value["total"]
        for tenant, jobs in tenants.items()
        for key, value in expected_outcomes(jobs).items()
    }
    assert {
        (r["tenant"], r["day"], r["organization_id"], r["type"]): r["total"] for r in outcomes
    } == expected

    freshness = fetch("backup_freshness")
    assert sorted((r["tenant"], r["organization_id"]) for r in freshness) == sorted(
        (tenant, org)
        for tenant, jobs in tenants.items()
        for org in {j["organizationId"] for j in jobs}
    )
    for tenant, jobs in tenants.items():
        want = expected_freshness(jobs, datetime.now(UTC))
        assert_freshness([r for r in freshness if r["tenant"] == tenant], want, STALE_AFTER)
    for view in ("job_failures", "job_duration_percentiles"):
        assert {r["tenant"] for r in fetch(view)} == {"north", "south"}


# ------------------------------------------------------------------------------------- PostgreSQL
def test_views_match_ground_truth_in_postgres(
    postgres_server: PostgresServer,
    arranged: Arranged,
    truth: Rows,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same SQL text on PostgreSQL: same rows as the ground truth, through the same run_load."""
    psycopg2 = pytest.importorskip(
        "psycopg2", reason="dlt's postgres extra (psycopg2) is not installed"
    )
    postgres_url = postgres_server.url

    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", postgres_url)
    loader = Loader(arranged.sim, tmp_path)
    target = Target(
        destination="postgres",
        dataset_name="views_pg",  # its own: the cluster is the session's
        pipeline_name="views_pg",
        pipelines_dir=str(tmp_path),
    )
    run_load(loader.source(), target)
    run_load(loader.source(), target)  # a second load replaces the views in place

    def fetch(view: str) -> Rows:
        with psycopg2.connect(postgres_url) as con, con.cursor() as cursor:
            cursor.execute(f"SET TIME ZONE '{FAR_ZONE}'")
            cursor.execute(f'SELECT * FROM views_pg."{view}"')
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    check_all_views(fetch, truth, arranged)


# ----------------------------------------------------------------------------------------- report
def test_report_data_and_cli(
    loaded: Loader, truth: Rows, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = read_report_data(loaded.duckdb_path)
    names = {j["organizationId"]: j["organizationName"] for j in truth}
    want = expected_freshness(truth, datetime.now(UTC))
    assert {row.organization: row.stale for row in data.freshness} == {
        names[org]: value["stale"] for org, value in want.items()
    }
    assert data.failures_total == sum(1 for j in truth if j.get("status") in (4, 7))
    assert len(data.failures) == min(DEFAULT_MAX_FAILURES, data.failures_total)
    assert [f.start_time for f in data.failures] == sorted(
        (f.start_time for f in data.failures), reverse=True
    )
    window = expected_window(truth)
    assert {d.day: d.counts for d in data.days if sum(d.counts.values())} == window

    # A threshold of a year: only the organization that never backed up is still stale.
    output = tmp_path / "year.html"
    code = main(
        [
            "report",
            "--duckdb-path",
            str(loaded.duckdb_path),
            "--output",
            str(output),
            "--stale-hours",
            "8760",
        ]
    )
    assert code == 0 and output.is_file()
    assert str(output.resolve()) in capsys.readouterr().out
    stale = {
        row.organization
        for row in read_report_data(loaded.duckdb_path, stale_after_hours=8760).freshness
        if row.stale
    }
    assert stale == {names[NEVER_ORG]}

    assert main(["report", "--duckdb-path", str(tmp_path / "missing.duckdb")]) == 2
    assert "no DuckDB file" in capsys.readouterr().err
    assert main(["report", "--duckdb-path", str(loaded.duckdb_path), "--dataset", "nope"]) == 2
    assert "error: no dataset 'nope'" in capsys.readouterr().err


def expected_window(jobs: Rows) -> dict[date, dict[str, int]]:
    """Jobs per UTC day and status bucket over the report's window (the last DEFAULT_DAYS days with data)."""
    last = max(utc(j["startTime"]).date() for j in jobs)
    counts: dict[date, Counter[str]] = defaultdict(Counter)
    for job in jobs:
        day = utc(job["startTime"]).date()
        if day > last - timedelta(days=DEFAULT_DAYS):
            counts[day][BUCKETS.get(job.get("status"), "other")] += 1  # type: ignore[arg-type]
    buckets = [*BUCKETS.values(), "other"]
    return {day: {name: counter[name] for name in buckets} for day, counter in counts.items()}


def test_report_is_self_contained(loaded: Loader, tmp_path: Path) -> None:
    text = write_report(loaded.duckdb_path, tmp_path / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"\b(?:src|href)\s*=", text, re.IGNORECASE), "nothing to fetch"
    assert not re.search(r"https?://", text), "no URL at all"
    assert "<link" not in text and "@import" not in text and "url(" not in text
    for chart in ("chart-outcomes", "chart-freshness", "chart-durations"):
        assert f'id="{chart}"' in text


class DomCharts(HTMLParser):
    """The ``<rect>`` elements of each chart (by the id of their ``<svg>``), from a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.rects: dict[str, list[dict[str, str | None]]] = defaultdict(list)
        self._chart: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self._chart = dict(attrs).get("id")
        elif tag == "rect" and self._chart:
            self.rects[self._chart].append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = None


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(binary: str, *args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_report_renders_in_chromium(loaded: Loader, truth: Rows, tmp_path: Path) -> None:
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium); CI installs it")
    report = write_report(loaded.duckdb_path, tmp_path / "report.html")

    dom = run_chromium(
        binary, "--dump-dom", report.resolve().as_uri(), profile=tmp_path / "profile"
    ).stdout
    charts = DomCharts()
    charts.feed(dom)

    # Outcomes: one segment per day and status with jobs, each holding the ground truth's count.
    segments = {
        (r["data-day"], r["data-status"]): int(str(r["data-count"]))
        for r in charts.rects["chart-outcomes"]
    }
    want = {
        (day.isoformat(), status): count
        for day, counts in expected_window(truth).items()
        for status, count in counts.items()
        if count
    }
    assert segments == want and len(charts.rects["chart-outcomes"]) == len(want) > 0

    # Freshness: one bar per organization, red exactly where the ground truth says stale.
    names = {j["organizationId"]: j["organizationName"] for j in truth}
    fresh = expected_freshness(truth, datetime.now(UTC))
    bars = {r["data-organization"]: r["data-stale"] for r in charts.rects["chart-freshness"]}
    assert bars == {names[org]: str(v["stale"]).lower() for org, v in fresh.items()}

    # Durations (backups): p50, p90 and p95 for every organization with a completed backup.
    with_backups = {
        names[j["organizationId"]] for j in truth if j["type"] == 1 and j.get("status") in (3, 4, 7)
    }
    bars_by_org = Counter(r["data-organization"] for r in charts.rects["chart-durations"])
    assert bars_by_org == dict.fromkeys(with_backups, 3)

    # The table's counter line is written by the page's script: it ran.
    failures = sum(1 for j in truth if j.get("status") in (4, 7))
    shown = min(DEFAULT_MAX_FAILURES, failures)
    counter = re.search(r'<span id="failures-count">([^<]*)</span>', dom)
    assert counter is not None
    assert counter.group(1).startswith(f"Showing {shown} of {shown} rows"), counter.group(1)
    assert dom.count("<tr class=") == shown

    png = tmp_path / "report.png"
    run_chromium(
        binary,
        f"--screenshot={png}",
        "--window-size=1280,2000",
        report.resolve().as_uri(),
        profile=tmp_path / "profile",
    )
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1280, 2000)
