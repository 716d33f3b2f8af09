"""The report's charts: inline SVG drawn in Python from :mod:`avepoint_pipelines.analytics.report_data` values.

Drawing here rather than with a charting library in the browser keeps the report one file that needs no
script from anywhere: each function returns one ``<svg>`` element (or a legend) as a string, with every
value escaped. Bars carry ``data-*`` attributes so that tests can read back what was drawn.

Example:
    >>> outcomes_chart(read_report_data("avepoint_dynamics.duckdb").days)  # doctest: +SKIP
    '<svg id="chart-outcomes" class="chart" width="1180" height="300" ...'
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from .report_data import OUTCOMES, DayOutcome, Duration, Freshness

#: The width of every chart, in pixels: the page is 1200 wide.
WIDTH = 1180

_STATUS_LOOK: dict[str, tuple[str, str]] = {
    "finished": ("Finished", "#2e7d32"),
    "finished_with_exception": ("Finished with exception", "#f2a900"),
    "failed": ("Failed", "#c62828"),
    "in_progress": ("In progress", "#1565c0"),
    "other": ("Other status", "#9e9e9e"),
}
#: (status of :data:`OUTCOMES`, legend label, colour), bottom of the stack first.
STATUSES: tuple[tuple[str, str, str], ...] = tuple((name, *_STATUS_LOOK[name]) for name in OUTCOMES)
#: The percentiles of the durations chart (attributes of :class:`Duration`) and their colours.
PERCENTILES: tuple[tuple[str, str], ...] = (
    ("p50", "#90caf9"),
    ("p90", "#1e88e5"),
    ("p95", "#0d47a1"),
)
_FRESH, _STALE, _THRESHOLD = "#2e7d32", "#c62828", "#37474f"


def escape(value: object) -> str:
    """``value`` as text safe inside an HTML element or a quoted attribute."""
    return html.escape(str(value), quote=True)


def format_hours(value: float | None) -> str:
    """A duration for people: minutes under an hour, days too from two days on, ``never`` for none."""
    if value is None:
        return "never"
    if value >= 48:
        return f"{value:,.0f} h ({value / 24:.1f} d)"
    return f"{value:.1f} h" if value >= 1 else f"{value * 60:.0f} min"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, so long names do not run into the bars."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _nice_step(top: float, ticks: int = 5) -> float:
    """A round grid step (1, 2 or 5 times a power of ten) giving about ``ticks`` lines up to ``top``."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def legend(items: Sequence[tuple[str, str]]) -> str:
    """A row of colour swatches, one per ``(label, colour)``."""
    return (
        '<ul class="legend">'
        + "".join(
            f'<li><span class="swatch" style="background:{colour}"></span>{escape(label)}</li>'
            for label, colour in items
        )
        + "</ul>"
    )


def _empty_chart(chart_id: str, message: str) -> str:
    return (
        f'<svg id="{chart_id}" class="chart" width="{WIDTH}" height="60" role="img">'
        f'<text x="10" y="35" class="empty">{escape(message)}</text></svg>'
    )


def outcomes_chart(days: Sequence[DayOutcome]) -> str:
    """Stacked bars: one per day, one segment per status with jobs."""
    if not days:
        return _empty_chart("chart-outcomes", "No jobs loaded yet.")
    height, left, right, top, bottom = 300, 56, 10, 12, 34
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    peak = max(sum(d.counts.values()) for d in days)
    step = _nice_step(peak)
    y_max = max(step, math.ceil(peak / step) * step)
    band = plot_w / len(days)
    bar_w = max(1.0, band * 0.8)
    out = [
        f'<svg id="chart-outcomes" class="chart" width="{WIDTH}" height="{height}" role="img" '
        'aria-label="Jobs per day by status">'
    ]
    tick = 0.0
    while tick <= y_max + 1e-9:
        y = top + plot_h - tick / y_max * plot_h
        out.append(
            f'<line class="grid" x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
        tick += step
    # About a dozen day labels whatever the window: one per bar would overlap from a few weeks on.
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
                f'data-count="{count}"><title>{outcome.day:%Y-%m-%d}: {count} {escape(label.lower())}</title></rect>'
            )
        if i % label_every == 0:
            out.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{outcome.day:%m-%d}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def freshness_chart(rows: Sequence[Freshness], threshold: float) -> str:
    """Horizontal bars of hours since the last success, the threshold as a dashed line, stale ones red."""
    if not rows:
        return _empty_chart("chart-freshness", "No organizations yet.")
    row_h, left, right, top = 30, 230, 150, 24
    height = top + row_h * len(rows) + 10
    plot_w = WIDTH - left - right
    known = [row.hours_since for row in rows if row.hours_since is not None]
    # The threshold line always shows, with room to its right for a bar just past it.
    scale_max = max([threshold * 1.25, *(h * 1.05 for h in known)])
    out = [
        f'<svg id="chart-freshness" class="chart" width="{WIDTH}" height="{height}" role="img" '
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
            f"{escape(shorten(row.organization, 32))}</text>"
            f'<rect class="bar{" stale" if row.stale else ""}" x="{left}" y="{y + 5}" width="{width:.2f}" '
            f'height="{row_h - 10}" fill="{colour}" data-organization="{escape(row.organization)}" '
            f'data-stale="{str(row.stale).lower()}" data-hours="{"" if hours is None else f"{hours:.4f}"}">'
            f"<title>{escape(row.organization)}: last success {escape(when)}{note}</title></rect>"
            f'<text class="value" x="{left + width + 6:.1f}" y="{y + row_h / 2 + 4:.1f}">'
            f"{escape(format_hours(hours))}{' ⚠' if row.stale else ''}</text>"
        )
    x = left + threshold / scale_max * plot_w
    out.append(
        f'<line class="threshold" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{height - 6}" '
        f'stroke="{_THRESHOLD}"/>'
        f'<text class="axis" x="{x:.1f}" y="{top - 10}" text-anchor="middle">'
        f"stale after {threshold:g} h</text></svg>"
    )
    return "".join(out)


def durations_chart(rows: Sequence[Duration]) -> str:
    """Per organization, three thin bars (p50, p90, p95) and a mark at the longest job."""
    if not rows:
        return _empty_chart("chart-durations", "No completed jobs yet.")
    bar_h, row_h, left, right, top = 7, 34, 230, 170, 20
    height = top + row_h * len(rows) + 24
    plot_w = WIDTH - left - right
    scale_max = max(row.max for row in rows) or 1.0
    out = [
        f'<svg id="chart-durations" class="chart" width="{WIDTH}" height="{height}" role="img" '
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
            f"{escape(shorten(row.organization, 32))}</text>"
        )
        for j, (name, colour) in enumerate(PERCENTILES):
            value = getattr(row, name)
            out.append(
                f'<rect class="bar" x="{left}" y="{y + 4 + j * (bar_h + 1)}" '
                f'width="{max(1.0, value / scale_max * plot_w):.2f}" height="{bar_h}" fill="{colour}" '
                f'data-organization="{escape(row.organization)}" data-percentile="{name}" data-hours="{value:.4f}">'
                f"<title>{escape(row.organization)} {name}: {escape(format_hours(value))}</title></rect>"
            )
        x_max = left + row.max / scale_max * plot_w
        out.append(
            f'<line class="max" x1="{x_max:.1f}" x2="{x_max:.1f}" y1="{y + 2}" y2="{y + 4 + 3 * (bar_h + 1)}"/>'
            f'<text class="value" x="{min(x_max, left + plot_w) + 6:.1f}" y="{y + row_h / 2 + 2:.1f}">'
            f"median {escape(format_hours(row.p50))} · max {escape(format_hours(row.max))}</text>"
        )
    out.append("</svg>")
    return "".join(out)
