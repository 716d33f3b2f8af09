"""Jobs that cannot become rows: set aside in ``jobs_rejected``, one row each, until they load.

``jobs_rejected`` (a table variant of the ``jobs`` resource, merged on ``rejection_key``): ``rejection_key``,
``job_id``, ``start_time_raw``, ``reason``, ``raw_job`` (the job's JSON), ``last_seen_at``, and the
hard-delete column that removes a row once its job loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from .times import ARROW_UTC_MICROS

#: The hard-delete column of ``jobs`` (only with a status filter a job can leave) and ``jobs_rejected``:
#: a row carrying True removes its key from the table (dlt's ``hard_delete`` hint). Rows that stay
#: hold NULL in it.
DELETED_COLUMN = "_avepoint_deleted"

#: A job's window as microseconds since the epoch: ``[start, end)``, ``start`` None = from the beginning.
Bounds = tuple[int | None, int]


@dataclass
class RejectedJob:
    """A job the API sent that cannot be loaded as a row; it goes to ``jobs_rejected`` instead.

    ``jobs_rejected`` (merge on ``rejection_key``: one row per set-aside job, holding its latest reason):
    ``rejection_key``, ``job_id``, ``start_time_raw``, ``reason``, ``raw_job`` (the job's JSON),
    ``last_seen_at``. Nothing is silently dropped, and the job can be inspected where the loaded rows are.
    Once the job loads, its row leaves ``jobs_rejected``: the table lists what is set aside now.
    """

    job_id: str | None
    start_time: str | None
    reason: str
    raw: str
    bounds: Bounds | None = None
    """The window the job was read in (a job without a usable start time is re-read through it)."""

    @property
    def key(self) -> str:
        """The job's id; a job without one is known by its start and organization, else its JSON."""
        if self.job_id:
            return self.job_id
        try:
            identity = json.dumps(
                [json.loads(self.raw).get(name) for name in ("startTime", "organizationId", "type")]
            )
        except (ValueError, AttributeError):
            identity = self.raw
        return "?" + hashlib.sha256(identity.encode()).hexdigest()[:24]


def typed_table(columns: dict[str, pa.Array], required: Iterable[str]) -> pa.Table:
    """An Arrow table whose fields say ``nullable`` as the resource's column hints do.

    dlt compares the two on every batch and warns ("several column hints were different") where they
    disagree: a primary key or a constant column (``tenant``) is never null, and says so.
    """
    never_null = set(required)
    fields = [
        pa.field(name, array.type, nullable=name not in never_null)
        for name, array in columns.items()
    ]
    return pa.Table.from_arrays(list(columns.values()), schema=pa.schema(fields))


def rejected_table(
    jobs: list[RejectedJob], seen_at: datetime, constants: dict[str, str] | None = None
) -> pa.Table:
    """``jobs_rejected`` rows as an Arrow table: typed even when a column is all nulls.

    Args:
        jobs: The jobs set aside.
        seen_at: When (service time) this run saw them.
        constants: Constant columns (``tenant``).
    """
    columns = {
        "rejection_key": pa.array([job.key for job in jobs], pa.string()),
        "job_id": pa.array([job.job_id for job in jobs], pa.string()),
        "start_time_raw": pa.array([job.start_time for job in jobs], pa.string()),
        "reason": pa.array([job.reason for job in jobs], pa.string()),
        "raw_job": pa.array([job.raw for job in jobs], pa.string()),
        "last_seen_at": pa.array([seen_at] * len(jobs), ARROW_UTC_MICROS),
    }
    for name, value in (constants or {}).items():
        columns[name] = pa.array([value] * len(jobs), pa.string())
    return typed_table(columns, required={"rejection_key", *(constants or {})})


def resolved_rejections_table(keys: list[str], constants: dict[str, str] | None = None) -> pa.Table:
    """Rows that remove set-aside jobs (now loaded) from ``jobs_rejected``."""
    columns = {
        "rejection_key": pa.array(keys, pa.string()),
        DELETED_COLUMN: pa.array([True] * len(keys), pa.bool_()),
    }
    for name, value in (constants or {}).items():
        columns[name] = pa.array([value] * len(keys), pa.string())
    return typed_table(columns, required={"rejection_key", *(constants or {})})


def reject(job: dict[str, Any], reason: str, bounds: Bounds | None) -> RejectedJob:
    """A job set aside, with the reason and the window it was read in."""
    job_id = job.get("jobId")
    start = job.get("startTime")
    return RejectedJob(
        job_id=str(job_id) if job_id not in (None, "") else None,
        start_time=str(start) if start is not None else None,
        reason=reason,
        raw=json.dumps(job, sort_keys=True, default=str),
        bounds=bounds,
    )
