"""A silent loader: how long since each tenant's last run that completed its load, from ``_avepoint_runs``.

A loader that stopped running (a broken schedule, credentials that expired, a host gone) looks like a
quiet night in ``backup_freshness`` until its threshold passes. Every completed load writes one row into
``_avepoint_runs``; ``alert`` reads the newest per tenant, measured against the destination's clock (the
loader's may be off), and reports a tenant whose newest is older than the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from avepoint_dynamics import RUNS_TABLE
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.pipeline.pipeline import Pipeline

#: No completed run for longer than this is an alert of its own (hours): a nightly run plus two hours.
DEFAULT_RUN_STALE_HOURS = 26.0


@dataclass(frozen=True)
class TenantRuns:
    """One tenant's newest completed run, judged against the threshold."""

    tenant: str | None
    last_run_at: datetime | None
    hours_since: float | None
    stale_after_hours: float

    @property
    def stale(self) -> bool:
        return self.hours_since is None or self.hours_since > self.stale_after_hours

    def line(self) -> str:
        """``stale: loader (tenant contoso): no successful run for 27.5 hours (threshold 26 hours)``."""
        who = f" (tenant {self.tenant})" if self.tenant else ""
        hours = "ever" if self.hours_since is None else f"for {self.hours_since:.1f} hours"
        return (
            f"stale: loader{who}: no successful run {hours} "
            f"(threshold {self.stale_after_hours:g} hours)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "last_run_at": self.last_run_at.isoformat() if self.last_run_at else None,
            "hours_since": round(self.hours_since, 3) if self.hours_since is not None else None,
            "stale_after_hours": self.stale_after_hours,
            "stale": self.stale,
        }


def check_runs(pipeline: Pipeline, stale_after_hours: float) -> list[TenantRuns]:
    """Each tenant's newest completed run in the pipeline's dataset; empty without a run log there.

    A dataset loaded before the run log existed has no ``_avepoint_runs``: nothing to judge (its first
    run with this version writes one).
    """
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name(RUNS_TABLE)
        try:
            rows = client.execute_sql(
                f"SELECT tenant, max(finished_at), "
                f"EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP - max(finished_at))) / 3600.0 "
                f"FROM {table} WHERE outcome IN ('ok', 'loaded', 'rejected') GROUP BY tenant "
                "ORDER BY tenant"
            )
        except DatabaseUndefinedRelation:
            return []
    return [
        TenantRuns(
            tenant=row[0],
            last_run_at=row[1],
            hours_since=None if row[2] is None else float(row[2]),
            stale_after_hours=stale_after_hours,
        )
        for row in rows or []
    ]
