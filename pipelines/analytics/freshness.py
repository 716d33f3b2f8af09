"""Stale backups: which organizations have no successful backup within a threshold, from ``backup_freshness``.

What ``avepoint-dynamics alert``, the Dagster asset check and the Airflow task ask of the destination. The
answer comes from the ``backup_freshness`` view (:mod:`avepoint_pipelines.analytics.views`) that every load
recreates, through dlt's SQL client: DuckDB, PostgreSQL or any SQL destination dlt reaches.

Example:
    >>> freshness = check_freshness(make_pipeline(Target()), stale_after_hours=26)  # doctest: +SKIP
    >>> print("\\n".join(freshness.lines()) or freshness.summary())  # doctest: +SKIP
    stale: Contoso Sales: last successful backup 41.2 hours ago (threshold 26 hours)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from avepoint_dynamics import AvePointError
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.sql_client import SqlClientBase
from dlt.pipeline.pipeline import Pipeline

VIEW = "backup_freshness"
#: ``alert`` found an organization without a successful backup within the threshold.
EXIT_STALE = 6


class AlertError(AvePointError):
    """The alert cannot be answered as asked: no view in the destination, an unknown organization, a
    threshold that is not a number of hours."""

    exit_code = 2


class StaleBackups(AvePointError):
    """Some organization has no successful backup within the threshold (for an orchestrator's task).

    Its message is the alert's lines, one per stale organization.
    """

    exit_code = EXIT_STALE


@dataclass(frozen=True)
class Organization:
    """One organization's row of ``backup_freshness``, judged against the threshold."""

    organization_id: str
    organization_name: str | None
    tenant: str | None
    last_successful_backup_at: datetime | None
    hours_since_success: float | None
    stale_after_hours: float

    @property
    def name(self) -> str:
        return self.organization_name or self.organization_id

    @property
    def stale(self) -> bool:
        """No successful backup ever, or the newest is older than the threshold."""
        return self.hours_since_success is None or self.hours_since_success > self.stale_after_hours

    @property
    def label(self) -> str:
        """``name``, or ``tenant/name`` when tenants share the dataset."""
        return f"{self.tenant}/{self.name}" if self.tenant else self.name

    def age(self) -> str:
        """``41.2 hours ago`` or ``never``."""
        hours = self.hours_since_success
        return "never" if hours is None else f"{hours:.1f} hours ago"

    def line(self) -> str:
        """``stale: Contoso Sales (tenant contoso): last successful backup 41.2 hours ago (threshold 26 hours)``."""
        tenant = f" (tenant {self.tenant})" if self.tenant else ""
        if self.hours_since_success is None:
            when = "no successful backup ever"
        else:
            when = f"last successful backup {self.age()}"
        return f"stale: {self.name}{tenant}: {when} (threshold {self.stale_after_hours:g} hours)"

    def as_dict(self) -> dict[str, Any]:
        last = self.last_successful_backup_at
        return {
            "organization_id": self.organization_id,
            "organization_name": self.organization_name,
            "tenant": self.tenant,
            "last_successful_backup_at": last.isoformat() if last is not None else None,
            "hours_since_success": (
                round(self.hours_since_success, 3) if self.hours_since_success is not None else None
            ),
            "stale_after_hours": self.stale_after_hours,
            "stale": self.stale,
        }


@dataclass(frozen=True)
class Freshness:
    """The organizations checked, and which of them are stale."""

    organizations: list[Organization]
    stale_after_hours: float | None  # None: each row's own (the view's) threshold
    where: str = ""
    stale: list[Organization] = field(init=False)

    def __post_init__(self) -> None:
        stale = sorted((o for o in self.organizations if o.stale), key=_oldest_first)
        object.__setattr__(self, "stale", stale)

    def lines(self) -> list[str]:
        """One line per stale organization, the longest without a backup first; empty when none."""
        return [organization.line() for organization in self.stale]

    def summary(self) -> str:
        """``ok: 6 organizations backed up within 26 hours`` (or how many are stale)."""
        thresholds = sorted({o.stale_after_hours for o in self.organizations})
        within = " or ".join(f"{t:g}" for t in thresholds) or f"{self.stale_after_hours or 0:g}"
        total = len(self.organizations)
        what = f"{total} organization{'' if total == 1 else 's'}"
        if not self.stale:
            return f"ok: {what} backed up within {within} hours{self.where}"
        return f"{len(self.stale)} of {what} without a successful backup within {within} hours{self.where}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.stale,
            "checked": len(self.organizations),
            "stale_after_hours": self.stale_after_hours,
            "stale": [organization.as_dict() for organization in self.stale],
            "organizations": [organization.as_dict() for organization in self.organizations],
        }


def _oldest_first(organization: Organization) -> tuple[float, str]:
    hours = organization.hours_since_success
    return (-math.inf if hours is None else -hours, organization.label)


def read_freshness(
    client: SqlClientBase[Any],
    *,
    stale_after_hours: float | None = None,
    organizations: Sequence[str] = (),
) -> Freshness:
    """The ``backup_freshness`` view of an open dlt SQL client's dataset, judged.

    Args:
        client: An open ``pipeline.sql_client()``.
        stale_after_hours: The threshold; None takes the view's own (26 hours unless the views were
            created with another).
        organizations: Only these organizations, each by name (any case) or id; empty: all.

    Raises:
        AlertError: no view (nothing loaded yet), or an organization that is not in it.
        ValueError: ``stale_after_hours`` is not a positive number.
    """
    if stale_after_hours is not None and not (
        math.isfinite(stale_after_hours) and stale_after_hours > 0
    ):
        raise ValueError(
            f"the threshold must be a positive number of hours, not {stale_after_hours!r}"
        )
    view = client.make_qualified_table_name(VIEW)
    try:
        with client.execute_query(f"SELECT * FROM {view}") as cursor:
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except DatabaseUndefinedRelation:
        raise AlertError(
            f"no {VIEW} view in dataset {client.dataset_name!r}: nothing was loaded there yet (or not "
            "with this pipeline); run avepoint-dynamics load first, or check --dataset"
        ) from None
    judged = [
        Organization(
            organization_id=str(row["organization_id"]),
            organization_name=row.get("organization_name"),
            tenant=row.get("tenant"),
            last_successful_backup_at=row.get("last_successful_backup_at"),
            hours_since_success=_hours(row.get("hours_since_success")),
            stale_after_hours=float(
                stale_after_hours if stale_after_hours is not None else row["stale_after_hours"]
            ),
        )
        for row in rows
    ]
    return Freshness(_only(judged, organizations), stale_after_hours)


def check_freshness(
    pipeline: Pipeline,
    *,
    stale_after_hours: float | None = None,
    organizations: Sequence[str] = (),
) -> Freshness:
    """:func:`read_freshness` in the dataset of ``pipeline``'s destination.

    Raises:
        AlertError: the destination keeps files (``filesystem``: no views there), holds no view
            yet, or an organization asked for is not in it.
    """
    destination = pipeline.destination.destination_name
    if pipeline.destination.destination_type.endswith(".filesystem"):
        raise AlertError(
            "the filesystem destination holds no views, so there is no backup_freshness to read: "
            "alert reads a SQL destination (--destination duckdb, postgres, ...)"
        )
    with pipeline.sql_client() as client:
        found = read_freshness(
            client, stale_after_hours=stale_after_hours, organizations=organizations
        )
    return Freshness(
        found.organizations, found.stale_after_hours, f" ({destination}:{pipeline.dataset_name})"
    )


def stale_hours_from_env(name: str = "AVEPOINT_STALE_HOURS") -> float | None:
    """The orchestrators' threshold: the env var ``name`` in hours; None (the view's) when unset.

    Raises:
        AlertError: the value is not a positive number of hours.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        hours = float(text)
    except ValueError:
        hours = math.nan
    if not (math.isfinite(hours) and hours > 0):
        raise AlertError(f"{name}={text!r} is not a positive number of hours; set it like 26 or 48")
    return hours


def organization_names(values: Iterable[str]) -> list[str]:
    """``--organization`` values: each repeatable and comma-separated, blanks dropped."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _only(judged: list[Organization], wanted: Sequence[str]) -> list[Organization]:
    if not wanted:
        return judged
    kept: list[Organization] = []
    for name in wanted:
        matches = [
            o
            for o in judged
            if o.organization_id.lower() == name.lower()
            or (o.organization_name or "").casefold() == name.casefold()
        ]
        if not matches:
            known = ", ".join(sorted({o.name for o in judged})) or "none"
            raise AlertError(
                f"organization {name!r} is in no row of {VIEW} (no job of it was loaded); give a "
                f"name or id it lists: {known}"
            )
        kept.extend(o for o in matches if o not in kept)
    return kept


def _hours(value: Any) -> float | None:
    return None if value is None else float(value)
