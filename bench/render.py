"""What a person reads: progress lines, the console tables, ``bench.md``, and the results files.

Everything here works from the figures alone (the JSON), so ``--render`` can rewrite an earlier run's
markdown after a change to the presentation or the targets.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from bench.contenders import CONTENDERS, LABELS
from bench.targets import measured, ratio, verdict

TABLE_HEADER = (
    "| contender | wall s | rows | rows/s | peak RSS MB | peak private MB | jobs requests | max in flight "
    "| notes |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---|",
)


def log(message: str) -> None:
    """A progress line, time-stamped, flushed at once (a long run is watched as it goes)."""
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def fmt_num(value: Any, digits: int = 0) -> str:
    """A figure with thousands separators; ``-`` when it is missing (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def summary_line(report: dict[str, Any]) -> str:
    """One contender's result in one line, for the progress log."""
    if report.get("status") != "ok":
        return f"{report.get('status')}: {report.get('note') or report.get('error')}"
    return (
        f"{report['seconds']:.2f} s, {fmt_num(report.get('rows_loaded'))} rows, "
        f"{fmt_num(report.get('rows_per_s'))} rows/s, peak RSS {fmt_num(report.get('peak_rss_mb'))} MB "
        f"(private {fmt_num(report.get('peak_private_mb'))} MB), "
        f"{fmt_num(report.get('jobs_requests'))} requests"
    )


def scenario_rows(scenario: dict[str, Any]) -> list[str]:
    """The markdown table rows of a scenario, one per contender that ran or was skipped."""
    lines = []
    for contender in CONTENDERS:
        report = scenario["results"].get(contender)
        if report is None:
            continue
        notes: list[str] = []
        if report.get("status") != "ok":
            notes.append(str(report.get("note") or report.get("error") or report.get("status")))
        else:
            if not report.get("rows_ok", True):
                notes.append(f"ROWS {report.get('rows_loaded')} != {report.get('expected_rows')}")
            if len(report.get("all_seconds") or []) > 1:
                notes.append("runs " + " / ".join(f"{v:.2f}" for v in report["all_seconds"]) + " s")
            phases = report.get("phases") or {}
            if phases:
                notes.append(
                    "fastest run: " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
                )
            if report.get("rss_after_imports_mb"):
                notes.append(f"RSS after imports {report['rss_after_imports_mb']:.0f} MB")
            if contender == "ours_incremental":
                notes.append(
                    f"+{report.get('added_jobs', 0):,} jobs; "
                    f"{report.get('previously_running', 0)} previously running jobs "
                    + ("final" if report.get("finished_updated") else "NOT final")
                )
            if contender == "incremental_limit":
                notes.append(f"merged {fmt_num(report.get('merged_rows'))} rows")
            if report.get("non_200"):
                notes.append(f"non-200: {report['non_200']}")
        seconds = report.get("seconds") if report.get("status") == "ok" else None
        lines.append(
            f"| {LABELS[contender]} | {fmt_num(seconds, 2)} | {fmt_num(report.get('rows_loaded'))} "
            f"| {fmt_num(report.get('rows_per_s'))} | {fmt_num(report.get('peak_rss_mb'))} "
            f"| {fmt_num(report.get('peak_private_mb'))} "
            f"| {fmt_num(report.get('jobs_requests'))} | {fmt_num(report.get('max_in_flight'))} "
            f"| {'; '.join(notes)} |"
        )
    return lines


def ratio_lines(scenario: dict[str, Any]) -> list[str]:
    """Ours against the others in a scenario, in words: "ours is 12.0x faster than rest_api", ..."""
    results = scenario["results"]
    ours = measured(scenario, "ours", "seconds")
    parts = []
    for contender in ("rest_api", "naive"):
        speed = ratio(measured(scenario, contender, "seconds"), ours)
        if speed is not None:
            parts.append(f"ours is {speed:.1f}x faster than {contender}")
    limit = ratio(ours, measured(scenario, "transport", "seconds"))
    if limit is not None:
        parts.append(f"ours / transport limit = {limit:.2f}")
    load = ratio(ours, measured(scenario, "load_limit", "seconds"))
    if load is not None:
        parts.append(f"ours / load limit = {load:.1f}")
    one_by_one = measured(scenario, "transport_c1", "seconds")
    load_limit = measured(scenario, "load_limit", "seconds")
    if one_by_one is not None and load_limit is not None:
        both = ratio(ours, one_by_one + load_limit)
        if both is not None:
            parts.append(f"ours / (transport limit at 1 in flight + load limit) = {both:.2f}")
    plain = measured(scenario, "plain", "peak_rss_mb")
    cli = measured(scenario, "ours", "peak_rss_mb")
    if plain is not None and cli is not None:
        parts.append(f"peak RSS: plain {plain:.0f} MB, ours (run_load) {cli:.0f} MB")
    floor = ratio(measured(scenario, "incremental_limit", "seconds"), ours)
    if floor is not None:
        parts.append(f"incremental limit = {floor * 100:.1f}% of ours' full time")
    incr = results.get("ours_incremental", {})
    if incr.get("status") == "ok" and ours:
        share = ratio(incr.get("seconds"), ours)
        req = ratio(incr.get("jobs_requests"), measured(scenario, "ours", "jobs_requests"))
        parts.append(
            f"incremental = {fmt_num(share and share * 100, 1)}% of the time, "
            f"{fmt_num(req and req * 100, 1)}% of the requests"
        )
    return parts


def value_text(item: dict[str, Any]) -> str:
    """A target's value with its unit, ``-`` when not measured."""
    return "-" if item["value"] is None else f"{item['value']:,.3f} {item['unit']}".strip()


def markdown(
    meta: dict[str, Any], scenarios: list[dict[str, Any]], targets: list[dict[str, Any]]
) -> str:
    """``bench.md``: how the run was made, a table per scenario, and the targets."""
    lines = [
        "# Benchmark: avepoint_dynamics vs dlt rest_api, a naive loop and the limits",
        "",
        f"`{meta['command']}` — {meta['date']}, commit `{meta['git_commit']}`"
        + (" + uncommitted changes" if meta.get("code_uncommitted_changes") else "")
        + (f" (code snapshot {meta['code_sha256']})" if meta.get("code_sha256") else "")
        + f", Python {meta['python']}, "
        f"dlt {meta['dlt']}, {meta['cpus']} CPUs, {meta.get('environment', 'environment not recorded')}."
        f" Page size {meta['page_size']}, ours and the transport "
        f"limit at {meta['concurrency']} requests in flight. Simulator in its own process, each contender "
        "in its own process (peak RSS is that process's), fresh DuckDB file and dlt pipelines_dir each. "
        "Wall time excludes interpreter start and imports. "
        f"Each contender ran {meta['repeat']} time(s) (the incremental once): the fastest run is "
        "reported, with the highest peak RSS of all runs. Other processes shared the machine "
        f"(1-minute load average during runs: {meta.get('load_avg_range', '-')}).",
        "",
    ]
    for scenario in scenarios:
        lines.append(
            f"## {scenario['jobs']:,} jobs, {scenario['latency_ms']:g} ms latency "
            f"(expected rows {fmt_num(scenario.get('expected_rows'))})"
        )
        lines.append("")
        lines.extend(TABLE_HEADER)
        lines.extend(scenario_rows(scenario))
        ratios = ratio_lines(scenario)
        if ratios:
            lines.append("")
            lines.append("Ratios: " + "; ".join(ratios) + ".")
        lines.append("")
    lines.append("## Targets (issue 23)")
    lines.append("")
    lines.append("| target | value | goal | result |")
    lines.append("|---|---:|---|---|")
    for item in targets:
        lines.append(
            f"| {item['target']} | {value_text(item)} | {item['goal']} | {verdict(item)} |"
        )
    lines.append("")
    return "\n".join(lines)


def print_scenario(scenario: dict[str, Any]) -> None:
    """A scenario's table on the console, as soon as it is done."""
    print()
    print(
        f"== {scenario['jobs']:,} jobs, {scenario['latency_ms']:g} ms latency, page size "
        f"{scenario['page_size']} (expected rows {fmt_num(scenario.get('expected_rows'))})"
    )
    rows = [
        (
            "contender",
            "wall s",
            "rows",
            "rows/s",
            "peak RSS MB",
            "private MB",
            "requests",
            "in flight",
            "notes",
        )
    ]
    for contender in CONTENDERS:
        report = scenario["results"].get(contender)
        if report is None:
            continue
        ok = report.get("status") == "ok"
        note = "" if ok else str(report.get("note") or report.get("error"))
        if ok and not report.get("rows_ok", True):
            note = f"ROW COUNT {report.get('rows_loaded')} != {report.get('expected_rows')}"
        if ok and report.get("phases"):
            note = (note + " " if note else "") + ", ".join(
                f"{k} {v:.1f}s" for k, v in report["phases"].items()
            )
        rows.append(
            (
                contender,
                fmt_num(report.get("seconds") if ok else None, 2),
                fmt_num(report.get("rows_loaded")),
                fmt_num(report.get("rows_per_s")),
                fmt_num(report.get("peak_rss_mb")),
                fmt_num(report.get("peak_private_mb")),
                fmt_num(report.get("jobs_requests")),
                fmt_num(report.get("max_in_flight")),
                note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(8)]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, 7)]
        print("  " + "  ".join(cells) + "  " + row[7])
    ratios = ratio_lines(scenario)
    if ratios:
        print("  " + "; ".join(ratios))


def print_targets(targets: list[dict[str, Any]]) -> None:
    """The targets on the console, one verdict a line."""
    print()
    print("== targets (issue 23)")
    for item in targets:
        print(f"  {verdict(item):4}  {item['target']}: {value_text(item)} (goal {item['goal']})")


def write_results(
    out_dir: Path,
    stem: str,
    meta: dict[str, Any],
    scenarios: list[dict[str, Any]],
    targets: list[dict[str, Any]],
) -> None:
    """Write ``STEM.json`` (every figure) and ``STEM.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    loads = [
        load
        for scenario in scenarios
        for report in scenario["results"].values()
        for load in report.get("load_avg_1m_runs") or [report.get("load_avg_1m")]
        if load is not None
    ]
    if loads:
        meta["load_avg_range"] = f"{min(loads):.1f} to {max(loads):.1f} on {meta['cpus']} CPUs"
    payload = {"meta": meta, "scenarios": scenarios, "targets": targets}
    (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(meta, scenarios, targets))
