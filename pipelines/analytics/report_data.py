"""The report's data access: the analyst views of a DuckDB file, read once into plain Python values.

Everything the HTML report shows comes from :func:`read_report_data`, which opens the file read-only, queries
the views of :mod:`avepoint_pipelines.analytics.views` and returns a :class:`ReportData` of dataclasses, dates and
numbers. Nothing here knows about HTML or SVG (:mod:`avepoint_pipelines.analytics.report_charts` and
:mod:`avepoint_pipelines.analytics.report_page` draw from it), so the numbers can be checked on their own.

Example:
    >>> read_report_data("avepoint_demo.duckdb").totals  # doctest: +SKIP
    {'finished': 17843, 'finished_with_exception': 1342, 'failed': 931, 'in_progress': 4, 'other': 0}
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from .views import DEFAULT_STALE_AFTER_HOURS, RUN_LOG_VIEW, VIEW_NAMES

DEFAULT_DAYS = 90
DEFAULT_MAX_FAILURES = 200

#: The status columns of ``job_outcomes_daily``: the keys of :attr:`DayOutcome.counts` and of the totals.
OUTCOMES: tuple[str, ...] = (
    "finished",
    "finished_with_exception",
    "failed",
    "in_progress",
    "other",
)


class ReportError(Exception):
    """The report cannot be made from what was given (no file, no views): one line saying what to do."""


@dataclass(frozen=True)
class DayOutcome:
    """Jobs that started on one UTC day, by status (keys of :data:`OUTCOMES`)."""

    day: date
    counts: dict[str, int]


@dataclass(frozen=True)
class Duration:
    """Duration percentiles of one organization's completed jobs of one type, in hours."""

    organization: str
    type_name: str
    jobs: int
    p50: float
    p90: float
    p95: float
    max: float


@dataclass(frozen=True)
class Freshness:
    """How long ago one organization's last successful backup finished."""

    organization: str
    last_success: datetime | None
    hours_since: float | None
    had_exceptions: bool | None
    stale: bool


@dataclass(frozen=True)
class Failure:
    """A failed or finished-with-exception job."""

    job_id: str
    start_time: datetime
    organization: str
    type_name: str
    status_name: str
    failed_entity: int | None
    failed_record: int | None
    warning_record: int | None
    duration_hours: float | None


@dataclass
class ReportData:
    """What the report shows, read from the views.

    Attributes:
        dataset: The dataset the views live in.
        generated_at: When the data was read (UTC); freshness is relative to it.
        stale_after_hours: The freshness threshold applied.
        days: The charted window, one entry per day (days without jobs included, all zero).
        totals: Jobs by status over the whole history.
        durations: Every organization x job type of ``job_duration_percentiles``.
        freshness: One entry per organization.
        failures: The newest failed / finished-with-exception jobs, newest first.
        failures_total: How many there are in all.
        last_run_at: When the newest run that completed its load finished (the run log); None when
            the dataset has no run log yet.
        runs: How many runs completed their load (rows of the run log).
    """

    dataset: str
    generated_at: datetime
    stale_after_hours: float
    days: list[DayOutcome] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    durations: list[Duration] = field(default_factory=list)
    freshness: list[Freshness] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    failures_total: int = 0
    last_run_at: datetime | None = None
    runs: int = 0

    @property
    def charted_type(self) -> str | None:
        """The job type the durations chart shows: backups when there are any, else the most common type."""
        jobs: dict[str, int] = {}
        for row in self.durations:
            jobs[row.type_name] = jobs.get(row.type_name, 0) + row.jobs
        if not jobs:
            return None
        return "backup" if "backup" in jobs else max(jobs, key=lambda name: jobs[name])


def read_report_data(
    duckdb_path: str | os.PathLike[str],
    dataset: str = "avepoint",
    *,
    stale_after_hours: float | None = None,
    days: int = DEFAULT_DAYS,
    max_failures: int = DEFAULT_MAX_FAILURES,
) -> ReportData:
    """Read the views of ``dataset`` from a DuckDB file (read-only).

    Args:
        duckdb_path: The DuckDB file the pipeline loads into.
        dataset: The dataset (schema) holding ``jobs`` and the views.
        stale_after_hours: Freshness threshold; default: the one the views were created with.
        days: How many days the outcomes chart covers, up to the newest day with jobs.
        max_failures: How many of the newest failures the table lists.

    Raises:
        ReportError: The file or the views are missing, or an argument is out of range.
    """
    _check_arguments(stale_after_hours, days, max_failures)
    path = Path(duckdb_path)
    if not path.is_file():
        raise ReportError(
            f"no DuckDB file at {path}: run `avepoint-dynamics load` first, or pass --duckdb-path"
        )
    with duckdb.connect(str(path), read_only=True) as con:
        # Show UTC whatever the machine's zone is: the views' days are UTC days too.
        con.execute("SET TimeZone = 'UTC'")
        views = _Views(con, dataset, path)
        data = ReportData(
            dataset=dataset,
            generated_at=datetime.now(UTC),
            stale_after_hours=stale_after_hours or DEFAULT_STALE_AFTER_HOURS,
        )
        data.days, data.totals = _outcomes(views, days)
        data.durations = _durations(views)
        data.freshness, shown_threshold = _freshness(views, stale_after_hours)
        if shown_threshold is not None:
            data.stale_after_hours = shown_threshold
        data.failures, data.failures_total = _failures(views, max_failures)
        data.last_run_at, data.runs = _run_log(con, dataset)
    return data


def _check_arguments(stale_after_hours: float | None, days: int, max_failures: int) -> None:
    if stale_after_hours is not None and not (
        math.isfinite(stale_after_hours) and stale_after_hours > 0
    ):
        raise ReportError(f"--stale-hours must be a positive number, not {stale_after_hours}")
    if days < 1:
        raise ReportError(f"--days must be at least 1, not {days}")
    if max_failures < 0:
        raise ReportError(f"max_failures must be 0 or more, not {max_failures}")


def _outcomes(views: _Views, days: int) -> tuple[list[DayOutcome], dict[str, int]]:
    """The outcomes per day of the last ``days`` days with jobs, and the totals of all days."""
    counts = ", ".join(f"SUM({name})" for name in OUTCOMES)
    daily = views.query(
        f"SELECT day, {counts} FROM {{job_outcomes_daily}} "
        f"WHERE day > (SELECT MAX(day) FROM {{job_outcomes_daily}}) - {int(days)} "
        "GROUP BY day ORDER BY day"
    )
    total_row = views.query(f"SELECT {counts} FROM {{job_outcomes_daily}}")[0]
    totals = {name: int(value or 0) for name, value in zip(OUTCOMES, total_row, strict=True)}
    return _every_day(daily), totals


def _durations(views: _Views) -> list[Duration]:
    org = views.organization_label
    return [
        Duration(str(row[0]), str(row[1]), int(row[2]), *map(float, row[3:]))
        for row in views.query(
            f"SELECT {org('job_duration_percentiles')}, COALESCE(type_name, 'no type'), jobs, "
            "p50_hours, p90_hours, p95_hours, max_hours FROM {job_duration_percentiles} "
            "ORDER BY 1, type"
        )
    ]


def _freshness(
    views: _Views, stale_after_hours: float | None
) -> tuple[list[Freshness], float | None]:
    """Each organization's last good backup; and the views' own threshold when none was given."""
    org = views.organization_label
    freshness = views.query(
        f"SELECT {org('backup_freshness')}, last_successful_backup_at, hours_since_success, "
        "last_success_had_exceptions, stale, stale_after_hours FROM {backup_freshness} "
        "ORDER BY 1"
    )
    shown = float(freshness[0][5]) if stale_after_hours is None and freshness else None
    rows = [
        Freshness(
            organization=str(label),
            last_success=last,
            hours_since=hours,
            had_exceptions=had_exceptions,
            # An explicit threshold overrides the one written into the view.
            stale=bool(stale)
            if stale_after_hours is None
            else hours is None or hours > stale_after_hours,
        )
        for label, last, hours, had_exceptions, stale, _ in freshness
    ]
    return rows, shown


def _failures(views: _Views, max_failures: int) -> tuple[list[Failure], int]:
    """The newest ``max_failures`` failures, and how many there are in all."""
    org = views.organization_label
    failures = [
        Failure(*row)
        for row in views.query(
            f"SELECT job_id, start_time, {org('job_failures')}, COALESCE(type_name, ''), "
            "COALESCE(status_name, ''), failed_entity, failed_record, warning_record, "
            "duration_hours FROM {job_failures} "
            f"ORDER BY start_time DESC, job_id DESC LIMIT {int(max_failures)}"
        )
    ]
    return failures, int(views.query("SELECT COUNT(*) FROM {job_failures}")[0][0])


def _run_log(con: duckdb.DuckDBPyConnection, dataset: str) -> tuple[datetime | None, int]:
    """The newest completed run's finish and the number of runs; (None, 0) without a run log."""
    try:
        last, runs = con.execute(
            f"SELECT max(finished_at), count(*) FROM {_quote(dataset)}.{RUN_LOG_VIEW}"
        ).fetchall()[0]
    except duckdb.CatalogException:  # loaded before the run log existed
        return None, 0
    return last, int(runs)


class _Views:
    """Queries against the views of one dataset, with a clear error when they are not there."""

    def __init__(self, con: duckdb.DuckDBPyConnection, dataset: str, path: Path) -> None:
        self.con = con
        self.dataset = dataset
        self.path = path
        schema = _quote(dataset)
        self.names = {name: f"{schema}.{_quote(name)}" for name in VIEW_NAMES}
        self.tenant = "tenant" in self._columns("backup_freshness")

    def _columns(self, view: str) -> set[str]:
        try:
            cursor = self.con.execute(f"SELECT * FROM {self.names[view]} LIMIT 0")
        except duckdb.CatalogException:
            raise ReportError(self._missing(view)) from None
        return {column[0] for column in cursor.description or ()}

    def _missing(self, view: str) -> str:
        """Why a view is not there: a wrong dataset, nothing loaded yet, or views never created."""
        tables = {
            row[0]
            for row in self.con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                [self.dataset],
            ).fetchall()
        }
        if not tables:
            return f"no dataset {self.dataset!r} in {self.path}: pass the --dataset the pipeline loads into"
        if "jobs" not in tables:
            return f"no jobs in {self.dataset!r} of {self.path} yet: nothing to report"
        return (
            f"no view {self.dataset}.{view} in {self.path}: every load creates the views, so run "
            "`avepoint-dynamics load` once"
        )

    def organization_label(self, view: str) -> str:
        """SQL for a readable organization name (``tenant / name`` when several tenants share the dataset)."""
        name = "COALESCE(organization_name, organization_id, '(no organization)')"
        return f"COALESCE(tenant, '?') || ' / ' || {name}" if self.tenant else name

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, whose ``{view}`` placeholders name the dataset's views, quoted."""
        return self.con.execute(sql.format(**self.names)).fetchall()


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _every_day(rows: Sequence[tuple[Any, ...]]) -> list[DayOutcome]:
    """One entry per day from the first to the last row, so gaps show as gaps and not as closer bars."""
    if not rows:
        return []
    found = {row[0]: row[1:] for row in rows}
    first, last = rows[0][0], rows[-1][0]
    days = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        values = found.get(day, (0,) * len(OUTCOMES))
        days.append(
            DayOutcome(day, {name: int(v or 0) for name, v in zip(OUTCOMES, values, strict=True)})
        )
    return days
