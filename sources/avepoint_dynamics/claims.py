"""What a run tells dlt's merge about duplicates: unique rows let it skip its ``ROW_NUMBER()`` pass.

When every window proved its ids distinct (rows = total = distinct ids), windows never overlap and each
job is kept from its own window only, the staging table needs no deduplication: ~3x less merge time
(bench/). A run that re-read a window, paged without a total or kept a job from outside every window
declares duplicates, and dlt deduplicates as before. The claim must hold for the whole run: a job whose
start moved between two of its windows, or one read again to leave the filter, is one key in two rows;
that is checked once every row is out, and a wrong claim withdrawn.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterator
from typing import Any

import dlt
import pyarrow as pa

from .defaults import load_must_deduplicate
from .dlt_compat import DEDUPLICATED_HINT, deduplicated_hint
from .paging import distinct_count

__all__ = ["DEDUPLICATED_HINT", "DuplicateClaim"]

logger = logging.getLogger("avepoint_dynamics")


class DuplicateClaim:
    """The run's claim about duplicate keys in the ``jobs`` rows it yields, kept up to date."""

    def __init__(self) -> None:
        self.declared: bool | None = None
        self._ids = array("q")
        self._schema: pa.Schema | None = None
        #: Distinct keys counted when the ids were released (``final``), for the run log after it.
        self._distinct: int | None = None

    def rows(self, table: pa.Table, *, proven: bool) -> Any:
        """``table`` as yielded: with the claim as a hint when it changes (``proven``: this far, unique)."""
        self._schema = table.schema
        self._ids.extend(hash(job_id) for job_id in table.column("job_id").to_pylist())
        unique = proven and self.declared is not False
        if unique == self.declared:
            return table
        self.declared = unique
        return dlt.mark.with_hints(table, _hint(unique))

    def distinct_jobs(self) -> int:
        """Distinct keys among every row yielded so far (the rows the merge writes, deletions included)."""
        if self._distinct is not None:
            return self._distinct
        return distinct_count(self._ids)

    def final(self) -> Iterator[Any]:
        """Once every row is out: withdraw a claim of unique rows that the whole run disproves."""
        ids, self._ids = self._ids, array("q")  # 8 bytes a job: not held through the load
        self._distinct = distinct_count(ids)
        if self.declared and self._distinct != len(ids) and self._schema is not None:
            logger.info("a job came twice in this run: the load deduplicates")
            self.declared = False
            yield dlt.mark.with_hints(self._schema.empty_table(), _hint(False))


def _hint(deduplicated: bool) -> Any:
    if not deduplicated:
        load_must_deduplicate()  # DuckDB's ROW_NUMBER() pass needs more memory than a unique merge
    return deduplicated_hint(deduplicated)
