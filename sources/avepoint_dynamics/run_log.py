"""The run log: one row per run in ``_avepoint_runs``, written in the same load package as the jobs.

A run that dies before its load completes writes no row: a row is proof that the load it names reached the
destination. What only the load can tell (how many rows it inserted and updated, the run's exit code) is
filled in after the load by the runner that knows it (the CLI, the orchestrators); a run through
``pipeline.run`` alone leaves those columns empty and its ``outcome`` ``loaded``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

import pyarrow as pa

#: The run log table (a variant of the ``jobs`` resource's table, appended to, never merged).
RUNS_TABLE = "_avepoint_runs"
#: ``outcome`` of a row as the connector writes it: the load completed; the runner may refine it.
OUTCOME_LOADED = "loaded"

_TIME = pa.timestamp("us", tz="UTC")


@dataclass
class RunRecord:
    """What one run did, as one row of ``_avepoint_runs`` (and ``load --json``).

    Times are the service's (``Date`` of its answers), never this machine's.

    Attributes:
        tenant: The tenant name, or None for the one default tenant.
        outcome: ``loaded`` as written with the load; the CLI sets ``ok`` or ``rejected``.
        exit_code: The CLI's exit code (None until a runner sets it).
        backfill: The run read a bounded range (``end_time``); it moved no cursor.
        jobs_read: Jobs in every answer (probes, follow-only reads, re-reads and unchanged jobs included).
        jobs_yielded: Distinct jobs handed to the merge into ``jobs`` (open jobs read again unchanged
            are not; a job read twice counts once): the rows the load inserts or updates.
        jobs_inserted: Rows of ``jobs`` this load added (None: not counted; see the runner).
        jobs_updated: Rows of ``jobs`` this load replaced.
        jobs_deleted: Rows removed from ``jobs`` (jobs that left the status filter).
        jobs_rejected: Jobs this run set aside in ``jobs_rejected``.
        jobs_set_aside: Jobs set aside after this run (this run's and earlier ones still bad).
        requests: HTTP requests to the jobs API, retries included.
        pages: Pages received.
        token_requests: Tokens fetched from the identity service.
        retries: Attempts repeated after a transient failure (jobs API and identity service).
        rate_limited: Answers that were 429 (Too Many Requests).
        cursor_before: The cursor the run started from.
        cursor_after: The cursor it committed (equal for a backfill).
        window_reading: How the service's time window was read (``start``, ``overlap``, ``finish``,
            ``ignored``).
        load_id: dlt's load id of the package that carries this row (``_dlt_load_id`` of its rows).
        started_at: When the run started.
        finished_at: When it finished reading.
    """

    tenant: str | None = None
    outcome: str = OUTCOME_LOADED
    exit_code: int | None = None
    backfill: bool = False
    jobs_read: int = 0
    jobs_yielded: int = 0
    jobs_inserted: int | None = None
    jobs_updated: int | None = None
    jobs_deleted: int = 0
    jobs_rejected: int = 0
    jobs_set_aside: int = 0
    requests: int = 0
    pages: int = 0
    token_requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    cursor_before: datetime | None = None
    cursor_after: datetime | None = None
    window_reading: str | None = None
    load_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values (times as ISO-8601 with ``Z``)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat().replace("+00:00", "Z")
        return out

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRecord:
        """A record from a row read back from the destination (unknown columns ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in row.items() if key in known})


#: Arrow types of the columns (the table's schema in the destination follows them).
RUN_SCHEMA = pa.schema(
    [
        ("tenant", pa.string()),
        ("outcome", pa.string()),
        ("exit_code", pa.int64()),
        ("backfill", pa.bool_()),
        ("jobs_read", pa.int64()),
        ("jobs_yielded", pa.int64()),
        ("jobs_inserted", pa.int64()),
        ("jobs_updated", pa.int64()),
        ("jobs_deleted", pa.int64()),
        ("jobs_rejected", pa.int64()),
        ("jobs_set_aside", pa.int64()),
        ("requests", pa.int64()),
        ("pages", pa.int64()),
        ("token_requests", pa.int64()),
        ("retries", pa.int64()),
        ("rate_limited", pa.int64()),
        ("cursor_before", _TIME),
        ("cursor_after", _TIME),
        ("window_reading", pa.string()),
        ("load_id", pa.string()),
        ("started_at", _TIME),
        ("finished_at", _TIME),
    ]
)

#: dlt column hints of the run log (every column nullable: a runner fills some after the load).
RUN_COLUMNS: dict[str, Any] = {
    field.name: {
        "name": field.name,
        "data_type": (
            "text"
            if pa.types.is_string(field.type)
            else "bool"
            if pa.types.is_boolean(field.type)
            else "timestamp"
            if pa.types.is_timestamp(field.type)
            else "bigint"
        ),
        "nullable": True,
    }
    for field in RUN_SCHEMA
}


def runs_table(record: RunRecord) -> pa.Table:
    """The record as a one-row Arrow table of :data:`RUN_SCHEMA`."""
    row = asdict(record)
    return pa.Table.from_pylist([row], schema=RUN_SCHEMA)
