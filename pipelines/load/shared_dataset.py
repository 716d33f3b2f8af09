"""Several pipelines loading into one dataset at the same time: what dlt shares between them, and the remedies.

Each tenant loads through a dlt pipeline of its own (``avepoint_dynamics_<tenant>``) into one dataset, and
with ``load --tenants --parallel``, Dagster partitions or Airflow mapped tasks, several of them load at
once. Checked on dlt 1.31 against PostgreSQL and DuckDB (docs/scale.md, "What loads share"):

- **The staging dataset.** A merge copies the rows into ``<dataset>_staging.jobs`` (dlt's destination
  setting ``staging_dataset_name_layout``, default ``"%s_staging"``), truncating that table first, then
  deletes and inserts from it. Pipelines merging at the same moment truncate and read each other's rows:
  three tenants merging 3,000 new jobs each at once left one tenant with half of its jobs and another with
  thousands of duplicate rows, and raised nothing. Remedy: a staging dataset per tenant
  (:func:`staging_layout_of`).
- **The dataset's tables**, created or altered in the load step (dlt's schema migration). Two first loads
  at once both find no ``jobs`` table and both create it: PostgreSQL refuses the second (``duplicate key
  value violates unique constraint "pg_type_typname_nsp_index"``), DuckDB too (``Catalog write-write
  conflict``); a column added by a new version meets the same race. dlt raises ``SchemaUpdateError`` and a
  retry is safe: the load step reads the destination again and applies only what is missing, and the
  package waits in the pipeline meanwhile. Remedy: :func:`retry_schema_races`.
- **The DuckDB file.** One process writes it at a time (another process cannot even open it meanwhile);
  threads of one process share it. Remedy: :func:`dataset_writer` holds a lock beside the file (threads
  and processes alike) around each step that opens it, so tenants read their services side by side and
  write one after another.
- Apart once each tenant has a pipeline of its own: ``_dlt_pipeline_state`` (rows keyed by pipeline name,
  which is where a worker with no local folder restores a tenant's state from) and ``_dlt_loads`` (one row
  per load, appended). ``_dlt_version`` keeps one row per schema version; every tenant's schema is the
  source's (``avepoint_dynamics``), so the second tenant finds its version stored and migrates nothing,
  and a fresh worker restores the newest version, whichever tenant stored it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dlt
from dlt.common.destination.exceptions import SchemaUpdateError
from dlt.common.pipeline import LoadInfo
from dlt.pipeline.pipeline import Pipeline

logger = logging.getLogger(__name__)

#: dlt's default ``staging_dataset_name_layout``.
DEFAULT_STAGING_LAYOUT = "%s_staging"
#: Load attempts when the schema migration meets another pipeline's (the first one included).
SCHEMA_RACE_ATTEMPTS = 5


def staging_layout_of(destination: str, owner: str) -> str:
    """A staging dataset layout of ``owner``'s own: the configured one (or dlt's) with ``_<owner>`` added.

    Example:
        >>> staging_layout_of("postgres", "contoso")  # dataset avepoint stages in avepoint_staging_contoso
        '%s_staging_contoso'
    """
    configured: str | None = dlt.config.get(
        f"destination.{destination}.staging_dataset_name_layout", str
    )
    return f"{configured or DEFAULT_STAGING_LAYOUT}_{owner}"


def lost_schema_race(error: BaseException) -> bool:
    """Whether ``error`` is a schema migration that failed, e.g. because another pipeline made the same one."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, SchemaUpdateError):
            return True
        wrapped = getattr(seen, "exception", None)
        seen = (
            wrapped if isinstance(wrapped, BaseException) else (seen.__cause__ or seen.__context__)
        )
    return False


def retry_schema_races(
    pipeline: Pipeline, step: Callable[[], LoadInfo], attempts: int = SCHEMA_RACE_ATTEMPTS
) -> LoadInfo:
    """Run ``step`` (a load, or a whole run); when its schema migration fails, load the package again.

    The migration of a load step fails when another pipeline created the table or added the column a
    moment before; the failed attempt changed nothing (its DDL is one transaction) and the package waits
    in the pipeline, so ``pipeline.load()`` reads the destination again and applies only what is missing.
    A migration that fails for another reason (no permission) fails every attempt, and the last error is
    raised.
    """
    try:
        return step()
    except Exception as error:
        if not lost_schema_race(error):
            raise
        last = error
    for attempt in range(1, attempts):
        logger.info(
            "pipeline %s: the schema migration met another pipeline's; loading again (%d/%d)",
            pipeline.pipeline_name,
            attempt + 1,
            attempts,
        )
        # a little apart, so that the pipelines that lost do not meet again
        time.sleep(random.uniform(0.05, 0.2) * attempt)
        try:
            return pipeline.load()
        except Exception as error:
            if not lost_schema_race(error):
                raise
            last = error
    raise last


_GUARD = threading.Lock()
_WRITERS: dict[str, threading.RLock] = {}
_HELD = threading.local()


@contextmanager
def dataset_writer(duckdb_path: str | None) -> Iterator[None]:
    """While the block runs, this thread is the DuckDB file's only writer (no-op for other destinations).

    A lock beside the file, ``<file>.lock``: threads of this process take turns on an in-process lock,
    and the one holding it also holds ``flock`` on the file, which other processes wait for (a Dagster
    partition, an Airflow task, another ``load``). Re-entrant within a thread.

    Args:
        duckdb_path: The DuckDB file; None when the destination is not DuckDB.
    """
    if duckdb_path is None:
        yield
        return
    path = os.path.abspath(duckdb_path) + ".lock"
    with _GUARD:
        turn = _WRITERS.setdefault(path, threading.RLock())
    held: dict[str, int] = _HELD.__dict__.setdefault("depth", {})
    with turn:
        if held.get(path):
            held[path] += 1
            try:
                yield
            finally:
                held[path] -= 1
            return
        with open(path, "a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("waiting for another process writing %s", duckdb_path)
                fcntl.flock(handle, fcntl.LOCK_EX)
            held[path] = 1
            try:
                yield
            finally:
                held[path] = 0
                fcntl.flock(handle, fcntl.LOCK_UN)


_DELTA_TURNS: dict[str, threading.RLock] = {}


@contextmanager
def delta_table_turn(dataset: str | None) -> Iterator[None]:
    """While the block runs, this thread is the only one of this process writing ``dataset``'s Delta tables.

    delta-rs commits optimistically: two tenants merging into one Delta table at the same moment may
    conflict, and the loser's load fails. Threads of one process (``--parallel``) take turns here; several
    workers need delta-rs's own commit coordination (docs/scale.md). No-op when ``dataset`` is None.
    """
    if dataset is None:
        yield
        return
    with _GUARD:
        turn = _DELTA_TURNS.setdefault(dataset, threading.RLock())
    with turn:
        yield
