"""What a contender left in its DuckDB file, read back by the parent (read-only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.contenders import DATASET
from bench.render import log


def duckdb_query(path: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` against the DuckDB file at ``path``, opened read-only."""
    # Imported here: only the parent needs it, and a contender's child imports DuckDB on its own terms.
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        rows: list[tuple[Any, ...]] = con.execute(sql, params or []).fetchall()
        return rows


def count_rows(path: Path) -> tuple[int | None, int | None]:
    """(rows, distinct job ids) of the jobs table, or (None, None) if it is not there."""
    if not path.exists():
        return None, None
    try:
        rows = duckdb_query(path, f"SELECT count(*), count(DISTINCT job_id) FROM {DATASET}.jobs")
    except Exception as exc:
        log(f"  cannot count rows in {path}: {exc}")
        return None, None
    return int(rows[0][0]), int(rows[0][1])
