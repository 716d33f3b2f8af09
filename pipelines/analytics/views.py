"""SQL views over the ``jobs`` table for analysts: outcomes, failures, durations, backup freshness.

The views are created in the pipeline's dataset after each load (``run_load`` calls :func:`create_views`), next
to ``jobs``, so any SQL tool pointed at the destination sees them. One SQL text serves DuckDB and PostgreSQL:
both speak ``FILTER (WHERE ...)``, ``percentile_cont(...) WITHIN GROUP (ORDER BY ...)``, ``AT TIME ZONE``
and ``EXTRACT(EPOCH FROM ...)``; both are tested.

Status codes: 2 in progress, 3 finished, 4 failed, 7 finished with exception; anything else is "other".
A job is *completed* when its status is 3, 4 or 7. When ``jobs`` has a ``tenant`` column (several tenants in
one pipeline), every view starts with ``tenant`` and groups by it.

Example:
    >>> create_views(make_pipeline(Target()))  # doctest: +SKIP
    ['job_outcomes_daily', 'job_failures', 'job_duration_percentiles', 'backup_freshness']
"""

from __future__ import annotations

import logging
import math
from typing import Any

from avepoint_dynamics import RUNS_TABLE
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.sql_client import SqlClientBase
from dlt.pipeline.pipeline import Pipeline

logger = logging.getLogger(__name__)

JOBS_TABLE = "jobs"
#: A daily backup that missed one night, plus two hours of slack, is stale.
DEFAULT_STALE_AFTER_HOURS = 26.0

_COMPLETED = "status IN (3, 4, 7)"
# The UTC calendar day of a job: the reader's session time zone (DuckDB defaults to the local one) must not
# move a job to another day.
_UTC_DAY = "CAST(start_time AT TIME ZONE 'UTC' AS DATE)"


def job_outcomes_daily(jobs: str, group: str) -> str:
    """``job_outcomes_daily``: how many jobs finished, failed, ... per UTC day, organization and job type.

    Answers "did last night's backups work, and is any organization getting worse?".

    Columns: [``tenant``], ``day`` (UTC date of ``start_time``), ``organization_id``, ``organization_name``,
    ``type``, ``type_name``, ``finished`` (3), ``failed`` (4), ``finished_with_exception`` (7),
    ``in_progress`` (2), ``other`` (any other or missing status), ``total``, ``completed`` (3 + 4 + 7),
    ``success_rate`` (``finished / completed``, NULL when nothing completed; a job finished with exception
    is not a success here).
    """
    return f"""
SELECT {group}day, organization_id, MAX(organization_name) AS organization_name,
       type, MAX(type_name) AS type_name,
       COUNT(*) FILTER (WHERE status = 3) AS finished,
       COUNT(*) FILTER (WHERE status = 4) AS failed,
       COUNT(*) FILTER (WHERE status = 7) AS finished_with_exception,
       COUNT(*) FILTER (WHERE status = 2) AS in_progress,
       COUNT(*) FILTER (WHERE status IS NULL OR status NOT IN (2, 3, 4, 7)) AS other,
       COUNT(*) AS total,
       COUNT(*) FILTER (WHERE {_COMPLETED}) AS completed,
       CAST(COUNT(*) FILTER (WHERE status = 3) AS DOUBLE PRECISION)
           / NULLIF(COUNT(*) FILTER (WHERE {_COMPLETED}), 0) AS success_rate
FROM (SELECT *, {_UTC_DAY} AS day FROM {jobs}) AS dated
GROUP BY {group}day, organization_id, type"""


def job_failures(jobs: str, group: str) -> str:
    """``job_failures``: one row per failed (4) or finished-with-exception (7) job.

    Answers "what failed, where, and how badly?".

    Columns: [``tenant``], ``job_id``, ``day`` (UTC), ``start_time``, ``finish_time``, ``duration_hours``,
    ``organization_id``, ``organization_name``, ``module``, ``type``, ``type_name``, ``status``,
    ``status_name``, ``failed_entity``, ``warning_entity``, ``skipped_entity``, ``total_entity``,
    ``failed_record``, ``warning_record``, ``skipped_record``, ``total_record``.
    """
    return f"""
SELECT {group}job_id, {_UTC_DAY} AS day, start_time, finish_time, duration_hours,
       organization_id, organization_name, module, type, type_name, status, status_name,
       failed_entity, warning_entity, skipped_entity, total_entity,
       failed_record, warning_record, skipped_record, total_record
FROM {jobs}
WHERE status IN (4, 7)"""


def job_duration_percentiles(jobs: str, group: str) -> str:
    """``job_duration_percentiles``: how long completed jobs take, per organization and job type.

    Answers "is this organization's backup slow, and how long is a bad night?". Percentiles are continuous
    (linear interpolation between the two nearest durations, SQL's ``percentile_cont``).

    Columns: [``tenant``], ``organization_id``, ``organization_name``, ``type``, ``type_name``, ``jobs``
    (completed jobs with a duration), ``p50_hours``, ``p90_hours``, ``p95_hours``, ``max_hours``.
    """
    return f"""
SELECT {group}organization_id, MAX(organization_name) AS organization_name,
       type, MAX(type_name) AS type_name,
       COUNT(*) AS jobs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_hours) AS p50_hours,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY duration_hours) AS p90_hours,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_hours) AS p95_hours,
       MAX(duration_hours) AS max_hours
FROM {jobs}
WHERE {_COMPLETED} AND duration_hours IS NOT NULL
GROUP BY {group}organization_id, type"""


def backup_freshness(jobs: str, group: str, stale_after_hours: float) -> str:
    """``backup_freshness``: per organization, how long ago a backup last succeeded, and whether that is stale.

    Answers "which organizations have no recent restore point?". A backup (type 1) *succeeded* when it
    finished (3) or finished with exception (7): a job with exceptions still wrote a restore point, only some
    records are missing from it. ``last_success_had_exceptions`` says which kind the newest one was, and
    ``last_clean_backup_at`` gives the strict reading (status 3 only). Every organization that has any job is
    listed, so one that never backed up successfully shows up stale with NULL times.

    Columns: [``tenant``], ``organization_id``, ``organization_name``, ``last_successful_backup_at``
    (newest ``finish_time`` of a type 1 job in status 3 or 7), ``last_success_had_exceptions``,
    ``last_clean_backup_at`` (status 3 only), ``last_backup_started_at`` (newest backup of any status),
    ``hours_since_success`` (from ``now()`` at query time), ``stale_after_hours`` (the threshold),
    ``stale`` (no success ever, or ``hours_since_success`` above the threshold).
    """
    return f"""
SELECT {group}organization_id, organization_name, last_successful_backup_at,
       CASE WHEN last_successful_backup_at IS NOT NULL
            THEN last_clean_backup_at IS NULL OR last_clean_backup_at < last_successful_backup_at
       END AS last_success_had_exceptions,
       last_clean_backup_at, last_backup_started_at, hours_since_success,
       CAST({stale_after_hours!r} AS DOUBLE PRECISION) AS stale_after_hours,
       COALESCE(hours_since_success > {stale_after_hours!r}, TRUE) AS stale
FROM (
    SELECT *,
           CAST(EXTRACT(EPOCH FROM now()) - EXTRACT(EPOCH FROM last_successful_backup_at)
                AS DOUBLE PRECISION) / 3600 AS hours_since_success
    FROM (
        SELECT {group}organization_id, MAX(organization_name) AS organization_name,
               MAX(finish_time) FILTER (WHERE type = 1 AND status IN (3, 7)) AS last_successful_backup_at,
               MAX(finish_time) FILTER (WHERE type = 1 AND status = 3) AS last_clean_backup_at,
               MAX(start_time) FILTER (WHERE type = 1) AS last_backup_started_at
        FROM {jobs}
        GROUP BY {group}organization_id
    ) AS per_organization
) AS aged"""


def run_log(runs: str) -> str:
    """One row per run that completed its load, newest first, with its duration in seconds."""
    return f"""
SELECT tenant, outcome, exit_code, backfill, started_at, finished_at,
       EXTRACT(EPOCH FROM (finished_at - started_at)) AS seconds,
       jobs_read, jobs_inserted, jobs_updated, jobs_deleted, jobs_rejected, jobs_set_aside,
       requests, pages, token_requests, retries, rate_limited,
       cursor_before, cursor_after, window_reading, load_id
FROM {runs}
ORDER BY finished_at DESC"""


#: The run log's view (of ``_avepoint_runs``), created once a run wrote the table.
RUN_LOG_VIEW = "run_log"
VIEW_NAMES = ("job_outcomes_daily", "job_failures", "job_duration_percentiles", "backup_freshness")


def view_queries(
    jobs: str, *, tenant: bool = False, stale_after_hours: float = DEFAULT_STALE_AFTER_HOURS
) -> dict[str, str]:
    """The ``SELECT`` behind each view, by view name.

    Args:
        jobs: The qualified, quoted name of the jobs table (e.g. ``"avepoint"."jobs"``).
        tenant: Whether the table has a ``tenant`` column to group by.
        stale_after_hours: The ``backup_freshness`` threshold.

    Raises:
        ValueError: ``stale_after_hours`` is not a positive, finite number.
    """
    threshold = float(stale_after_hours)
    # The threshold is written into the SQL text (views take no parameters): only a plain number gets there.
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(
            f"stale_after_hours must be a positive number of hours, not {stale_after_hours!r}"
        )
    group = "tenant, " if tenant else ""
    return {
        "job_outcomes_daily": job_outcomes_daily(jobs, group),
        "job_failures": job_failures(jobs, group),
        "job_duration_percentiles": job_duration_percentiles(jobs, group),
        "backup_freshness": backup_freshness(jobs, group, threshold),
    }


def create_views_with(
    client: SqlClientBase[Any],
    *,
    stale_after_hours: float = DEFAULT_STALE_AFTER_HOURS,
    table: str = JOBS_TABLE,
) -> list[str]:
    """Create or replace the views in the dataset of an open dlt SQL client.

    Args:
        client: An open ``pipeline.sql_client()``.
        stale_after_hours: The ``backup_freshness`` threshold.
        table: The jobs table.

    Returns:
        The names of the views created; empty when the jobs table does not exist yet.
    """
    jobs = client.make_qualified_table_name(table)
    try:
        with client.execute_query(f"SELECT * FROM {jobs} WHERE 1 = 0") as cursor:
            columns = {column[0] for column in cursor.description}
    except DatabaseUndefinedRelation:
        logger.info("no %s table in %s yet: no views created", table, client.dataset_name)
        return []
    queries = view_queries(jobs, tenant="tenant" in columns, stale_after_hours=stale_after_hours)
    runs = client.make_qualified_table_name(RUNS_TABLE)
    try:
        with client.execute_query(f"SELECT * FROM {runs} WHERE 1 = 0"):
            queries[RUN_LOG_VIEW] = run_log(runs)
    except DatabaseUndefinedRelation:
        pass  # loaded before the run log existed: its next run writes one
    with client.begin_transaction():
        for name, query in queries.items():
            view = client.make_qualified_table_name(name)
            # Not CREATE OR REPLACE: PostgreSQL refuses it when the columns change (a tenant column appears).
            client.execute_sql(f"DROP VIEW IF EXISTS {view}")
            client.execute_sql(f"CREATE VIEW {view} AS {query}")
    return list(queries)


def create_views(
    pipeline: Pipeline, *, stale_after_hours: float = DEFAULT_STALE_AFTER_HOURS
) -> list[str]:
    """Create or replace the analyst views in the pipeline's dataset (see the module docstring).

    Args:
        pipeline: A pipeline whose destination speaks SQL (DuckDB and PostgreSQL are tested).
        stale_after_hours: The ``backup_freshness`` threshold.

    Returns:
        The names of the views created; empty when the jobs table does not exist yet, or the destination
        keeps files rather than tables (``filesystem``).
    """
    if pipeline.destination.destination_type.endswith(".filesystem"):
        # Its SQL client is an in-memory DuckDB over the files: a view there would vanish with it.
        logger.info("the filesystem destination holds no views: none created")
        return []
    with pipeline.sql_client() as client:
        return create_views_with(client, stale_after_hours=stale_after_hours)


def drop_views(pipeline: Pipeline) -> None:
    """Drop the views, e.g. before dropping ``jobs`` on PostgreSQL, which refuses while views depend on it."""
    with pipeline.sql_client() as client, client.begin_transaction():
        for name in (*VIEW_NAMES, RUN_LOG_VIEW):
            client.execute_sql(f"DROP VIEW IF EXISTS {client.make_qualified_table_name(name)}")


def refresh_views_after_load(pipeline: Pipeline) -> list[str]:
    """:func:`create_views`, for the end of a load: a failure is logged, never raised.

    The jobs are loaded and the state committed by then; failing the run would make a scheduler retry a
    load that worked (and a destination whose SQL differs, BigQuery say, would fail every night).
    """
    try:
        return create_views(pipeline)
    except Exception as error:
        logger.warning(
            "jobs loaded, but the analyst views were not created in %s: %s",
            pipeline.dataset_name,
            str(error).splitlines()[0] if str(error) else type(error).__name__,
        )
        return []
