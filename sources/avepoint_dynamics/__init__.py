"""dlt source for the job history of AvePoint Cloud Backup for Dynamics 365.

One job's way: ``jobs`` asks ``incremental`` which windows to read → ``paging`` fetches their pages through
``client`` (token from ``auth``) → ``rows`` types them into Arrow batches → dlt merges them on ``job_id``.

Example:
    >>> import dlt
    >>> from avepoint_dynamics import avepoint_dynamics
    >>> pipeline = dlt.pipeline("avepoint", destination="duckdb", dataset_name="avepoint")
    >>> pipeline.run(avepoint_dynamics(region="us"), loader_file_format="parquet")
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import dlt
import pyarrow as pa
from dlt.sources import DltResource

from .auth import TokenProvider
from .client import JobsClient, JobsPage, RetryPolicy, Window
from .credentials import AvePointCredentials
from .errors import ApiError, AuthError, AvePointError, ConfigError
from .incremental import RunTracker, plan_run
from .paging import WindowReader
from .query import JobsQuery, build_query, resolve_hosts
from .rows import Bounds, JobRows, dlt_columns, rejected_table
from .settings import DEFAULT_MAX_CONCURRENCY, DEFAULT_PAGE_SIZE
from .times import to_micros

__all__ = [
    "ApiError",
    "AuthError",
    "AvePointCredentials",
    "AvePointError",
    "ConfigError",
    "avepoint_dynamics",
    "check_connection",
    "jobs",
    "jobs_setup",
]

logger = logging.getLogger(__name__)

#: Jobs converted to one Arrow table at a time: big enough for fast columnar loading, small for memory.
BATCH_JOBS = 5_000


@dlt.source(name="avepoint_dynamics", max_table_nesting=0)
def avepoint_dynamics(
    credentials: AvePointCredentials = dlt.secrets.value,
    region: str | None = None,
    base_url: str | None = None,
    api_version: str = "v1",
    page_size: Any = DEFAULT_PAGE_SIZE,
    job_type: Any = None,
    status: Any = None,
    organization_id: str | None = None,
    object_type: Any = None,
    initial_start_time: Any = None,
    end_time: Any = None,
    max_concurrency: Any = DEFAULT_MAX_CONCURRENCY,
    lookback_minutes: Any = 10,
    ca_bundle: str | None = None,
    max_attempts: Any = 8,
    tenant: str | None = None,
    on_page: Callable[[JobsPage], None] | None = None,
) -> DltResource:
    """The job history of one AvePoint tenant, as the ``jobs`` table (merge on ``job_id``).

    Every argument comes from ``[sources.avepoint_dynamics]`` in ``.dlt/config.toml`` /
    ``.dlt/secrets.toml`` or ``SOURCES__AVEPOINT_DYNAMICS__<KEY>`` env vars, or can be passed directly.

    Args:
        credentials: The app registration: ``client_id`` and one of ``client_secret``,
            ``private_key`` + ``certificate``, ``pfx_path`` + ``pfx_password``.
        region: AvePoint data center (``us``, ``we``, ``ne``, ``uk``, ``au``, ``jp``, ..., ``gov``,
            ``aos2``, ``fedramp``); sets the API and identity hosts.
        base_url: API root, overriding the region's.
        api_version: ``v1`` (``POST /api/OpenApi/GetJobs``, default) or ``v2`` (``GET /dynamicsbackup/jobs``).
        page_size: Jobs per request, 1..100.
        job_type: ``type`` filter: 0 all, 1 backup, 2 restore, 4 dry run, 8 retention, 16 audit backup
            (codes or names).
        status: ``status`` filter: 2 in progress, 3 finished, 4 failed, 7 finished with exception.
        organization_id: Only this Dynamics organization (GUID).
        object_type: Only this module: 1 Customer Engagement, 2 Unified Operations (v1 only).
        initial_start_time: Where the first scheduled run starts (ISO-8601); default: all history.
        end_time: Makes the run a bounded backfill of ``[initial_start_time, end_time)`` that leaves the
            incremental state alone.
        max_concurrency: Requests in flight at once (1 = strictly sequential).
        lookback_minutes: Each scheduled run re-reads this much before its cursor (late or skewed clocks).
        ca_bundle: Path of a CA bundle to trust (a TLS-inspecting proxy, or the simulator).
        max_attempts: Attempts per request before giving up on transient failures.
        tenant: A name for this tenant; adds a ``tenant`` column to every row.
        on_page: Called with each page fetched (progress reporting).

    Returns:
        The ``jobs`` resource.

    Raises:
        ConfigError: a value is invalid (raised here, before any request).
    """
    api_root, identity_root = resolve_hosts(region, base_url, credentials.identity_url)
    query = build_query(
        base_url=api_root,
        api_version=api_version,
        page_size=page_size,
        job_type=job_type,
        status=status,
        organization_id=organization_id,
        object_type=object_type,
        initial_start_time=initial_start_time,
        end_time=end_time,
        max_concurrency=max_concurrency,
        lookback_minutes=lookback_minutes,
    )
    credentials.msal_credential()  # fail on a bad credential config before dlt starts extracting
    setup = JobsSetup(
        query=query,
        credentials=credentials,
        identity_root=identity_root,
        verify=ca_bundle or True,
        retry=RetryPolicy(max_attempts=_positive("max_attempts", max_attempts)),
        constants={"tenant": tenant} if tenant else {},
    )
    resource = jobs(setup, on_page)
    if tenant:
        # Tenants share the jobs table; job ids are only known to be unique within a tenant.
        resource.apply_hints(
            primary_key=["tenant", "job_id"],
            columns={"tenant": {"name": "tenant", "data_type": "text", "nullable": False}},
        )
    # check_connection reads the same validated settings from here, without extracting anything.
    setattr(resource, "avepoint_setup", setup)  # noqa: B010
    return resource


@dataclass(frozen=True)
class JobsSetup:
    """Everything a run needs, validated: what to ask, who we are, how to connect."""

    query: JobsQuery
    credentials: AvePointCredentials
    identity_root: str
    verify: bool | str
    retry: RetryPolicy
    constants: dict[str, str]

    def connect(self) -> tuple[TokenProvider, JobsClient]:
        tokens = TokenProvider(self.credentials, self.identity_root, verify=self.verify)
        return tokens, JobsClient(self.query, tokens, verify=self.verify, retry=self.retry)


@dlt.resource(name="jobs", primary_key="job_id", write_disposition="merge", columns=dlt_columns())
def jobs(setup: JobsSetup, on_page: Callable[[JobsPage], None] | None = None) -> Iterator[Any]:
    """Every job in the run's windows as typed Arrow batches; bad jobs go to ``jobs_rejected``."""
    query = setup.query
    state = dlt.current.resource_state()
    plan = plan_run(query, state, now=datetime.now(UTC))
    tracker = RunTracker(plan)
    tokens, client = setup.connect()
    rows = JobRows(setup.constants, [_bounds(window) for window in plan.windows])
    logger.info(
        "reading jobs in %s (+%d open-job windows)", plan.new_jobs, len(plan.open_job_windows)
    )
    declared: bool | None = None  # what the package says about duplicates so far
    outside = strays = 0
    try:
        with ThreadPoolExecutor(query.max_concurrency, thread_name_prefix="avepoint-page") as pool:
            reader = WindowReader(client, pool, on_page)
            pending: list[dict[str, Any]] = []
            bounds: list[Bounds] = []
            for item in chain(reader.read_all(plan.windows), [None]):
                if item is not None:
                    window, page_jobs = item
                    pending.extend(page_jobs)
                    bounds.extend([_bounds(window)] * len(page_jobs))
                    if len(pending) < BATCH_JOBS:
                        continue
                batch = rows.to_batch(pending, bounds)
                pending, bounds = [], []
                tracker.add(batch)
                outside += batch.outside
                strays += batch.strays
                if batch.table is not None:
                    deduplicated = not (reader.stats.may_repeat or strays)
                    if deduplicated == declared:
                        yield batch.table
                    else:
                        declared = deduplicated
                        yield dlt.mark.with_hints(batch.table, _deduplicated_hint(deduplicated))
                if batch.rejected:
                    for job in batch.rejected:
                        logger.warning(
                            "job %s set aside in jobs_rejected: %s", job.job_id, job.reason
                        )
                    yield dlt.mark.with_hints(
                        rejected_table(batch.rejected),
                        dlt.mark.make_hints(
                            # Its own table, with none of the jobs table's keys or column hints (dlt
                            # merges non-empty column hints of a variant with the resource's).
                            table_name="jobs_rejected",
                            write_disposition="append",
                            primary_key=[],
                            columns={},
                        ),
                        create_table_variant=True,
                    )
    finally:
        client.close()
    # Arrow's allocator (mimalloc) keeps the pages of every freed batch for reuse; nothing here reuses them
    # and DuckDB's load comes next, with its own allocator: hand them back (~50 MB at 100,000 jobs, bench/).
    pa.default_memory_pool().release_unused()
    if not plan.is_backfill:
        tracker.commit(state)
    if outside or strays:
        logger.warning(
            "the API sent %d jobs that started outside the time window asked for (%d of them outside "
            "every window of this run, loaded anyway); does it filter on startTime?",
            outside + strays,
            strays,
        )
    stats = reader.stats
    logger.info(
        "read %d jobs in %d pages (%d requests, %d tokens, %d windows re-read); %d open, %d rejected",
        stats.jobs,
        stats.pages,
        client.requests_sent,
        tokens.tokens_fetched,
        stats.rereads,
        len(tracker.open_now),
        tracker.rejected,
    )


def _bounds(window: Window) -> Bounds:
    return (to_micros(window.start) if window.start is not None else None, to_micros(window.end))


def _deduplicated_hint(deduplicated: bool) -> Any:
    """Tell the merge whether this run's rows are already unique by key.

    When they are (every window's pages held exactly the total's number of distinct jobs, windows never
    overlap and each job is kept from its own window only), dlt skips its ``ROW_NUMBER()`` pass over the
    staging table: ~3x less merge time (bench/). A run that re-read a window, paged without a total or
    kept a job from outside every window declares duplicates, and dlt deduplicates as before.
    """
    return dlt.mark.make_hints(additional_table_hints={"x-stage-data-deduplicated": deduplicated})


def check_connection(source: Any = None, **source_args: Any) -> dict[str, Any]:
    """Prove the credentials and the API work: get a token, ask for one job, load nothing.

    Args:
        source: An ``avepoint_dynamics(...)`` source; built from ``source_args`` and dlt config if None.
        source_args: The same arguments as :func:`avepoint_dynamics`.

    Returns:
        ``{"api_url", "api_version", "identity_url", "total_jobs"}``.

    Raises:
        ConfigError, AuthError, ApiError: with one line saying what to fix.

    Example:
        >>> check_connection(region="us")["total_jobs"]
        18422
    """
    source = source if source is not None else avepoint_dynamics(**source_args)
    setup = jobs_setup(source)
    _tokens, client = setup.connect()
    try:
        window = Window(setup.query.initial_start_time, setup.query.end_time or datetime.now(UTC))
        page = client.fetch_page(window, 1, 1)
    finally:
        client.close()
    return {
        "api_url": setup.query.base_url,
        "api_version": setup.query.api_version,
        "identity_url": setup.identity_root,
        "total_jobs": page.total,
    }


def jobs_setup(source: Any) -> JobsSetup:
    """The validated settings behind an ``avepoint_dynamics(...)`` source (query, hosts, credentials).

    Example:
        >>> jobs_setup(avepoint_dynamics(region="we")).query.base_url
        'https://graph-we.avepointonlineservices.com'
    """
    setup: JobsSetup = getattr(source.resources["jobs"], "avepoint_setup")  # noqa: B009 - set by the source
    return setup


def _positive(key: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"{value!r} is not a whole number >= 1") from None
    if number < 1 or isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not a whole number >= 1")
    return number
