"""``avepoint-dynamics report``: one self-contained HTML file with charts of the analyst views.

The file needs nothing but a browser: the charts are SVG drawn in Python, the styles are inline, and a
few lines of vanilla JavaScript make the failures table sortable and filterable. No CDN, no fonts, no
requests: it can be mailed, attached to a ticket or opened on an air-gapped machine.

This module is the entry point (:func:`write_report`, used by the CLI and the demo); the work is split by
role:

- :mod:`avepoint_pipelines.analytics.report_data`: the queries against the views of a DuckDB file (read-only), into
  plain values (:class:`ReportData`);
- :mod:`avepoint_pipelines.analytics.report_charts`: SVG charts drawn from those values;
- :mod:`avepoint_pipelines.analytics.report_page`: the page, package data ``templates/report.html``, filled in.

Example:
    >>> write_report("avepoint_dynamics.duckdb", "report.html")  # doctest: +SKIP
    PosixPath('report.html')
"""

from __future__ import annotations

import os
from pathlib import Path

from .report_charts import STATUSES
from .report_data import (
    DEFAULT_DAYS,
    DEFAULT_MAX_FAILURES,
    DayOutcome,
    Duration,
    Failure,
    Freshness,
    ReportData,
    ReportError,
    read_report_data,
)
from .report_page import render_html

__all__ = [
    "DEFAULT_DAYS",
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_REPORT",
    "STATUSES",
    "DayOutcome",
    "Duration",
    "Failure",
    "Freshness",
    "ReportData",
    "ReportError",
    "read_report_data",
    "render_html",
    "write_report",
]

DEFAULT_REPORT = "avepoint_report.html"


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
