"""What a run loaded, counted in the destination, and written into its ``_avepoint_runs`` row.

The connector writes one row per run into ``_avepoint_runs`` in the same load package as the jobs (see
:mod:`avepoint_dynamics.run_log`); a row therefore means its load completed. What only the destination
knows is counted here, around the load, by the runner that holds the dataset (its lease, and for DuckDB
the file's writer lock), and written into that row:

- ``jobs_inserted``: rows of ``jobs`` after the load, minus before, plus the rows the load deleted;
- ``jobs_updated``: the distinct jobs the run handed to the merge (``jobs_yielded``) that were not new;
- ``outcome`` / ``exit_code``: ``ok`` / 0, or ``rejected`` / 5 with ``--fail-on-rejected`` and jobs set
  aside.

Counting costs two ``count(*)`` of the tenant's rows. A failure to count is logged and leaves the counts
empty: the load itself has completed. Destinations without SQL (the filesystem destination) keep the row as written: the counts
stay empty there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from avepoint_dynamics import RUNS_TABLE, RunRecord
from dlt.common.pipeline import LoadInfo
from dlt.destinations.exceptions import DatabaseException, DatabaseUndefinedRelation
from dlt.pipeline.pipeline import Pipeline

from ..failures import EXIT_OK, EXIT_REJECTED

logger = logging.getLogger(__name__)

#: The analysts' view of the run log.
RUNS_VIEW = "avepoint_runs"
#: Destinations without a SQL client the counts can use.
NO_SQL = {"filesystem"}


@dataclass
class RunCounts:
    """Counts a run around its load, and completes its ``_avepoint_runs`` row.

    Args:
        tenant: The tenant whose rows are counted (None: the whole ``jobs`` table, one tenant).
        fail_on_rejected: Jobs set aside make the run's outcome ``rejected`` (exit 5).

    Attributes:
        record: The run's row as the destination holds it, completed (None until :meth:`after_load`
            found it; stays None where the destination cannot be queried).
    """

    tenant: str | None = None
    fail_on_rejected: bool = False
    record: RunRecord | None = None
    _before: int | None = None

    def before_load(self, pipeline: Pipeline) -> None:
        """Count the tenant's jobs before the load (the caller holds the dataset)."""
        if _no_sql(pipeline):
            return
        try:
            with pipeline.sql_client() as client:
                self._before = _count_jobs(client, self.tenant)
        except DatabaseException as error:
            logger.warning("the jobs could not be counted before the load: %s", error)

    def after_load(self, pipeline: Pipeline, info: LoadInfo) -> RunRecord | None:
        """Count what the load did and write it into the run's row; a failure is logged, not raised."""
        try:
            return self._after_load(pipeline, info)
        except DatabaseException as error:
            logger.warning("the run loaded, but its counts could not be read or written: %s", error)
            return None

    def _after_load(self, pipeline: Pipeline, info: LoadInfo) -> RunRecord | None:
        """Count what the load did and write it, with the outcome, into the run's row.

        Returns:
            The completed row; None when the destination cannot be queried or holds no row of this
            run (a run stopped before its load writes none).
        """
        if _no_sql(pipeline) or self._before is None:
            return None
        load_ids = list(getattr(info, "loads_ids", []) or [])
        # One connection for the three statements: each sql_client() resolves the destination's
        # configuration and opens the database again (~30 ms for a DuckDB file; issue 23).
        with pipeline.sql_client() as client:
            return self._count_and_write(client, load_ids, self._before)

    def _count_and_write(self, client: Any, load_ids: list[str], before: int) -> RunRecord | None:
        record = _read_run(client, load_ids, self.tenant)
        if record is None or record.load_id is None:
            return None
        after = _count_jobs(client, self.tenant)
        record.jobs_inserted = max(0, after - before + record.jobs_deleted)
        record.jobs_updated = max(0, record.jobs_yielded - record.jobs_inserted)
        rejected = self.fail_on_rejected and record.jobs_set_aside > 0
        record.outcome = "rejected" if rejected else "ok"
        record.exit_code = EXIT_REJECTED if rejected else EXIT_OK
        _write_back(client, record)
        self.record = record
        return record


def _no_sql(pipeline: Pipeline) -> bool:
    destination = pipeline.destination
    return destination is None or destination.destination_name in NO_SQL


def _tenant_filter(tenant: str | None) -> tuple[str, list[Any]]:
    return (" AND tenant = %s", [tenant]) if tenant else ("", [])


def _count_jobs(client: Any, tenant: str | None) -> int:
    """Rows of ``jobs`` (the tenant's); 0 when the table does not exist yet (``client``: an open one)."""
    condition, args = _tenant_filter(tenant)
    table = client.make_qualified_table_name("jobs")
    try:
        rows = client.execute_sql(f"SELECT count(*) FROM {table} WHERE 1 = 1{condition}", *args)
    except DatabaseUndefinedRelation:
        return 0
    return int(rows[0][0]) if rows else 0


def _read_run(client: Any, load_ids: list[str], tenant: str | None) -> RunRecord | None:
    """This run's row, by its load id (and tenant)."""
    if not load_ids:
        return None
    condition, args = _tenant_filter(tenant)
    marks = ", ".join(["%s"] * len(load_ids))
    table = client.make_qualified_table_name(RUNS_TABLE)
    try:
        with client.execute_query(
            f"SELECT * FROM {table} WHERE load_id IN ({marks}){condition} "
            "ORDER BY load_id DESC LIMIT 1",
            *load_ids,
            *args,
        ) as cursor:
            names = [column[0] for column in cursor.description]
            row = cursor.fetchone()
    except DatabaseUndefinedRelation:
        return None
    return RunRecord.from_row(dict(zip(names, row, strict=True))) if row else None


def _write_back(client: Any, record: RunRecord) -> None:
    condition, args = _tenant_filter(record.tenant)
    table = client.make_qualified_table_name(RUNS_TABLE)
    client.execute_sql(
        f"UPDATE {table} SET jobs_inserted = %s, jobs_updated = %s, outcome = %s, "
        f"exit_code = %s WHERE load_id = %s{condition}",
        record.jobs_inserted,
        record.jobs_updated,
        record.outcome,
        record.exit_code,
        record.load_id,
        *args,
    )
