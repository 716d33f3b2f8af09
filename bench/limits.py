"""The limits (child side): the least time fetching, loading, or an incremental dlt run can take.

- transport limit: fetch and JSON-parse every page at ours' concurrency, nothing else (no dlt);
- load limit: the same rows as one typed Arrow table (fetched before timing) loaded through dlt as parquet;
- incremental limit: 1% of those rows merged on ``jobId`` through dlt into a table that holds them all.

The Arrow table is prepared once per scenario by an untimed child (``prepare_arrow``), at 0 ms latency.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from bench.contenders import dlt_phases, duckdb_pipeline
from bench.memory import proc_status_mb
from bench.paging import concurrent_pages

#: Arrow types of the API's job fields (everything else in a job is an int64 count).
STRING_FIELDS = (
    "module",
    "jobId",
    "startTime",
    "finishTime",
    "organizationId",
    "organizationName",
)
FLOAT_FIELDS = ("durationHours",)
TIME_FIELDS = ("startTime", "finishTime")


def run_transport(spec: dict[str, Any]) -> dict[str, Any]:
    """The transport limit: every page fetched and parsed at ours' concurrency, rows only counted."""
    rows = 0

    def count(jobs: list[dict[str, Any]]) -> None:
        nonlocal rows
        rows += len(jobs)

    rss0 = proc_status_mb("VmRSS")
    started = time.perf_counter()
    total, pages = concurrent_pages(spec, count)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows_seen": rows,
        "total_reported": total,
        "pages": pages,
        "rss_after_imports_mb": rss0,
    }


def run_transport_one_by_one(spec: dict[str, Any]) -> dict[str, Any]:
    """The transport limit at 1 request in flight: what a sequential reader of the pages cannot beat."""
    return run_transport({**spec, "concurrency": 1})


def run_prepare_arrow(spec: dict[str, Any]) -> dict[str, Any]:
    """Fetch every page (untimed preparation) into one typed Arrow table, saved as an Arrow IPC file."""
    import pyarrow as pa

    batches: list[pa.RecordBatch] = []
    schema: pa.Schema | None = None

    def add(jobs: list[dict[str, Any]]) -> None:
        nonlocal schema
        if not jobs:
            return
        if schema is None:
            fields = []
            for key in jobs[0]:
                kind = (
                    pa.string()
                    if key in STRING_FIELDS
                    else pa.float64()
                    if key in FLOAT_FIELDS
                    else pa.int64()
                )
                fields.append(pa.field(key, kind))
            schema = pa.schema(fields)
        batches.append(pa.RecordBatch.from_pylist(jobs, schema=schema))

    concurrent_pages(spec, add)
    assert schema is not None, "no jobs fetched"
    table = pa.Table.from_batches(batches, schema=schema).combine_chunks()
    for name in TIME_FIELDS:
        if name in table.column_names:
            index = table.column_names.index(name)
            typed = (
                table.column(name)
                .cast(pa.timestamp("ns", tz="UTC"))
                .cast(pa.timestamp("us", tz="UTC"), safe=False)
            )
            table = table.set_column(index, name, typed)
    with pa.OSFile(spec["arrow_path"], "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return {"rows_seen": table.num_rows, "seconds": 0.0}


def arrow_rows(spec: dict[str, Any], share: float = 1.0) -> Any:
    """The last ``share`` of the prepared Arrow file's rows, materialized in memory (before timing)."""
    import pyarrow as pa

    with pa.memory_map(spec["arrow_path"], "r") as source:
        table = pa.ipc.open_file(source).read_all()
    rows = max(1, math.ceil(table.num_rows * share))
    return table.slice(table.num_rows - rows).combine_chunks()


def timed_dlt_run(spec: dict[str, Any], name: str, data: Any, **run_args: Any) -> dict[str, Any]:
    """``pipeline.run(data)`` into the spec's DuckDB file as parquet, timed from pipeline creation."""
    rss0 = proc_status_mb("VmRSS")
    wall_start = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    pipeline = duckdb_pipeline(spec, name)
    info = pipeline.run(data, loader_file_format="parquet", **run_args)
    seconds = time.perf_counter() - started
    wall_end = dt.datetime.now(dt.UTC)
    info.raise_on_failed_jobs()
    return {
        "seconds": seconds,
        "phases": dlt_phases(pipeline, wall_start, wall_end),
        "rss_after_imports_mb": rss0,
    }


def run_load_limit(spec: dict[str, Any]) -> dict[str, Any]:
    """The load limit: the prepared Arrow table appended to DuckDB through dlt as parquet."""
    import dlt  # noqa: F401  (imported before timing, like every contender: ~0.4 s)

    table = arrow_rows(spec)
    result = timed_dlt_run(spec, "bench_load_limit", table, table_name="jobs")
    return {**result, "rows_seen": table.num_rows}


def run_dlt_merge(spec: dict[str, Any]) -> dict[str, Any]:
    """Merge the last ``share`` of the Arrow file's rows on ``jobId`` through dlt (parquet, declared
    deduplicated): with share 1 it seeds the table, with share 0.01 it is the incremental limit."""
    import dlt

    table = arrow_rows(spec, spec["share"])
    deduplicated = dlt.mark.make_hints(additional_table_hints={"x-stage-data-deduplicated": True})
    resource = dlt.resource(
        [dlt.mark.with_hints(table, deduplicated)],
        name="jobs",
        primary_key="jobId",
        write_disposition="merge",
    )
    result = timed_dlt_run(spec, "bench_incremental_limit", resource)
    return {**result, "rows_seen": table.num_rows}
