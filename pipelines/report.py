"""``avepoint-dynamics report``: one self-contained HTML file with charts of the analyst views.

The file needs nothing but a browser: the charts are SVG drawn here in Python, the styles are inline, and a
few lines of vanilla JavaScript make the failures table sortable and filterable. No CDN, no fonts, no
requests: it can be mailed, attached to a ticket or opened on an air-gapped machine.

It reads the views (:mod:`avepoint_pipelines.views`) from a DuckDB file, read-only.

Example:
    >>> write_report("avepoint_dynamics.duckdb", "report.html")  # doctest: +SKIP
    PosixPath('report.html')
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from .views import DEFAULT_STALE_AFTER_HOURS, VIEW_NAMES

DEFAULT_REPORT = "avepoint_report.html"
DEFAULT_DAYS = 90
DEFAULT_MAX_FAILURES = 200

#: (column of ``job_outcomes_daily``, legend label, colour), bottom of the stack first.
STATUSES: tuple[tuple[str, str, str], ...] = (
    ("finished", "Finished", "#2e7d32"),
    ("finished_with_exception", "Finished with exception", "#f2a900"),
    ("failed", "Failed", "#c62828"),
    ("in_progress", "In progress", "#1565c0"),
    ("other", "Other status", "#9e9e9e"),
)
_FRESH, _STALE, _THRESHOLD = "#2e7d32", "#c62828", "#37474f"
_PERCENTILES = (("p50", "#90caf9"), ("p90", "#1e88e5"), ("p95", "#0d47a1"))


class ReportError(Exception):
    """The report cannot be made from what was given (no file, no views): one line saying what to do."""


@dataclass(frozen=True)
class DayOutcome:
    """Jobs that started on one UTC day, by status (keys of :data:`STATUSES`)."""

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
    if stale_after_hours is not None and not (
        math.isfinite(stale_after_hours) and stale_after_hours > 0
    ):
        raise ReportError(f"--stale-hours must be a positive number, not {stale_after_hours}")
    if days < 1:
        raise ReportError(f"--days must be at least 1, not {days}")
    if max_failures < 0:
        raise ReportError(f"max_failures must be 0 or more, not {max_failures}")
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
        counts = ", ".join(f"SUM({name})" for name, _, _ in STATUSES)
        daily = views.query(
            f"SELECT day, {counts} FROM {{job_outcomes_daily}} "
            f"WHERE day > (SELECT MAX(day) FROM {{job_outcomes_daily}}) - {int(days)} "
            "GROUP BY day ORDER BY day"
        )
        data.days = _every_day(daily)
        total_row = views.query(f"SELECT {counts} FROM {{job_outcomes_daily}}")[0]
        data.totals = {
            name: int(value or 0) for (name, _, _), value in zip(STATUSES, total_row, strict=True)
        }

        org = views.organization_label
        data.durations = [
            Duration(str(row[0]), str(row[1]), int(row[2]), *map(float, row[3:]))
            for row in views.query(
                f"SELECT {org('job_duration_percentiles')}, COALESCE(type_name, 'no type'), jobs, "
                "p50_hours, p90_hours, p95_hours, max_hours FROM {job_duration_percentiles} "
                "ORDER BY 1, type"
            )
        ]
        freshness = views.query(
            f"SELECT {org('backup_freshness')}, last_successful_backup_at, hours_since_success, "
            "last_success_had_exceptions, stale, stale_after_hours FROM {backup_freshness} "
            "ORDER BY 1"
        )
        if stale_after_hours is None and freshness:
            data.stale_after_hours = float(freshness[0][5])
        data.freshness = [
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
        data.failures = [
            Failure(*row)
            for row in views.query(
                f"SELECT job_id, start_time, {org('job_failures')}, COALESCE(type_name, ''), "
                "COALESCE(status_name, ''), failed_entity, failed_record, warning_record, "
                "duration_hours FROM {job_failures} "
                f"ORDER BY start_time DESC, job_id DESC LIMIT {int(max_failures)}"
            )
        ]
        data.failures_total = int(views.query("SELECT COUNT(*) FROM {job_failures}")[0][0])
    return data


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
        values = found.get(day, (0,) * len(STATUSES))
        days.append(
            DayOutcome(
                day, {name: int(v or 0) for (name, _, _), v in zip(STATUSES, values, strict=True)}
            )
        )
    return days


def write_report(
    duckdb_path: str | os.PathLike[str],
    output: str | os.PathLike[str] = DEFAULT_REPORT,
    dataset: str = "avepoint",
    *,
    stale_after_hours: float | None = None,
    days: int = DEFAULT_DAYS,
    max_failures: int = DEFAULT_MAX_FAILURES,
) -> Path:
    """Read the views and write the HTML report; see :func:`read_report_data` for the arguments.

    Returns:
        The path of the report.
    """
    data = read_report_data(
        duckdb_path,
        dataset,
        stale_after_hours=stale_after_hours,
        days=days,
        max_failures=max_failures,
    )
    path = Path(output)
    path.write_text(render_html(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- rendering
_WIDTH = 1180


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document."""
    completed = sum(
        data.totals.get(k, 0) for k in ("finished", "failed", "finished_with_exception")
    )
    rate = f"{data.totals.get('finished', 0) / completed:.1%}" if completed else "n/a"
    stale = sum(1 for row in data.freshness if row.stale)
    tiles = [
        ("Jobs loaded", f"{sum(data.totals.values()):,}"),
        ("Success rate (finished / completed)", rate),
        ("Failed or with exception", f"{data.failures_total:,}"),
        (
            f"Organizations without a successful backup in {data.stale_after_hours:g} h",
            f"{stale} of {len(data.freshness)}",
        ),
    ]
    charted = data.charted_type
    window = (
        f"{data.days[0].day:%Y-%m-%d} to {data.days[-1].day:%Y-%m-%d} (UTC)"
        if data.days
        else "no jobs"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>AvePoint Dynamics 365 backup jobs report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>AvePoint Cloud Backup for Dynamics 365: job health</h1>",
        f"<p class='meta'>Dataset <code>{_e(data.dataset)}</code> · generated "
        f"{data.generated_at:%Y-%m-%d %H:%M} UTC</p></header>",
        '<section class="tiles">',
        *(
            f'<div class="tile"><div class="value">{_e(value)}</div><div class="label">{_e(label)}</div></div>'
            for label, value in tiles
        ),
        "</section>",
        f"<section><h2>Job outcomes per day</h2><p class='note'>Jobs by the UTC day they started, {window}.</p>",
        _legend([(label, colour) for _, label, colour in STATUSES]),
        _outcomes_svg(data.days),
        "</section>",
        "<section><h2>Backup freshness per organization</h2>",
        f"<p class='note'>Hours since the last successful backup (finished, or finished with exception) "
        f"finished. Red: more than {data.stale_after_hours:g} h, or never.</p>",
        _freshness_svg(data.freshness, data.stale_after_hours),
        "</section>",
        f"<section><h2>Durations of {_e(charted or 'jobs')} jobs per organization</h2>",
        "<p class='note'>Completed jobs (finished, failed, finished with exception), hours. "
        "The thin mark is the longest.</p>",
        _legend([(f"{name} (median)" if name == "p50" else name, c) for name, c in _PERCENTILES]),
        _durations_svg([row for row in data.durations if row.type_name == charted]),
        _durations_table(data.durations),
        "</section>",
        "<section><h2>Failed and finished-with-exception jobs</h2>",
        _failures_table(data),
        "</section>",
        f"<script>{_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _hours(value: float | None) -> str:
    if value is None:
        return "never"
    if value >= 48:
        return f"{value:,.0f} h ({value / 24:.1f} d)"
    return f"{value:.1f} h" if value >= 1 else f"{value * 60:.0f} min"


def _nice_step(top: float, ticks: int = 5) -> float:
    """A round grid step (1, 2 or 5 times a power of ten) giving about ``ticks`` lines up to ``top``."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<ul class="legend">'
        + "".join(
            f'<li><span class="swatch" style="background:{colour}"></span>{_e(label)}</li>'
            for label, colour in items
        )
        + "</ul>"
    )


def _empty_svg(chart_id: str, message: str) -> str:
    return (
        f'<svg id="{chart_id}" class="chart" width="{_WIDTH}" height="60" role="img">'
        f'<text x="10" y="35" class="empty">{_e(message)}</text></svg>'
    )


def _outcomes_svg(days: Sequence[DayOutcome]) -> str:
    """Stacked bars: one per day, one segment per status with jobs."""
    if not days:
        return _empty_svg("chart-outcomes", "No jobs loaded yet.")
    height, left, right, top, bottom = 300, 56, 10, 12, 34
    plot_w, plot_h = _WIDTH - left - right, height - top - bottom
    peak = max(sum(d.counts.values()) for d in days)
    step = _nice_step(peak)
    y_max = max(step, math.ceil(peak / step) * step)
    band = plot_w / len(days)
    bar_w = max(1.0, band * 0.8)
    out = [
        f'<svg id="chart-outcomes" class="chart" width="{_WIDTH}" height="{height}" role="img" '
        'aria-label="Jobs per day by status">'
    ]
    tick = 0.0
    while tick <= y_max + 1e-9:
        y = top + plot_h - tick / y_max * plot_h
        out.append(
            f'<line class="grid" x1="{left}" x2="{_WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
        tick += step
    label_every = max(1, math.ceil(len(days) / 12))
    for i, outcome in enumerate(days):
        x = left + i * band + (band - bar_w) / 2
        base = float(top + plot_h)
        for name, label, colour in STATUSES:
            count = outcome.counts.get(name, 0)
            if not count:
                continue
            h = count / y_max * plot_h
            base -= h
            out.append(
                f'<rect class="bar" x="{x:.2f}" y="{base:.2f}" width="{bar_w:.2f}" height="{h:.2f}" '
                f'fill="{colour}" data-day="{outcome.day.isoformat()}" data-status="{name}" '
                f'data-count="{count}"><title>{outcome.day:%Y-%m-%d}: {count} {_e(label.lower())}</title></rect>'
            )
        if i % label_every == 0:
            out.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{outcome.day:%m-%d}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def _freshness_svg(rows: Sequence[Freshness], threshold: float) -> str:
    """Horizontal bars of hours since the last success, the threshold as a dashed line, stale ones red."""
    if not rows:
        return _empty_svg("chart-freshness", "No organizations yet.")
    row_h, left, right, top = 30, 230, 150, 24
    height = top + row_h * len(rows) + 10
    plot_w = _WIDTH - left - right
    known = [row.hours_since for row in rows if row.hours_since is not None]
    scale_max = max([threshold * 1.25, *(h * 1.05 for h in known)])
    out = [
        f'<svg id="chart-freshness" class="chart" width="{_WIDTH}" height="{height}" role="img" '
        'aria-label="Hours since the last successful backup per organization">'
    ]
    for i, row in enumerate(rows):
        y = top + i * row_h
        hours = row.hours_since
        # An organization that never backed up gets a full-width bar: it is the most urgent one.
        width = plot_w if hours is None else max(2.0, max(hours, 0.0) / scale_max * plot_w)
        colour = _STALE if row.stale else _FRESH
        note = " (with exceptions)" if row.had_exceptions else ""
        when = (
            f"{row.last_success:%Y-%m-%d %H:%M} UTC" if row.last_success else "no successful backup"
        )
        out.append(
            f'<text class="label" x="{left - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end">'
            f"{_e(_shorten(row.organization, 32))}</text>"
            f'<rect class="bar{" stale" if row.stale else ""}" x="{left}" y="{y + 5}" width="{width:.2f}" '
            f'height="{row_h - 10}" fill="{colour}" data-organization="{_e(row.organization)}" '
            f'data-stale="{str(row.stale).lower()}" data-hours="{"" if hours is None else f"{hours:.4f}"}">'
            f"<title>{_e(row.organization)}: last success {_e(when)}{note}</title></rect>"
            f'<text class="value" x="{left + width + 6:.1f}" y="{y + row_h / 2 + 4:.1f}">'
            f"{_e(_hours(hours))}{' ⚠' if row.stale else ''}</text>"
        )
    x = left + threshold / scale_max * plot_w
    out.append(
        f'<line class="threshold" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{height - 6}" '
        f'stroke="{_THRESHOLD}"/>'
        f'<text class="axis" x="{x:.1f}" y="{top - 10}" text-anchor="middle">'
        f"stale after {threshold:g} h</text></svg>"
    )
    return "".join(out)


def _durations_svg(rows: Sequence[Duration]) -> str:
    """Per organization, three thin bars (p50, p90, p95) and a mark at the longest job."""
    if not rows:
        return _empty_svg("chart-durations", "No completed jobs yet.")
    bar_h, row_h, left, right, top = 7, 34, 230, 170, 20
    height = top + row_h * len(rows) + 24
    plot_w = _WIDTH - left - right
    scale_max = max(row.max for row in rows) or 1.0
    out = [
        f'<svg id="chart-durations" class="chart" width="{_WIDTH}" height="{height}" role="img" '
        'aria-label="Duration percentiles per organization">'
    ]
    step = _nice_step(scale_max)
    tick = 0.0
    while tick <= scale_max + 1e-9:
        x = left + tick / scale_max * plot_w
        out.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{height - 20}"/>'
            f'<text class="axis" x="{x:.1f}" y="{height - 6}" text-anchor="middle">{tick:g} h</text>'
        )
        tick += step
    for i, row in enumerate(rows):
        y = top + i * row_h
        out.append(
            f'<text class="label" x="{left - 8}" y="{y + row_h / 2 + 2:.1f}" text-anchor="end">'
            f"{_e(_shorten(row.organization, 32))}</text>"
        )
        for j, (name, colour) in enumerate(_PERCENTILES):
            value = getattr(row, name)
            out.append(
                f'<rect class="bar" x="{left}" y="{y + 4 + j * (bar_h + 1)}" '
                f'width="{max(1.0, value / scale_max * plot_w):.2f}" height="{bar_h}" fill="{colour}" '
                f'data-organization="{_e(row.organization)}" data-percentile="{name}" data-hours="{value:.4f}">'
                f"<title>{_e(row.organization)} {name}: {_e(_hours(value))}</title></rect>"
            )
        x_max = left + row.max / scale_max * plot_w
        out.append(
            f'<line class="max" x1="{x_max:.1f}" x2="{x_max:.1f}" y1="{y + 2}" y2="{y + 4 + 3 * (bar_h + 1)}"/>'
            f'<text class="value" x="{min(x_max, left + plot_w) + 6:.1f}" y="{y + row_h / 2 + 2:.1f}">'
            f"median {_e(_hours(row.p50))} · max {_e(_hours(row.max))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _durations_table(rows: Sequence[Duration]) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{_e(r.organization)}</td><td>{_e(r.type_name)}</td><td class='num'>{r.jobs:,}</td>"
        + "".join(f"<td class='num'>{v:.2f}</td>" for v in (r.p50, r.p90, r.p95, r.max))
        + "</tr>"
        for r in rows
    )
    return (
        "<details><summary>Every organization and job type</summary>"
        '<table class="data"><thead><tr><th>Organization</th><th>Type</th><th>Jobs</th>'
        "<th>p50 h</th><th>p90 h</th><th>p95 h</th><th>max h</th></tr></thead>"
        f"<tbody>{body}</tbody></table></details>"
    )


def _failures_table(data: ReportData) -> str:
    if not data.failures:
        return "<p class='note'>No failed or finished-with-exception jobs.</p>"

    def number(value: float | int | None, digits: int = 0) -> str:
        if value is None:
            return "<td class='num' data-value=''></td>"
        return f"<td class='num' data-value='{value}'>{value:,.{digits}f}</td>"

    rows = "".join(
        f"<tr class='{'failed' if f.status_name == 'failed' else 'exception'}'>"
        f"<td data-value='{f.start_time.isoformat()}'>{f.start_time:%Y-%m-%d %H:%M}</td>"
        f"<td>{_e(f.organization)}</td><td>{_e(f.type_name)}</td><td>{_e(f.status_name)}</td>"
        f"{number(f.failed_entity)}{number(f.failed_record)}{number(f.warning_record)}"
        f"{number(f.duration_hours, 2)}<td><code>{_e(f.job_id)}</code></td></tr>"
        for f in data.failures
    )
    return (
        '<p class="controls"><input id="failures-filter" type="search" '
        'placeholder="Filter (organization, type, status, job id)" aria-label="Filter failures"> '
        '<span id="failures-count"></span></p>'
        f'<table id="failures" class="data" data-total="{data.failures_total}"><thead><tr>'
        "<th>Started (UTC)</th><th>Organization</th><th>Type</th><th>Status</th>"
        "<th data-sort='num'>Failed entities</th><th data-sort='num'>Failed records</th>"
        "<th data-sort='num'>Warning records</th><th data-sort='num'>Hours</th><th>Job</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


_CSS = """
body{font-family:"Liberation Sans",Arial,Helvetica,sans-serif;margin:24px auto;max-width:1200px;color:#212121;
background:#fafafa}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 6px}
.meta,.note{color:#616161;margin:2px 0 10px;font-size:13px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:14px 10px;margin:16px 0}
.tiles{display:flex;gap:12px;background:none;border:none;padding:0}
.tile{flex:1;background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px}
.tile .value{font-size:26px;font-weight:bold}.tile .label{color:#616161;font-size:13px}
.legend{list-style:none;padding:0;margin:0 0 6px;display:flex;gap:16px;font-size:13px}
.swatch{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px;border-radius:2px}
.chart text{font-size:12px;fill:#424242}.chart .label{font-size:13px}.chart .empty{fill:#9e9e9e}
.chart .grid{stroke:#eeeeee}.chart .threshold{stroke-dasharray:6 4;stroke-width:2}
.chart .max{stroke:#212121;stroke-width:2}.chart rect.bar:hover{opacity:.8}
table.data{border-collapse:collapse;width:100%;font-size:13px;margin-top:8px}
table.data th,table.data td{border-bottom:1px solid #eeeeee;padding:4px 6px;text-align:left}
table.data th{background:#f5f5f5;cursor:pointer;user-select:none}
table.data td.num{text-align:right}tr.failed td:nth-child(4){color:#c62828;font-weight:bold}
tr.exception td:nth-child(4){color:#a86f00}
.controls input{width:320px;padding:4px}#failures-count{color:#616161;font-size:13px;margin-left:8px}
"""

# Sorting and filtering only: the report reads fine with JavaScript off.
_JS = """
(function () {
  var table = document.getElementById("failures");
  if (!table) { return; }
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var filter = document.getElementById("failures-filter");
  var count = document.getElementById("failures-count");
  var total = Number(table.getAttribute("data-total"));
  function show() {
    var text = filter.value.toLowerCase(), shown = 0;
    rows.forEach(function (row) {
      var match = row.textContent.toLowerCase().indexOf(text) >= 0;
      row.hidden = !match;
      if (match) { shown += 1; }
    });
    count.textContent = "Showing " + shown + " of " + rows.length + " rows" +
      (total > rows.length ? " (the newest " + rows.length + " of " + total + ")" : "");
  }
  var order = {};
  table.tHead.addEventListener("click", function (event) {
    var th = event.target.closest("th");
    if (!th) { return; }
    var i = th.cellIndex, numeric = th.getAttribute("data-sort") === "num";
    order[i] = !order[i];
    function key(row) {
      var cell = row.cells[i], value = cell.getAttribute("data-value");
      value = value === null ? cell.textContent : value;
      return numeric ? (value === "" ? -Infinity : Number(value)) : value.toLowerCase();
    }
    rows.sort(function (a, b) {
      var ka = key(a), kb = key(b);
      return (ka < kb ? -1 : ka > kb ? 1 : 0) * (order[i] ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
  filter.addEventListener("input", show);
  show();
})();
"""
