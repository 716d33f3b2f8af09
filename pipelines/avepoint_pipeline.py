"""Build and run the pipeline: DuckDB file by default, any dlt destination by name."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import dlt
from dlt.common.pipeline import LoadInfo
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.pipeline import Pipeline

from .views import refresh_views_after_load

logger = logging.getLogger(__name__)

DEFAULT_PIPELINE = "avepoint_dynamics"
DEFAULT_DATASET = "avepoint"
DEFAULT_DUCKDB = "avepoint_dynamics.duckdb"
#: The CLI's working folders for destinations other than DuckDB (relative to the working directory).
DEFAULT_PIPELINES_DIR = ".avepoint_pipelines"
#: Columnar loader files: dlt's default insert_values is ~10x slower for this volume (see bench/).
COLUMNAR_DESTINATIONS = {"duckdb", "filesystem", "motherduck", "bigquery", "snowflake", "athena"}


@dataclass(frozen=True)
class Target:
    """Where the jobs go.

    Attributes:
        destination: A dlt destination name (``duckdb``, ``postgres``, ``filesystem``, ...).
        dataset_name: Dataset / schema in the destination.
        pipeline_name: dlt pipeline name (its state and working folder).
        duckdb_path: The DuckDB file, when the destination is DuckDB.
        pipelines_dir: dlt's working folder root (default ``~/.dlt/pipelines``).
        duckdb_memory_limit: DuckDB's ``memory_limit`` while loading (it spills to disk beyond it).
            DuckDB's default, 80 % of RAM, let a 1,000,000-job merge take ~0.9 GB; 40 MB keeps a
            run's peak nearly flat as the history grows. Measured (bench/, /proc sampling): a
            100,000-job first load peaks at ~232 MB with 40 MB vs ~244 MB with 64 MB, its load step
            ~0.1 s slower; 1,000,000 jobs ~244 vs ~264 MB, ~0.4 s slower; 32 MB saves ~6 MB more but
            spills enough to cost ~0.25 s per 100,000 jobs. None: DuckDB's default.
        duckdb_threads: DuckDB's ``threads`` while loading; 1 halves its working memory, and loads are
            mostly small incremental merges. None: DuckDB's default (one per core).
    """

    destination: str = "duckdb"
    dataset_name: str = DEFAULT_DATASET
    pipeline_name: str = DEFAULT_PIPELINE
    duckdb_path: str = DEFAULT_DUCKDB
    pipelines_dir: str | None = None
    duckdb_memory_limit: str | None = "40MB"
    duckdb_threads: int | None = 1


def make_pipeline(target: Target) -> Pipeline:
    """A dlt pipeline for ``target``; DuckDB writes to ``target.duckdb_path``."""
    destination: Any = target.destination
    if target.destination == "duckdb":
        credentials = DuckDbCredentials(os.path.abspath(target.duckdb_path))
        settings = {"memory_limit": target.duckdb_memory_limit, "threads": target.duckdb_threads}
        credentials.global_config = {key: value for key, value in settings.items() if value}
        destination = dlt.destinations.duckdb(credentials=credentials)
    return dlt.pipeline(
        pipeline_name=target.pipeline_name,
        destination=destination,
        dataset_name=target.dataset_name,
        pipelines_dir=target.pipelines_dir,  # type: ignore[arg-type]  # None: dlt's default folder
    )


def default_pipelines_dir(destination: str, duckdb_path: str) -> str:
    """Where the CLI and the demo keep a pipeline's working folder (its state, schemas, packages).

    Beside the DuckDB file (``<file>.dlt/``), so that a folder's state belongs to that folder's database,
    never to another pipeline of the same name elsewhere (dlt's default, ``~/.dlt/pipelines``, is shared
    by every folder). For other destinations: ``./.avepoint_pipelines``.
    """
    if destination == "duckdb":
        return os.path.abspath(duckdb_path) + ".dlt"
    return os.path.abspath(DEFAULT_PIPELINES_DIR)


def rejected_jobs(info: LoadInfo) -> int:
    """How many jobs this run set aside in ``jobs_rejected`` (the normalize step's row count)."""
    trace = getattr(info.pipeline, "last_trace", None)  # a dlt Pipeline's; not in its protocol
    normalize = trace.last_normalize_info if trace is not None else None
    if normalize is None:
        return 0
    return int(normalize.row_counts.get("jobs_rejected", 0))


def load_file_format(target: Target) -> Any:
    """Parquet where the destination takes it (Arrow batches go straight in); else dlt's choice."""
    return "parquet" if target.destination in COLUMNAR_DESTINATIONS else None


def finish_pending(pipeline: Pipeline) -> bool:
    """Load what a killed run left behind, so the next ``run`` extracts again.

    dlt's ``run`` finding a pending package loads it and returns *without extracting*: a scheduled run
    after a crash would fetch nothing new. Loading first keeps every run a full run.

    Returns:
        True if there was something pending.
    """
    if not pipeline.has_pending_data:
        return False
    logger.warning("finishing a load package a previous run left pending")
    pipeline.normalize()
    pipeline.load()
    return True


def run_load(source: Any, target: Target | None = None) -> LoadInfo:
    """Extract, normalize and load ``source`` into ``target``; finishes a crashed run's package first.

    After the load, the analyst views (:mod:`avepoint_pipelines.views`) are created or replaced.
    """
    target = target or Target()
    pipeline = make_pipeline(target)
    finish_pending(pipeline)
    file_format = load_file_format(target)
    info = pipeline.run(source, loader_file_format=file_format)
    # The views follow the table's columns (a tenant column may appear): recreate them after every load.
    refresh_views_after_load(pipeline)
    return info
