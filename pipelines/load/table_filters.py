"""After a load, the ``jobs`` table holds exactly what the run's filters select: rows of wider filters go.

A run under filters narrower than earlier runs' (``load --status 4`` after plain loads, once or for good)
loads every job its filters select; the rows loaded earlier that they do not select are then deleted
here, in the destination, so the table is the API's answer for this run's filters. The connector drops
the states of the wider filters at the same time (their rows are gone): a later run under them reads
everything they select again. Only this run's tenant's rows are touched (``tenant`` column, or none).

Destinations without SQL (``filesystem``: Parquet files or Delta tables) keep those rows, with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from avepoint_dynamics import jobs_setup
from dlt.pipeline.pipeline import Pipeline

logger = logging.getLogger(__name__)

#: Filter (``JobsQuery.filter_key()``) → the ``jobs`` column holding it.
COLUMN_OF = {
    "status": "status",
    "type": "type",
    "organizationId": "organization_id",
    "objectType": "object_type",
}


def keep_only_the_runs_filters(pipeline: Pipeline, source: Any) -> int | None:
    """Delete the ``jobs`` rows of this run's tenant that its filters do not select.

    Args:
        pipeline: The pipeline that just loaded ``source``.
        source: The ``avepoint_dynamics`` source of the run.

    Returns:
        Rows deleted; None when there is nothing to do (no filter, a backfill) or no SQL to do it with.
    """
    setup = jobs_setup(source)
    query = setup.query
    filters = {k: v for k, v in query.filter_key().items() if v is not None}
    if not filters or query.is_backfill:
        return None
    if not pipeline.default_schema_name:
        return None
    columns = pipeline.default_schema.get_table_columns("jobs")
    if not columns:
        return None
    conditions, values = [], []
    for key, value in sorted(filters.items()):
        column = COLUMN_OF[key]
        if key == "organizationId":
            conditions.append(f"lower({column}) = lower(%s)")
        else:
            conditions.append(f"{column} = %s")
        values.append(value)
    selected = " AND ".join(conditions)
    if "tenant" in columns:
        mine, tenant = ("tenant = %s", [setup.tenant]) if setup.tenant else ("tenant IS NULL", [])
    else:
        mine, tenant = "1 = 1", []
    if pipeline.destination is None or pipeline.destination.destination_name == "filesystem":
        # Said at INFO: a filter set from the first run on has nothing to delete, every run.
        logger.info(
            "rows loaded under earlier, wider filters than this run's (if any) stay in jobs: the "
            "filesystem destination cannot delete them"
        )
        return None
    try:
        with pipeline.sql_client() as client:
            table = client.make_qualified_table_name("jobs")
            # NOT (x = v) is NULL where x is NULL: COALESCE makes a row with no value one not selected.
            where = f"WHERE {mine} AND NOT COALESCE({selected}, FALSE)"
            found = client.execute_sql(f"SELECT count(*) FROM {table} {where}", *tenant, *values)
            deleted = int(found[0][0]) if found else 0
            if deleted:
                client.execute_sql(f"DELETE FROM {table} {where}", *tenant, *values)
    except Exception as error:
        logger.warning(
            "rows loaded under earlier, wider filters than this run's may stay in jobs: deleting "
            "them failed (%s)",
            str(error).splitlines()[0] if str(error) else type(error).__name__,
        )
        return None
    if deleted:
        logger.info(
            "%d rows loaded under earlier, wider filters deleted from jobs: it holds what this run's "
            "filters select",
            deleted,
        )
    return deleted
