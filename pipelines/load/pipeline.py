"""Build and run the pipeline: DuckDB file by default, any dlt destination by name."""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
from avepoint_dynamics import DUCKDB_DEDUP_SETTINGS, AvePointError, load_must_deduplicate
from avepoint_dynamics.dlt_compat import (
    current_load_id,
    extracted_package_dir,
    extracted_packages_root,
    normalized_or_loaded,
    table_name_meta,
)
from avepoint_dynamics.state import REJECTED_TABLE, read_state
from dlt.common.destination.reference import Destination
from dlt.common.pipeline import LoadInfo
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.pipeline import Pipeline

from ..analytics.views import refresh_views_after_load
from .lease import DEFAULT_LEASE_SECONDS, DestinationLease, dataset_lease
from .run_log import RunCounts
from .shared_dataset import dataset_writer, delta_table_turn, retry_schema_races
from .table_filters import keep_only_the_runs_filters

logger = logging.getLogger(__name__)

DEFAULT_PIPELINE = "avepoint_dynamics"
DEFAULT_DATASET = "avepoint"
DEFAULT_DUCKDB = "avepoint_dynamics.duckdb"
#: The CLI's working folders for destinations other than DuckDB (relative to the working directory).
DEFAULT_PIPELINES_DIR = ".avepoint_pipelines"
#: Columnar loader files: dlt's default insert_values is ~10x slower for this volume (see bench/).
COLUMNAR_DESTINATIONS = {"duckdb", "filesystem", "motherduck", "bigquery", "snowflake", "athena"}
#: Open table formats the filesystem destination can merge into, and the package each needs.
TABLE_FORMATS = {"delta": ("deltalake", "lakehouse")}


#: ``Target.duckdb_memory_limit`` / ``--duckdb-memory-limit auto``: the source sets DuckDB's memory.
AUTO = "auto"


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
            ``"auto"`` (default): the source's choice (``avepoint_dynamics.defaults``): 64 MB for a
            load whose rows are proven unique, 96 MB once the run must deduplicate or finishes a
            pending package, or your own ``destination.duckdb.credentials.global_config`` if set.
            DuckDB's default, 80 % of RAM, let a 1,000,000-job merge take ~0.9 GB. Not lower than
            96 MB for a deduplicating merge: it needs ~44 MB (``jobs``) to ~60 MB (tenants' ``jobs``)
            that DuckDB cannot spill, and failed under 40 MB on every retry (docs/performance.md).
            A size such as ``"256MB"``: that, always. None: DuckDB's default.
        duckdb_threads: DuckDB's ``threads`` while loading; 1 halves its working memory, and loads are
            mostly small incremental merges. None: DuckDB's default (one per core).
        staging_dataset_layout: dlt's ``staging_dataset_name_layout``, where merges stage their rows
            (a tenant's own: :mod:`avepoint_pipelines.load.shared_dataset`). None: dlt config, else
            ``"%s_staging"``.
        table_format: ``delta``: the filesystem destination writes Delta tables and merges on the
            key (plain Parquet files only take appends). None: plain files.
        lease_seconds: How long the dataset's lease outlives a run killed without a chance to give it
            back (:mod:`avepoint_pipelines.load.lease`); renewed every third of it while the run goes on.
    """

    destination: str = "duckdb"
    dataset_name: str = DEFAULT_DATASET
    pipeline_name: str = DEFAULT_PIPELINE
    duckdb_path: str = DEFAULT_DUCKDB
    pipelines_dir: str | None = None
    duckdb_memory_limit: str | None = AUTO
    duckdb_threads: int | None = 1
    staging_dataset_layout: str | None = None
    table_format: str | None = None
    lease_seconds: float = DEFAULT_LEASE_SECONDS

    @property
    def duckdb_file(self) -> str | None:
        """The DuckDB file when the destination is DuckDB, else None."""
        return self.duckdb_path if self.destination == "duckdb" else None


class TargetError(AvePointError):
    """Where the jobs should go cannot work as asked (a table format the destination cannot write)."""

    exit_code = 2


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
        memory = target.duckdb_memory_limit
        if memory != AUTO or target.duckdb_threads != 1:
            if (
                memory == AUTO
            ):  # a thread count of the user's: the memory a deduplicating merge needs
                memory = DUCKDB_DEDUP_SETTINGS["memory_limit"]
            settings = {"memory_limit": memory, "threads": target.duckdb_threads}
            credentials.global_config = {key: value for key, value in settings.items() if value}
        # else global_config stays unset: dlt reads it at load time from the value the source keeps
        # (64 MB, raised to 96 MB once the run must deduplicate) or from the user's own config.
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
    return read_state(info.pipeline, tenant).set_aside


def load_file_format(target: Target) -> Any:
    """Parquet where the destination takes it (Arrow batches go straight in); else dlt's choice."""
    return "parquet" if target.destination in COLUMNAR_DESTINATIONS else None


def check_table_format(target: Target) -> None:
    """Refuse a table format the target cannot write, before anything is read.

    Raises:
        TargetError: an unknown format, a destination other than ``filesystem``, or the format's
            package missing; one line saying what to change.
    """
    table_format = target.table_format
    if table_format is None:
        return
    if table_format not in TABLE_FORMATS:
        raise TargetError(
            f"table format {table_format!r} is not one this pipeline writes; use "
            f"{' or '.join(sorted(TABLE_FORMATS))}, or none for plain Parquet files"
        )
    if target.destination != "filesystem":
        raise TargetError(
            f"table format {table_format} is for the filesystem destination, not "
            f"{target.destination!r}: use --destination filesystem (or drop the table format)"
        )
    module, extra = TABLE_FORMATS[table_format]
    if importlib.util.find_spec(module) is None:
        raise TargetError(
            f"table format {table_format} needs the {module} package: "
            f"pip install 'avepoint-dynamics-dlt[{extra}]'"
        )


def prepare_source(source: Any, target: Target) -> Any:
    """The source as ``target`` takes it: with a table format, every table merges on its key there.

    ``jobs`` and ``jobs_rejected`` become tables of ``target.table_format`` merged with dlt's
    ``upsert`` strategy (a row replaces the row of its key; a row whose ``_avepoint_deleted`` is True
    removes it). The connector stays destination-agnostic: it declares keys and hard deletes, the
    runner picks how they are written. See :class:`FirstOfEachKey` for why rows are deduplicated here.

    Raises:
        TargetError: the table format cannot be written (:func:`check_table_format`).
    """
    check_table_format(target)
    if target.table_format is None:
        return source
    merge = {"disposition": "merge", "strategy": "upsert"}
    for resource in source.selected_resources.values():
        resource.apply_hints(table_format=target.table_format, write_disposition=merge)
        if resource.name == "jobs":
            # its table variant started as a copy of the hints the source gave it, before ours
            resource.apply_hints(
                table_name=REJECTED_TABLE,
                table_format=target.table_format,
                write_disposition=merge,
                create_table_variant=True,
            )
        resource.add_map(FirstOfEachKey(resource))
    return source


class FirstOfEachKey:
    """Keeps the first row of each primary key a run yields, per table; drops later ones.

    dlt's SQL merges deduplicate what a load stages; its Delta merge does not: a first load appends
    the rows as they are, and a later merge inserts every source row that matches no target row, so a
    job read twice in one run (pages that shifted while they were read) would be two rows. Like dlt's
    SQL deduplication without a sort column, which reading wins is not specified: the first here.

    Costs one set of keys per run (about 100 bytes a job); runs without a table format skip this.
    """

    def __init__(self, resource: Any) -> None:
        self.resource = resource
        self.keys: dict[str, list[str]] = {}
        self.seen: dict[str, set[Hashable]] = {}
        self.load_id: str | None = None

    def __call__(self, item: Any, meta: Any = None) -> Any:
        if not isinstance(item, pa.Table | pa.RecordBatch) or item.num_rows == 0:
            return item
        self._start_of_run()
        table_name = self._table_name(meta)
        keys = self._key_of(table_name, meta)
        if not keys or any(key not in item.schema.names for key in keys):
            return item
        columns = [item.column(key).to_pylist() for key in keys]
        values: Any = columns[0] if len(columns) == 1 else zip(*columns, strict=True)
        seen = self.seen.setdefault(table_name, set())
        kept: list[int] = []
        for index, value in enumerate(values):
            if value not in seen:
                seen.add(value)
                kept.append(index)
        if len(kept) == item.num_rows:
            return item
        logger.info(
            "%d rows of %s repeat a key this run already yielded: the first of each is kept",
            item.num_rows - len(kept),
            table_name,
        )
        return item.take(pa.array(kept, pa.int64()))

    def _start_of_run(self) -> None:
        """Forget the keys of an earlier run: a source extracted again starts a new load package."""
        load_id = current_load_id()
        if load_id is None:  # outside an extraction: one run
            return
        if load_id != self.load_id:
            self.load_id = load_id
            self.seen.clear()

    def _table_name(self, meta: Any) -> str:
        name = getattr(meta, "table_name", None)
        if name is None and hasattr(meta, "hints"):
            name = meta.hints.get("table_name")
        return name if isinstance(name, str) else str(self.resource.table_name)

    def _key_of(self, table_name: str, meta: Any) -> list[str]:
        if table_name not in self.keys:
            from dlt.common.schema.utils import get_columns_names_with_prop

            schema = self.resource.compute_table_schema(meta=table_name_meta(table_name))
            self.keys[table_name] = get_columns_names_with_prop(
                schema, "primary_key", include_incomplete=True
            )
        return self.keys[table_name]


def drop_normalized_leftovers(pipeline: Pipeline) -> list[str]:
    """Remove extracted packages that were normalized already; their load ids.

    dlt's normalize commits a package to ``load/normalized`` and then deletes its extracted copy file by
    file: a run killed in between leaves a half-deleted copy (its ``schema.json`` gone, say) that every
    later normalize fails on ("No such file or directory: .../normalize/extracted/<id>/schema.json").
    The normalized package holds all of it, so the copy can go.
    """
    extracted = extracted_packages_root(pipeline.working_dir)
    if not extracted.is_dir():
        return []
    done = sorted(
        package.name
        for package in extracted.iterdir()
        if normalized_or_loaded(pipeline.working_dir, package.name)
    )
    for load_id in done:
        logger.warning("removing what a killed run left of package %s, normalized already", load_id)
        shutil.rmtree(extracted_package_dir(pipeline.working_dir, load_id))
    return done


def finish_pending(pipeline: Pipeline) -> bool:
    """Load what a killed run left behind, so the next ``run`` extracts again.

    dlt's ``run`` finding a pending package loads it and returns *without extracting*: a scheduled run
    after a crash would fetch nothing new. Loading first keeps every run a full run.

    Returns:
        True if there was something pending.
    """
    drop_normalized_leftovers(pipeline)
    if not pipeline.has_pending_data:
        return False
    logger.warning("finishing a load package a previous run left pending")
    load_must_deduplicate()  # its rows may hold duplicates: the merge's memory (when the source's to set)
    pipeline.normalize()
    retry_schema_races(pipeline, pipeline.load)
    return True


def run_load(
    source: Any, target: Target | None = None, counts: RunCounts | None = None
) -> LoadInfo:
    """Extract, normalize and load ``source`` into ``target``; finishes a crashed run's package first.

    Prepare, lock, run steps, views: the pipeline's run lock (:func:`exclusive_run`) and the dataset's
    lease (:func:`~avepoint_pipelines.load.lease.dataset_lease`) are held throughout; :func:`run_in_steps`
    takes the DuckDB file's writer lock only around the steps that write (a tenant loading into the same
    file waits only for those). After the load, the analyst views are created or replaced
    (:func:`refresh_views`).

    Args:
        source: The ``avepoint_dynamics`` source.
        target: Where the jobs go (default: the DuckDB file ``avepoint_dynamics.duckdb``).
        counts: Counts what the load inserted and updated, into the run's ``_avepoint_runs`` row
            (default: counted too; pass one to read ``counts.record`` after the run).
    """
    target = target or Target()
    counts = counts if counts is not None else RunCounts()
    source = prepare_source(source, target)
    pipeline = make_pipeline(target)
    tenant = _tenant_of(source)
    # Count the tenant's rows only: other tenants may load into the table meanwhile.
    counts.tenant = counts.tenant or tenant
    lease = dataset_lease(
        pipeline, tenant, target.duckdb_file, target.lease_seconds, _command_of(source)
    )
    with exclusive_run(pipeline), lease as held:
        info = run_in_steps(pipeline, source, target, counts, held)
        # The views follow the table's columns (a tenant column may appear): recreate them after every load.
        refresh_views(pipeline, target)
    return info


def run_in_steps(
    pipeline: Pipeline,
    source: Any,
    target: Target,
    counts: RunCounts | None = None,
    lease: DestinationLease | None = None,
) -> LoadInfo:
    """What ``pipeline.run`` does, step by step, writing the destination only in its own steps.

    Restore the state from the destination (when the local one is older or gone) and finish a package a
    crashed run left; extract and normalize, which touch only the pipeline's working folder; load, retried
    when its schema migration meets another pipeline's. For DuckDB the first and the last step hold the
    file's writer lock (and for Delta tables an in-process turn), so that tenants read their services side
    by side and write one after another.
    The caller holds the pipeline's run lock and the dataset's lease (``lease``: confirmed before the
    load, so a run whose lease another run took loads nothing).
    """
    delta_dataset = target.dataset_name if target.table_format else None
    with dataset_writer(target.duckdb_file), delta_table_turn(delta_dataset):
        if pipeline.config.restore_from_destination:
            pipeline.sync_destination()
        finish_pending(pipeline)
        counts = counts if counts is not None else RunCounts()
        counts.before_load(pipeline)
    pipeline.extract(source, loader_file_format=load_file_format(target))
    pipeline.normalize()
    with dataset_writer(target.duckdb_file), delta_table_turn(delta_dataset):
        if lease is not None:
            lease.confirm()
        info = retry_schema_races(pipeline, pipeline.load)
        keep_only_the_runs_filters(pipeline, source)
        counts.after_load(pipeline, info)
        return info


def refresh_views(pipeline: Pipeline, target: Target) -> list[str]:
    """The analyst views, after a load, through ``pipeline`` (for DuckDB, as the file's writer).

    A failure is logged, never raised (:func:`~avepoint_pipelines.analytics.views.refresh_views_after_load`).
    Returns the views created.
    """
    with dataset_writer(target.duckdb_file):
        return refresh_views_after_load(pipeline)


def target_from_env() -> Target:
    """Where the jobs go, from ``AVEPOINT_*`` env vars (a DuckDB file in the working directory by default).

    The orchestrators' way of saying it (Dagster and Airflow): ``AVEPOINT_DESTINATION``,
    ``AVEPOINT_DATASET``, ``AVEPOINT_PIPELINE_NAME``, ``AVEPOINT_DUCKDB_PATH``, ``AVEPOINT_PIPELINES_DIR``,
    ``AVEPOINT_TABLE_FORMAT``.
    """
    return Target(
        destination=os.environ.get("AVEPOINT_DESTINATION", "duckdb"),
        dataset_name=os.environ.get("AVEPOINT_DATASET", DEFAULT_DATASET),
        pipeline_name=os.environ.get("AVEPOINT_PIPELINE_NAME", DEFAULT_PIPELINE),
        duckdb_path=os.environ.get("AVEPOINT_DUCKDB_PATH", DEFAULT_DUCKDB),
        pipelines_dir=os.environ.get("AVEPOINT_PIPELINES_DIR") or None,
        table_format=os.environ.get("AVEPOINT_TABLE_FORMAT") or None,
    )


def _tenant_of(source: Any) -> str | None:
    """The tenant of an ``avepoint_dynamics`` source (None: the default one, or another source)."""
    from avepoint_dynamics import jobs_setup

    try:
        return jobs_setup(source).tenant
    except (AttributeError, KeyError):
        return None


def _command_of(source: Any) -> str:
    """``backfill`` or ``load``, for the message a run kept waiting shows."""
    from avepoint_dynamics import jobs_setup

    try:
        return "a backfill" if jobs_setup(source).query.is_backfill else "a load"
    except (AttributeError, KeyError):
        return "a run"
