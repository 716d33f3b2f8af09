"""Dagster: the ``jobs`` asset partitioned by UTC day; each partition loads exactly its day.

Point Dagster at this module instead of :mod:`avepoint_pipelines.orchestrators.dagster_defs` when the job history should
be loaded and reloaded day by day (a backfill over last month loads each day once)::

    AVEPOINT_PARTITIONS_START=2026-01-01 dagster dev -m avepoint_pipelines.orchestrators.dagster_daily

A partition's run hands its time window to the source as dlt's scheduler interval (a
``TimeIntervalContext`` set in code, with ``allow_external_schedulers``): the run is a bounded backfill of
``[day, next day)``; the cursor of the scheduled loads is not read and not moved, and a day loaded again
replaces its rows with the service's current answer. A backfill of many days is one run over the whole
range (``BackfillPolicy.single_run``): two runs of one pipeline never overlap. The schedule materializes
yesterday's partition at 02:00 UTC.

The cost of loading by day rather than from a cursor: a job the service shows only after its day was
loaded (a late one) arrives when that day is loaded again; the open jobs a day's run sees are followed by
the next runs, as after any backfill. Configuration is :mod:`avepoint_pipelines.orchestrators.dagster_defs`' (dlt config
for the source, ``AVEPOINT_*`` for the destination); one tenant per code location.
"""

# No `from __future__ import annotations`: Dagster checks the asset function's `context` annotation.
import os
from typing import Any

import dagster as dg
from avepoint_dynamics import ConfigError, avepoint_dynamics
from dlt.common.configuration.container import Container
from dlt.extract.incremental.context import TimeIntervalContext

from ..failures import describe_failure
from ..load.pipeline import Target, rejected_jobs, run_load, target_from_env
from .dagster_defs import JOBS_ASSET, connector_logs_to, freshness_checks

JOB_NAME = "avepoint_jobs_by_day"
#: The first day, when not given: ``AVEPOINT_PARTITIONS_START`` (ISO date).
START_ENV = "AVEPOINT_PARTITIONS_START"


def daily_definitions(
    target: Target | None = None, start_date: str | None = None, **source_args: Any
) -> dg.Definitions:
    """The ``jobs`` asset with one partition per UTC day, its job, a daily schedule and the check.

    Args:
        target: Where to load; from ``AVEPOINT_*`` env vars if None.
        start_date: The first partition (ISO date); ``AVEPOINT_PARTITIONS_START`` if None.
        source_args: Arguments of ``avepoint_dynamics(...)`` (dlt config fills in the rest).

    Raises:
        ConfigError: no start date.
    """
    target = target or target_from_env()
    start = start_date or os.environ.get(START_ENV)
    if not start:
        raise ConfigError(START_ENV, "is not set: the first day to partition, e.g. 2026-01-01")
    partitions = dg.DailyPartitionsDefinition(start_date=start, timezone="UTC")

    @dg.asset(  # type: ignore[untyped-decorator, unused-ignore]
        key=JOBS_ASSET,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="avepoint",
        kinds={"dlt", target.destination},
        description="AvePoint Cloud Backup for Dynamics 365 job history, one partition per UTC day",
    )
    def avepoint_jobs(context: dg.AssetExecutionContext) -> dg.MaterializeResult[Any]:
        window = context.partition_time_window
        pages: list[int] = []
        interval = TimeIntervalContext(
            interval=(window.start, window.end), allow_external_schedulers=True
        )
        with connector_logs_to(context.log), Container().injectable_context(interval):
            try:
                source = avepoint_dynamics(
                    allow_external_schedulers=True,
                    on_page=lambda page: pages.append(len(page.jobs)),
                    **source_args,
                )
                info = run_load(source, target)
            except Exception as error:
                raise dg.Failure(describe_failure(error).message) from error
        return dg.MaterializeResult(
            metadata={
                "interval_start": window.start.isoformat(),
                "interval_end": window.end.isoformat(),
                "dataset": target.dataset_name,
                "jobs_read": sum(pages),
                "pages_read": len(pages),
                "jobs_set_aside": rejected_jobs(info, None),
                "load_ids": ", ".join(info.loads_ids),
            }
        )

    job = dg.define_asset_job(
        JOB_NAME, selection=dg.AssetSelection.assets(avepoint_jobs), partitions_def=partitions
    )
    schedule = dg.build_schedule_from_partitioned_job(
        job, hour_of_day=2, default_status=dg.DefaultScheduleStatus.RUNNING
    )
    return dg.Definitions(
        assets=[avepoint_jobs],
        asset_checks=freshness_checks(JOBS_ASSET, target),
        jobs=[job],
        schedules=[schedule],
    )


@dg.definitions  # type: ignore[untyped-decorator, unused-ignore]
def defs() -> dg.Definitions:
    """What ``dagster dev -m avepoint_pipelines.orchestrators.dagster_daily`` loads."""
    return daily_definitions()
