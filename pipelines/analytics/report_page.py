"""The report's page: the charts and tables of a :class:`ReportData` filled into the HTML template.

The page itself (markup, styles and the few lines of vanilla JavaScript that sort and filter the failures
table) is package data, ``templates/report.html``, read with :mod:`importlib.resources` so that it travels
with any install. Its ``${name}`` placeholders are filled by :class:`string.Template`: the standard library
is enough for a dozen values, and the report keeps no dependency a browser-less machine would not have.
The script only sorts and filters: with JavaScript off the report reads the same.

Example:
    >>> render_html(read_report_data("avepoint_dynamics.duckdb"))[:15]  # doctest: +SKIP
    '<!DOCTYPE html>'
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from string import Template

from .report_charts import (
    PERCENTILES,
    STATUSES,
    durations_chart,
    escape,
    freshness_chart,
    legend,
    outcomes_chart,
)
from .report_data import Duration, ReportData

#: The page, relative to this package (declared as package data in pyproject.toml).
TEMPLATE = "templates/report.html"


@functools.cache
def _template() -> Template:
    # This module's package, under whatever name it was installed (``avepoint_pipelines``).
    package = __name__.rpartition(".")[0]
    return Template(resources.files(package).joinpath(TEMPLATE).read_text(encoding="utf-8"))


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document."""
    charted = data.charted_type
    window = (
        f"{data.days[0].day:%Y-%m-%d} to {data.days[-1].day:%Y-%m-%d} (UTC)"
        if data.days
        else "no jobs"
    )
    return _template().substitute(
        dataset=escape(data.dataset),
        generated_at=f"{data.generated_at:%Y-%m-%d %H:%M}",
        tiles=_tiles(data),
        window=window,
        outcomes_legend=legend([(label, colour) for _, label, colour in STATUSES]),
        outcomes_chart=outcomes_chart(data.days),
        stale_after_hours=f"{data.stale_after_hours:g}",
        freshness_chart=freshness_chart(data.freshness, data.stale_after_hours),
        charted_type=escape(charted or "jobs"),
        durations_legend=legend(
            [(f"{name} (median)" if name == "p50" else name, c) for name, c in PERCENTILES]
        ),
        durations_chart=durations_chart(
            [row for row in data.durations if row.type_name == charted]
        ),
        durations_table=_durations_table(data.durations),
        failures_table=_failures_table(data),
    )


def _tiles(data: ReportData) -> str:
    """The headline numbers, one tile a line."""
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
    if data.last_run_at is not None:
        tiles.append(
            (
                f"Last completed load (UTC; {data.runs:,} in the run log)",
                f"{data.last_run_at:%Y-%m-%d %H:%M}",
            )
        )
    return "\n".join(
        f'<div class="tile"><div class="value">{escape(value)}</div><div class="label">{escape(label)}</div></div>'
        for label, value in tiles
    )


def _durations_table(rows: Sequence[Duration]) -> str:
    """Every organization and job type, folded away: the chart shows one type only."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{escape(r.organization)}</td><td>{escape(r.type_name)}</td><td class='num'>{r.jobs:,}</td>"
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
    """The newest failures, with the filter box the template's script drives."""
    if not data.failures:
        return "<p class='note'>No failed or finished-with-exception jobs.</p>"

    def number(value: float | int | None, digits: int = 0) -> str:
        # The raw value in data-value, so that the script sorts numbers as numbers and blanks first.
        if value is None:
            return "<td class='num' data-value=''></td>"
        return f"<td class='num' data-value='{value}'>{value:,.{digits}f}</td>"

    rows = "".join(
        f"<tr class='{'failed' if f.status_name == 'failed' else 'exception'}'>"
        f"<td data-value='{f.start_time.isoformat()}'>{f.start_time:%Y-%m-%d %H:%M}</td>"
        f"<td>{escape(f.organization)}</td><td>{escape(f.type_name)}</td><td>{escape(f.status_name)}</td>"
        f"{number(f.failed_entity)}{number(f.failed_record)}{number(f.warning_record)}"
        f"{number(f.duration_hours, 2)}<td><code>{escape(f.job_id)}</code></td></tr>"
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
