"""Dagster: the AvePoint ``jobs`` resource as a dagster-dlt asset, materialized daily at 02:00 UTC.

Install with ``pip install 'avepoint-dynamics-dlt[dagster]'`` and point Dagster at this module::

    dagster dev -m avepoint_pipelines.orchestrators.dagster_defs

Configuration, read when Dagster loads the definitions (each run loads them anew):

- the source: dlt config, ``[sources.avepoint_dynamics]`` in ``.dlt/*.toml`` of the working directory or
  the ``SOURCES__AVEPOINT_DYNAMICS__*`` env vars;
- several tenants: a ``[sources.avepoint_dynamics_<tenant>]`` section each (or
  ``SOURCES__AVEPOINT_DYNAMICS_<TENANT>__*`` env vars), or ``build_definitions(tenants=[...])``: the asset
  then has one partition per tenant (:func:`tenant_definitions`);
- where it goes: ``AVEPOINT_DESTINATION`` (a dlt destination name, default ``duckdb``),
  ``AVEPOINT_DATASET``, ``AVEPOINT_PIPELINE_NAME``, ``AVEPOINT_PIPELINES_DIR``, for DuckDB
  ``AVEPOINT_DUCKDB_PATH``, for the filesystem destination ``AVEPOINT_TABLE_FORMAT=delta`` (Delta
  tables merged on the key); the destination's credentials come from dlt config (e.g.
  ``DESTINATION__POSTGRES__CREDENTIALS``, ``DESTINATION__FILESYSTEM__BUCKET_URL``).

The asset check ``backups_fresh`` runs after each materialization (SQL destinations: the filesystem
destination holds no views): it fails with severity ERROR when an organization has no successful backup
within ``AVEPOINT_STALE_HOURS`` (default: the ``backup_freshness`` view's 26), with one metadata entry per
organization; point Dagster's alerting at failed checks to be woken.

``DagsterDltResource.run`` drops the local dlt pipeline (state, schemas, pending packages) before each run;
the incremental state (cursor and open jobs) then comes back from the destination, where it is committed
with every load. A run that crashed mid-load therefore never half-applies: its package is dropped, the
destination still holds the state of the last complete load, and the next run reads from there.
"""

# No `from __future__ import annotations`: Dagster checks the asset function's `context` annotation
# against its classes at definition time, and a string annotation fails that check.
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast

import dagster as dg
from avepoint_dynamics import avepoint_dynamics
from dagster_dlt import DagsterDltResource, dlt_assets
from dlt.pipeline.pipeline import Pipeline

from ..analytics.freshness import Freshness, check_freshness, stale_hours_from_env
from ..failures import describe_failure
from ..load.lease import dataset_lease
from ..load.pipeline import (
    Target,
    load_file_format,
    make_pipeline,
    prepare_source,
    refresh_views,
    rejected_jobs,
    target_from_env,
)
from ..load.tenant_runs import run_tenant
from ..load.tenants import checked_tenants, configured_tenants

JOB_NAME = "avepoint_jobs_daily"
CHECK_NAME = "backups_fresh"
#: The jobs asset: dagster-dlt's key for the ``jobs`` resource, kept by the partitioned asset of tenants.
JOBS_ASSET = dg.AssetKey("dlt_avepoint_dynamics_jobs")
#: Daily at 02:00 UTC: after the nightly backup jobs of most tenants have finished.
SCHEDULE = "0 2 * * *"


#: The connector's loggers (``avepoint_dynamics``, ``avepoint_dynamics.paging``, ...).
CONNECTOR_LOGGER = "avepoint_dynamics"


class _ToDagsterLog(logging.Handler):
    """Hands each record to Dagster's run log (``context.log``): the UI, the event log, the console."""

    def __init__(self, log: logging.Logger) -> None:
        super().__init__()
        self.log = log
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log.log(record.levelno, self.format(record))
        except Exception:
            self.handleError(record)


@contextmanager
def connector_logs_to(log: logging.Logger, level: int = logging.INFO) -> Iterator[None]:
    """While the block runs, the connector's log records (at ``level`` and above) go to ``log``.

    Dagster captures only its own loggers unless ``python_logs.managed_python_loggers`` is set in
    ``dagster.yaml``; the connector's lines ("read N jobs in P pages ...") would be lost otherwise.
    """
    connector = logging.getLogger(CONNECTOR_LOGGER)
    handler = _ToDagsterLog(log)
    handler.setLevel(level)
    previous = connector.level
    if connector.getEffectiveLevel() > level:
        connector.setLevel(level)
    connector.addHandler(handler)
    try:
        yield
    finally:
        connector.removeHandler(handler)
        connector.setLevel(previous)


def freshness_result(freshness: Freshness) -> dg.AssetCheckResult:
    """The check's result: failed (severity ERROR) when any organization is stale; one entry each."""
    metadata: dict[str, Any] = {
        organization.label: dg.MetadataValue.json(organization.as_dict())
        for organization in freshness.organizations
    }
    metadata["stale_organizations"] = dg.MetadataValue.int(len(freshness.stale))
    return dg.AssetCheckResult(
        passed=not freshness.stale,
        severity=dg.AssetCheckSeverity.ERROR,
        description="\n".join(freshness.lines()) or freshness.summary(),
        metadata=metadata,
    )


def build_definitions(
    target: Target | None = None, source: Any = None, tenants: Sequence[str] | None = None
) -> dg.Definitions:
    """The asset for the ``jobs`` resource, its daily job and schedule, and the dlt resource.

    Args:
        target: Where to load; from ``AVEPOINT_*`` env vars if None.
        source: An ``avepoint_dynamics(...)`` source; built from dlt config if None.
        tenants: One partition per tenant (:func:`tenant_definitions`); None: the tenants with a
            section in dlt config, if any. An empty list, or a ``source``: one tenant, no partitions.

    Returns:
        Definitions with the asset ``dlt_avepoint_dynamics_jobs`` (the load, then the analyst views),
        its check ``backups_fresh`` (SQL destinations), the job ``avepoint_jobs_daily`` and its
        schedule (02:00 UTC, running once deployed).

    Raises:
        ValueError: both ``source`` and ``tenants`` given.
    """
    target = target or target_from_env()
    if source is not None and tenants:
        raise ValueError(
            "build_definitions: give source (one tenant) or tenants (a partition each), not both"
        )
    if tenants is None and source is None:
        tenants = configured_tenants()
    if tenants:
        return tenant_definitions(target, tenants)
    pipeline = make_pipeline(target)

    # CI type-checks on the base install, where dagster's decorators are untyped (not installed).
    @dlt_assets(  # type: ignore[untyped-decorator, unused-ignore]
        dlt_source=prepare_source(source if source is not None else avepoint_dynamics(), target),
        dlt_pipeline=pipeline,
        name="avepoint_dynamics",
        group_name="avepoint",
    )
    def avepoint_jobs(context: dg.AssetExecutionContext, dlt: DagsterDltResource) -> Iterator[Any]:
        # One writer per dataset wherever runs start (a CLI backfill, another worker): the lease.
        lease = dataset_lease(
            pipeline, None, target.duckdb_file, target.lease_seconds, "a Dagster run"
        )
        with connector_logs_to(context.log), lease:
            yield from dlt.run(context=context, loader_file_format=load_file_format(target))
        # as after every load (run_load): the analyst views follow the table; never fail the run
        refresh_views(pipeline, target)

    checks = freshness_checks(next(iter(avepoint_jobs.keys)), target, pipeline)

    daily = dg.define_asset_job(JOB_NAME, selection=dg.AssetSelection.assets(avepoint_jobs))
    schedule = dg.ScheduleDefinition(
        job=daily,
        cron_schedule=SCHEDULE,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return dg.Definitions(
        assets=[avepoint_jobs],
        asset_checks=checks,
        jobs=[daily],
        schedules=[schedule],
        resources={"dlt": DagsterDltResource()},
    )


def freshness_checks(asset: dg.AssetKey, target: Target, pipeline: Any = None) -> list[Any]:
    """The check ``backups_fresh`` on ``asset``, read through ``pipeline``; none for the filesystem.

    Without a pipeline, the check reads ``target``'s dataset through a throwaway one (a temporary working
    folder): with tenants, no pipeline of the target's own name should appear beside theirs.
    """
    if target.destination == "filesystem":  # files hold no views: nothing to check there
        return []
    stale_after_hours = stale_hours_from_env()

    @dg.asset_check(  # type: ignore[untyped-decorator, unused-ignore]
        asset=asset,
        name=CHECK_NAME,
        description="Every organization has a successful backup within the threshold "
        "(backup_freshness).",
    )
    def backups_fresh() -> dg.AssetCheckResult:
        if pipeline is not None:
            return freshness_result(check_freshness(pipeline, stale_after_hours=stale_after_hours))
        with tempfile.TemporaryDirectory(prefix="avepoint-freshness-") as folder:
            reader = make_pipeline(replace(target, pipelines_dir=folder))
            return freshness_result(check_freshness(reader, stale_after_hours=stale_after_hours))

    return [backups_fresh]


def tenant_definitions(target: Target, tenants: Sequence[str]) -> dg.Definitions:
    """The ``jobs`` asset with a partition per tenant, a daily job, and a schedule that runs every partition.

    Each partition loads its tenant through the tenant's own dlt pipeline (``<pipeline>_<tenant>``: its
    state, working folder and run lock) and staging dataset, into the one dataset, as ``load --tenant``
    does (:func:`~avepoint_pipelines.load.tenant_runs.run_tenant`); then the analyst views. The schedule asks
    for one run per tenant each day: a tenant whose service fails fails its run only, and can be run
    again alone (its partition). Runs of several tenants at once are safe (PostgreSQL and other
    warehouses load side by side; a DuckDB file is written by one run at a time, the others wait).

    Raises:
        ConfigError: a tenant name is not valid or repeats.
    """
    names = checked_tenants(tenants)
    partitions = dg.StaticPartitionsDefinition(names)

    @dg.asset(  # type: ignore[untyped-decorator, unused-ignore]
        key=JOBS_ASSET,
        partitions_def=partitions,
        group_name="avepoint",
        kinds={"dlt", target.destination},
        description="AvePoint Cloud Backup for Dynamics 365 job history, one partition per tenant",
    )
    def avepoint_jobs(context: dg.AssetExecutionContext) -> dg.MaterializeResult[Any]:
        tenant = context.partition_key
        pages: list[int] = []
        with connector_logs_to(context.log):
            try:
                info = run_tenant(tenant, target, on_page=lambda page: pages.append(len(page.jobs)))
            except Exception as error:
                # one line, naming what to fix; the whole chain stays in the event log below it
                raise dg.Failure(f"tenant {tenant}: {describe_failure(error).message}") from error
            refresh_views(cast(Pipeline, info.pipeline), target)
        return dg.MaterializeResult(
            metadata={
                "tenant": tenant,
                "dlt_pipeline": info.pipeline.pipeline_name,
                "dataset": target.dataset_name,
                "jobs_read": sum(pages),
                "pages_read": len(pages),
                "jobs_set_aside": rejected_jobs(info, tenant),
                "load_ids": ", ".join(info.loads_ids),
            }
        )

    daily = dg.define_asset_job(
        JOB_NAME, selection=dg.AssetSelection.assets(avepoint_jobs), partitions_def=partitions
    )

    @dg.schedule(  # type: ignore[untyped-decorator, unused-ignore]
        name=f"{JOB_NAME}_schedule",
        job=daily,
        cron_schedule=SCHEDULE,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def every_tenant_daily(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
        day = context.scheduled_execution_time
        for tenant in names:
            yield dg.RunRequest(run_key=f"{tenant}:{day:%Y-%m-%d}", partition_key=tenant)

    # The whole dataset's freshness (every tenant's organizations), read after each tenant's run.
    checks = freshness_checks(JOBS_ASSET, target)
    return dg.Definitions(
        assets=[avepoint_jobs], asset_checks=checks, jobs=[daily], schedules=[every_tenant_daily]
    )


@dg.definitions  # type: ignore[untyped-decorator, unused-ignore]
def defs() -> dg.Definitions:
    """What ``dagster dev -m avepoint_pipelines.orchestrators.dagster_defs`` loads (lazily: importing needs no config)."""
    return build_definitions()
