"""Airflow: the AvePoint jobs load as a daily DAG, built with dlt's ``PipelineTasksGroup``.

Install with ``pip install 'avepoint-dynamics-dlt[airflow]'`` into Airflow's environment, then put a
one-line file into the dags folder, e.g. ``$AIRFLOW_HOME/dags/avepoint_dynamics_dag.py``::

    from avepoint_pipelines.orchestrators.airflow_dag import dag  # noqa: F401  (Airflow finds the DAG by this name)

Any file name but ``avepoint_dynamics.py``: the dags folder is on ``sys.path``, where a module of that name
hides the ``avepoint_dynamics`` package.

Configuration, all read when the task runs (nothing is fetched or checked while Airflow parses the file):

- the source: dlt config, ``[sources.avepoint_dynamics]`` in ``dags/.dlt/*.toml`` or the
  ``SOURCES__AVEPOINT_DYNAMICS__*`` env vars (``PipelineTasksGroup`` makes the dags folder dlt's project
  folder);
- several tenants: a ``[sources.avepoint_dynamics_<tenant>]`` section each (or
  ``SOURCES__AVEPOINT_DYNAMICS_<TENANT>__*`` env vars), found when Airflow parses the file: the load is
  then one mapped task per tenant (:func:`build_dag`);
- where it goes: ``AVEPOINT_DESTINATION`` (a dlt destination name, default ``duckdb``),
  ``AVEPOINT_DATASET``, ``AVEPOINT_PIPELINE_NAME``, for DuckDB ``AVEPOINT_DUCKDB_PATH``, for the
  filesystem destination ``AVEPOINT_TABLE_FORMAT=delta`` (Delta tables merged on the key); the
  destination's credentials come from dlt config (e.g. ``DESTINATION__POSTGRES__CREDENTIALS``).

After the load and the views, the task ``backup_freshness`` (SQL destinations: the filesystem destination
holds no views) fails when an organization has no successful backup within ``AVEPOINT_STALE_HOURS``
(default: the ``backup_freshness`` view's 26), logging one line per stale organization: Airflow's
failure callbacks and alerts then wake someone.

Backfills by data interval: with ``SOURCES__AVEPOINT_DYNAMICS__ALLOW_EXTERNAL_SCHEDULERS=true`` (or dlt's
``DLT_ALLOW_EXTERNAL_SCHEDULERS=true``) in Airflow's environment, every run loads exactly its data
interval (the day before it, 02:00 to 02:00 UTC) through dlt's scheduler interval, the cursor untouched:
``airflow backfill create`` over last month, or ``airflow dags test avepoint_dynamics_jobs 2026-09-02``,
loads each day once. A manual trigger gets the 24 hours before it.

``PipelineTasksGroup`` runs every task in a fresh, random dlt working folder and wipes it afterwards, so
the incremental state (cursor and open jobs) is restored from the destination at each run: it commits
there with every load. The DuckDB default is therefore only for a single-machine Airflow; use a shared
destination (postgres, a warehouse, a bucket) when tasks run on several workers.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import Any

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from airflow.timetables.trigger import CronTriggerTimetable
from avepoint_dynamics import avepoint_dynamics
from dlt.helpers.airflow_helper import PipelineTasksGroup

from ..analytics.freshness import StaleBackups, check_freshness, stale_hours_from_env
from ..failures import describe_failure
from ..load.lease import dataset_lease
from ..load.pipeline import (
    Target,
    load_file_format,
    make_pipeline,
    prepare_source,
    refresh_views,
    target_from_env,
)
from ..load.tenant_runs import run_tenant
from ..load.tenants import checked_tenants, configured_tenants

logger = logging.getLogger(__name__)

DAG_ID = "avepoint_dynamics_jobs"
#: Daily at 02:00 UTC: after the nightly backup jobs of most tenants have finished.
SCHEDULE = "0 2 * * *"


def timetable() -> CronTriggerTimetable:
    """Daily at 02:00 UTC; each run's data interval is the day before it (02:00 to 02:00).

    The interval matters only to a source that joins it (``allow_external_schedulers``): dlt hands it
    over, and the run loads exactly that day, as ``backfill`` does. Without the interval a cron string
    would give (Airflow 3: ``CronTriggerTimetable``, start == end), ``airflow dags test`` over a past
    logical date, or ``airflow backfill create``, would have no day to load.
    """
    return CronTriggerTimetable(SCHEDULE, timezone="UTC", interval=timedelta(days=1))


def airflow_target() -> Target:
    """Where the jobs go (:func:`~avepoint_pipelines.load.pipeline.target_from_env`).

    The dlt working folder is left to ``PipelineTasksGroup`` (a fresh folder per task).
    """
    return replace(target_from_env(), pipelines_dir=None)


def jobs_source(target: Target | None = None) -> Any:
    """The source, built when the task runs: config is resolved then, not at DAG parse time."""
    return prepare_source(avepoint_dynamics(), target or airflow_target())


def log_dlt_to_stdout() -> None:
    """Send dlt's own log handlers to stdout.

    Airflow 3's task supervisor records everything a task writes to stderr at ERROR level, and dlt's
    handlers write to stderr: every dlt INFO line would show as an error (dlt issue #4462). dlt keeps
    reusing this handler when it re-initializes logging. Our connector logs through the standard
    ``logging`` tree, which Airflow captures at the right level.
    """
    for handler in logging.getLogger("dlt").handlers:
        # exactly StreamHandler: a FileHandler is one too, and must keep its file
        if type(handler) is logging.StreamHandler and handler.stream is not sys.stdout:
            handler.setStream(sys.stdout)


def analyst_views(target: Target) -> None:
    """Recreate the analyst views after the load, as ``run_load`` does (a failure is logged, not raised).

    The load task wiped its working folder; the views need only the destination and the dataset.
    """
    with tempfile.TemporaryDirectory(prefix="avepoint-views-") as folder:
        refresh_views(make_pipeline(replace(target, pipelines_dir=folder)), target)


class TenantFailed(Exception):
    """A tenant's load failed: one line naming the tenant and what to fix (the cause is chained)."""


def load_tenant(tenant: str, target: Target) -> None:
    """One mapped task: the tenant's own pipeline, in a fresh working folder wiped afterwards.

    As with ``PipelineTasksGroup``, the tenant's state comes back from the destination each time (its
    rows in ``_dlt_pipeline_state``, under the tenant's pipeline name).
    """
    log_dlt_to_stdout()
    with tempfile.TemporaryDirectory(prefix=f"avepoint-{tenant}-") as folder:
        try:
            run_tenant(tenant, replace(target, pipelines_dir=folder))
        except Exception as error:
            raise TenantFailed(f"tenant {tenant}: {describe_failure(error).message}") from error


def some_tenant_failed() -> None:
    """Runs only when a tenant's task failed: it fails too, so the DAG run is marked failed.

    Airflow gives a run the state of its last tasks; the views run whatever the tenants did
    (``all_done``) and would make a run with a failed tenant look successful.
    """
    raise TenantFailed(
        "a tenant's load failed: see the failed load_tenant task (its map index names it)"
    )


def alert_on_stale_backups(target: Target) -> str:
    """Fail (:class:`StaleBackups`) when an organization has no successful backup within the threshold.

    Logs one line per stale organization; returns the summary (the task's XCom) when none is.
    """
    with tempfile.TemporaryDirectory(prefix="avepoint-freshness-") as folder:
        pipeline = make_pipeline(replace(target, pipelines_dir=folder))
        freshness = check_freshness(pipeline, stale_after_hours=stale_hours_from_env())
    for line in freshness.lines():
        logger.error("%s", line)
    if freshness.stale:
        raise StaleBackups(freshness.summary())
    logger.info("%s", freshness.summary())
    return freshness.summary()


def build_dag(tenants: list[str] | None = None) -> DAG:
    """The DAG: one task (``decompose="none"``) that loads the ``jobs`` resource, the views, the alert.

    Why not ``decompose="serialize"``: the source has a single resource (``jobs``; ``jobs_rejected`` is
    a table variant it yields), so decomposing would make the same one task, and it needs the source
    object at parse time, which would resolve the credentials and validate the config on every parse of
    the dags folder. A callable (``jobs_source``) defers that to the task run.

    With tenants (given, or a ``[sources.avepoint_dynamics_<tenant>]`` section each in dlt config): one
    mapped task per tenant (``load_tenant``, dynamic task mapping, its map index shows the tenant), each
    through the tenant's own dlt pipeline; a tenant that fails fails its task only. Then the views
    (``all_done``: after every tenant, failed or not), the alert ``backup_freshness`` after them, and
    ``some_tenant_failed``, which fails the run when a tenant did. The tenants' tasks may run at once on several workers: PostgreSQL and other
    warehouses load side by side; a DuckDB file is written by one task at a time (the others wait).
    """
    target = airflow_target()
    with DAG(
        dag_id=DAG_ID,
        description="AvePoint Cloud Backup for Dynamics 365: job history into a dlt destination",
        schedule=timetable(),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,  # two loads of one pipeline at once would race on its state
        # The connector retries each request itself (backoff, Retry-After, re-reads of torn pages);
        # a task-level retry would only repeat a failure that those could not fix.
        default_args={"retries": 0, "execution_timeout": timedelta(hours=6)},
        tags=["avepoint", "dlt"],
    ) as dag:
        # The task group must exist before the pipeline: it points dlt's data dir at a fresh folder,
        # and makes the dags folder dlt's project folder (where tenant sections are looked for).
        tasks = PipelineTasksGroup(
            target.pipeline_name,
            use_data_folder=False,
            wipe_local_data=True,
            log_progress_period=60.0,
        )
        names = checked_tenants(tenants if tenants is not None else configured_tenants())
        if names:
            _map_tenants(tasks, target, names)
            return dag
        load = tasks.add_run(
            make_pipeline(target),
            partial(jobs_source, target),
            decompose="none",
            loader_file_format=load_file_format(target),
            on_before_run=log_dlt_to_stdout,
            retries=0,
        )
        _inside_the_lease(load[0], target)
        views = PythonOperator(
            task_id="analyst_views", python_callable=analyst_views, op_args=[target], retries=0
        )
        load[-1] >> views
        _alert_after(views, target)
    return dag


def _inside_the_lease(task: Any, target: Target) -> None:
    """dlt's run task, run inside the dataset's lease: one writer per dataset wherever runs start.

    Each task has a fresh working folder, so only the lease in the destination keeps a CLI backfill or a
    run on another host apart from it (:mod:`avepoint_pipelines.load.lease`).
    """
    run = task.python_callable

    # No parameters: Airflow passes its context only to a callable that asks for it, and dlt's does not.
    def leased() -> Any:
        lease = dataset_lease(
            make_pipeline(target), None, target.duckdb_file, target.lease_seconds, "an Airflow run"
        )
        with lease:
            return run()

    task.python_callable = leased


def _map_tenants(group: PipelineTasksGroup, target: Target, tenants: list[str]) -> None:
    """``load_tenant`` mapped over the tenants in ``group``, then the views and the failure check."""
    with group:
        loads = PythonOperator.partial(
            task_id="load_tenant",
            python_callable=load_tenant,
            op_kwargs={"target": target},
            map_index_template="{{ task.op_args[0] }}",
            retries=0,
        ).expand(op_args=[[tenant] for tenant in tenants])
    views = PythonOperator(
        task_id="analyst_views",
        python_callable=analyst_views,
        op_args=[target],
        trigger_rule="all_done",
        retries=0,
    )
    failed = PythonOperator(
        task_id="some_tenant_failed",
        python_callable=some_tenant_failed,
        trigger_rule="one_failed",
        retries=0,
    )
    loads >> [views, failed]
    _alert_after(views, target)


def _alert_after(views: PythonOperator, target: Target) -> None:
    """``backup_freshness`` after ``views``; none for the filesystem destination (files hold no views)."""
    if target.destination != "filesystem":
        fresh = PythonOperator(
            task_id="backup_freshness",
            python_callable=alert_on_stale_backups,
            op_args=[target],
            retries=0,
        )
        views >> fresh


dag = build_dag()
