"""Build and run the pipeline: DuckDB file by default, any dlt destination by name."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
from avepoint_dynamics import AvePointError
from dlt.common.destination.reference import Destination
from dlt.common.pipeline import LoadInfo
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.pipeline import Pipeline

from .shared_dataset import dataset_writer, retry_schema_races
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
        staging_dataset_layout: dlt's ``staging_dataset_name_layout``, where merges stage their rows
            (a tenant's own: :mod:`avepoint_pipelines.shared_dataset`). None: dlt config, else
            ``"%s_staging"``.
    """

    destination: str = "duckdb"
    dataset_name: str = DEFAULT_DATASET
    pipeline_name: str = DEFAULT_PIPELINE
    duckdb_path: str = DEFAULT_DUCKDB
    pipelines_dir: str | None = None
    duckdb_memory_limit: str | None = "40MB"
    duckdb_threads: int | None = 1
    staging_dataset_layout: str | None = None

    @property
    def duckdb_file(self) -> str | None:
        """The DuckDB file when the destination is DuckDB, else None."""
        return self.duckdb_path if self.destination == "duckdb" else None


class PipelineBusy(AvePointError):
    """Another run of the same pipeline is in progress (a backfill and a scheduled load, say)."""

    exit_code = 75  # sysexits' EX_TEMPFAIL: a temporary failure, try again later


@contextmanager
def exclusive_run(pipeline: Pipeline) -> Iterator[None]:
    """Hold the pipeline's run lock: two runs of one pipeline never interleave.

    A backfill that read a job while it was running must not land after a scheduled run loaded its
    final state (the row would go back in time), and two runs would race for the state. The lock is a
    file in the pipeline's working folder (``flock``: released by the kernel if the process dies).

    Raises:
        PipelineBusy: another process holds it; nothing was read or loaded.
    """
    path = Path(pipeline.working_dir) / "avepoint-run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise PipelineBusy(
                f"pipeline {pipeline.pipeline_name!r} is busy: {holder} holds {path}; a backfill and "
                "a load of one pipeline never run at once, so try again when it ends"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} (since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC)")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_pipeline(target: Target) -> Pipeline:
    """A dlt pipeline for ``target``; DuckDB writes to ``target.duckdb_path``."""
    destination: Any = target.destination
    layout: dict[str, Any] = {}
    if target.staging_dataset_layout:
        layout["staging_dataset_name_layout"] = target.staging_dataset_layout
    if target.destination == "duckdb":
        credentials = DuckDbCredentials(os.path.abspath(target.duckdb_path))
        settings = {"memory_limit": target.duckdb_memory_limit, "threads": target.duckdb_threads}
        credentials.global_config = {key: value for key, value in settings.items() if value}
        destination = dlt.destinations.duckdb(credentials=credentials, **layout)
    elif layout:
        # A destination given by name, with this setting on top of its config (the rest from dlt config).
        destination = Destination.from_reference(target.destination, **layout)
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


def rejected_jobs(info: LoadInfo, tenant: str | None = None) -> int:
    """How many jobs are set aside in ``jobs_rejected`` now (and read again each run until they load).

    Read from the pipeline's state after the run: a job set aside in an earlier run and still bad counts,
    one that loaded this run does not.
    """
    pipeline: Any = info.pipeline
    sources = pipeline.state.get("sources", {})
    state = sources.get("avepoint_dynamics", {}).get("resources", {}).get("jobs", {})
    if tenant:
        state = state.get("tenants", {}).get(tenant, {})
    return len(state.get("rejected_jobs", {})) + len(state.get("rejected_windows", {}))


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
    retry_schema_races(pipeline, pipeline.load)
    return True


def run_load(source: Any, target: Target | None = None) -> LoadInfo:
    """Extract, normalize and load ``source`` into ``target``; finishes a crashed run's package first.

    Holds the pipeline's run lock throughout (:func:`exclusive_run`), and for DuckDB the file's writer
    lock (:func:`~avepoint_pipelines.shared_dataset.dataset_writer`: a tenant loading into the same file
    waits). After the load, the analyst views (:mod:`avepoint_pipelines.views`) are created or replaced.
    """
    target = target or Target()
    pipeline = make_pipeline(target)
    with exclusive_run(pipeline), dataset_writer(target.duckdb_file):
        finish_pending(pipeline)
        file_format = load_file_format(target)
        info = retry_schema_races(
            pipeline, lambda: pipeline.run(source, loader_file_format=file_format)
        )
        # The views follow the table's columns (a tenant column may appear): recreate them after every load.
        refresh_views_after_load(pipeline)
    return info


def run_in_steps(pipeline: Pipeline, source: Any, target: Target) -> LoadInfo:
    """What ``pipeline.run`` does, step by step, writing the destination only in its own steps.

    Restore the state from the destination (when the local one is older or gone) and finish a package a
    crashed run left; extract and normalize, which touch only the pipeline's working folder; load, retried
    when its schema migration meets another pipeline's. For DuckDB the first and the last step hold the
    file's writer lock, so that tenants read their services side by side and write one after another.
    The caller holds the pipeline's run lock.
    """
    with dataset_writer(target.duckdb_file):
        if pipeline.config.restore_from_destination:
            pipeline.sync_destination()
        finish_pending(pipeline)
    pipeline.extract(source, loader_file_format=load_file_format(target))
    pipeline.normalize()
    with dataset_writer(target.duckdb_file):
        return retry_schema_races(pipeline, pipeline.load)
