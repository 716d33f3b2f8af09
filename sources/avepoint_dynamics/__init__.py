"""dlt source for the job history of AvePoint Cloud Backup for Dynamics 365.

One job's way: the ``jobs`` resource hands the run to ``run`` (``JobsRun``), which plans it from the state
(``incremental``: the cursor and the followed jobs; ``following`` and ``plan``: the ranges and requests,
by how ``service`` found the window is read) → ``paging`` fetches the ranges' pages through ``client``
(token from ``auth``) → ``rows`` types them into Arrow batches → dlt merges them into ``jobs`` on ``job_id``
and commits the new state with the load package.

One resource, three tables: ``jobs``; ``jobs_rejected`` (jobs that cannot become rows, one row each);
``_avepoint_runs`` (one row per run). ``check_connection`` and ``check_service`` ask the API without
loading anything.

Example:
    >>> import dlt
    >>> from avepoint_dynamics import avepoint_dynamics
    >>> pipeline = dlt.pipeline("avepoint", destination="duckdb", dataset_name="avepoint")
    >>> pipeline.run(avepoint_dynamics(region="us"), loader_file_format="parquet")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import dlt
from dlt.sources import DltResource

from .config_keys import check_section_keys
from .credentials import AvePointCredentials
from .defaults import DUCKDB_DEDUP_SETTINGS, load_must_deduplicate, set_duckdb_defaults
from .errors import (
    ApiError,
    AuthError,
    AvePointError,
    ConfigError,
    ContractError,
    UnavailableError,
)
from .incremental import tenant_state
from .interval import join_interval, scheduler_interval
from .model import JobsPage, Window
from .query import base_url_from, build_query, resolve_hosts
from .rejected import DELETED_COLUMN
from .retries import RetryPolicy
from .rows import dlt_columns
from .run import REJECTED_TABLE, JobsRun
from .run_log import RUN_COLUMNS, RUNS_TABLE, RunRecord
from .service import ServiceFindings, probe_service
from .settings import DEFAULT_MAX_CONCURRENCY, DEFAULT_PAGE_SIZE
from .setup import JobsSetup
from .state import ConnectorState, read_state
from .stopping import RunStopped, stop_all
from .times import USER_TIME_EXAMPLES, parse_user_time

__all__ = [
    "DUCKDB_DEDUP_SETTINGS",
    "RUNS_TABLE",
    "USER_TIME_EXAMPLES",
    "ApiError",
    "AuthError",
    "AvePointCredentials",
    "AvePointError",
    "ConfigError",
    "ConnectorState",
    "ContractError",
    "JobsPage",
    "RunRecord",
    "RunStopped",
    "ServiceFindings",
    "UnavailableError",
    "avepoint_dynamics",
    "check_config_keys",
    "check_connection",
    "check_service",
    "jobs",
    "jobs_setup",
    "load_must_deduplicate",
    "parse_user_time",
    "read_state",
    "stop_all",
]


@dlt.source(name="avepoint_dynamics", max_table_nesting=0)
def avepoint_dynamics(
    credentials: AvePointCredentials = dlt.secrets.value,
    region: str | None = None,
    base_url: str | None = None,
    api_version: str = "v1",
    page_size: int = DEFAULT_PAGE_SIZE,
    job_type: str | int | None = None,
    status: str | int | None = None,
    organization_id: str | None = None,
    object_type: str | int | None = None,
    initial_start_time: str | datetime | None = None,
    end_time: str | datetime | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    lookback_minutes: int = 10,
    open_job_max_age_days: int = 30,
    ca_bundle: str | None = None,
    max_attempts: int = 8,
    tenant: str | None = None,
    allow_external_schedulers: bool | None = None,
    on_page: Callable[[JobsPage], None] | None = None,
    on_run: Callable[[RunRecord], None] | None = None,
) -> DltResource:
    """The job history of one AvePoint tenant, as the ``jobs`` table (merge on ``job_id``).

    Every argument comes from ``[sources.avepoint_dynamics]`` in ``.dlt/config.toml`` /
    ``.dlt/secrets.toml`` or ``SOURCES__AVEPOINT_DYNAMICS__<KEY>`` env vars, or can be passed directly.
    dlt coerces what a provider holds to each argument's type (``"5"`` from an env var is 5) and refuses
    what it cannot (``ConfigValueCannotBeCoercedException``, naming the key); ranges, names and dates
    are checked here (``ConfigError``), for values passed directly too.

    Args:
        credentials: The app registration: ``client_id`` and one of ``client_secret``,
            ``private_key`` + ``certificate``, ``pfx_path`` + ``pfx_password``.
        region: AvePoint data center (``us``, ``we``, ``ne``, ``uk``, ``au``, ``jp``, ..., ``gov``,
            ``aos2``, ``fedramp``); sets the API and identity hosts.
        base_url: API root, overriding the region's.
        api_version: ``v1`` (``POST /api/OpenApi/GetJobs``, default) or ``v2`` (``GET /dynamicsbackup/jobs``).
        page_size: Jobs per request, 1..100.
        job_type: ``type`` filter: 0 all, 1 backup, 2 restore, 4 dry run, 8 retention, 16 audit backup,
            32 export (codes or names).
        status: ``status`` filter: 2 in progress, 3 finished, 4 failed, 7 finished with exception.
        organization_id: Only this Dynamics organization (GUID).
        object_type: Only this module: 1 Customer Engagement, 2 Unified Operations (v1 only).
        initial_start_time: Where the first scheduled run starts (ISO-8601); default: all history.
        end_time: Makes the run a bounded backfill of ``[initial_start_time, end_time)``: the cursor
            stays; the jobs it finds not final are followed like any.
        max_concurrency: Requests in flight at once (1 = strictly sequential).
        lookback_minutes: Each scheduled run re-reads this much before its cursor (jobs the API shows
            late). The window's end is the service's time, never this machine's.
        open_job_max_age_days: A job not final this many days after it started is no longer followed.
        ca_bundle: Path of a CA bundle to trust (a TLS-inspecting proxy, or the simulator).
        max_attempts: Attempts per request before giving up on transient failures.
        tenant: A name for this tenant; adds a ``tenant`` column to every row, and keeps this tenant's
            state apart from other tenants' on the same pipeline.
        allow_external_schedulers: Join the interval an external scheduler hands the run through dlt
            (``DLT_INTERVAL_START``/``DLT_INTERVAL_END``, Airflow's data interval, or one set in code):
            the run is then a bounded backfill of that interval, the cursor stays. Unset: dlt's
            ``DLT_ALLOW_EXTERNAL_SCHEDULERS`` decides, as for dlt's own incrementals; default off.
        on_page: Called with each page fetched (progress reporting).
        on_run: Called with what the run did once it is read (its ``_avepoint_runs`` row).

    Returns:
        The ``jobs`` resource.

    Raises:
        ConfigError: a value is invalid (raised here, before any request).
    """
    _check_config_keys()
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
        open_job_max_age_days=open_job_max_age_days,
        base_url_from=base_url_from(region, base_url),
    )
    interval = scheduler_interval(allow_external_schedulers)
    if interval is not None:
        query = join_interval(query, interval)
    credentials.client_credential()  # fail on a bad credential config before dlt starts extracting
    # DuckDB loads this source's merge in bounded memory unless the user configured it (defaults.py).
    set_duckdb_defaults()
    setup = JobsSetup(
        query=query,
        credentials=credentials,
        identity_root=identity_root,
        verify=ca_bundle or True,
        retry=RetryPolicy(max_attempts=_positive("max_attempts", max_attempts)),
        tenant=_tenant(tenant),
    )
    resource = jobs(setup, on_page, on_run)
    if setup.tenant:
        # Tenants share the jobs table; job ids are only known to be unique within a tenant.
        resource.apply_hints(
            primary_key=["tenant", "job_id"],
            columns={"tenant": {"name": "tenant", "data_type": "text", "nullable": False}},
        )
    _declare_rejected_table(resource, setup.tenant)
    _declare_runs_table(resource)
    if query.status_can_be_left:
        # status = 2 (or a code nobody documented): a job that moves on must leave the table.
        resource.apply_hints(
            columns={
                DELETED_COLUMN: {"name": DELETED_COLUMN, "data_type": "bool", "hard_delete": True}
            }
        )
    # check_connection reads the same validated settings from here, without extracting anything.
    setattr(resource, "avepoint_setup", setup)  # noqa: B010
    return resource


@dlt.resource(name="jobs", primary_key="job_id", write_disposition="merge", columns=dlt_columns())
def jobs(
    setup: JobsSetup,
    on_page: Callable[[JobsPage], None] | None = None,
    on_run: Callable[[RunRecord], None] | None = None,
) -> Iterator[Any]:
    """Every job in the run's ranges as typed Arrow batches; bad jobs go to ``jobs_rejected``.

    Plan (the cursor and the followed jobs), read (pages, concurrently), yield (Arrow batches), commit
    (the state, with the load package): :class:`avepoint_dynamics.run.JobsRun`.
    """
    state = tenant_state(dlt.current.resource_state(), setup.tenant)
    # What the service does with a request is kept beside the cursors: a reset of those keeps it.
    service = dlt.current.source_state().setdefault("service", {})
    yield from JobsRun(setup, state, on_page, service_state=service, on_run=on_run).batches()


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
    tokens, client = setup.connect()
    try:
        query = setup.query
        page = client.fetch_page(
            Window(query.initial_start_time, query.end_time, query.status), 1, 1
        )
    finally:
        client.close()
        tokens.close()
    return {
        "api_url": setup.query.base_url,
        "api_version": setup.query.api_version,
        "identity_url": setup.identity_root,
        "total_jobs": page.total,
    }


def check_service(source: Any = None, **source_args: Any) -> ServiceFindings:
    """Learn how the tenant's service reads requests (``check --deep``): about 15 to 25 requests, nothing loaded.

    What its time window selects (start, overlap, finish, ignored) and how it reads each bound, whether
    running jobs are in windows, the order, the largest page size, the answer's fields. A ``load`` learns
    the same by itself on its first run and keeps it in the pipeline's state.

    Args:
        source: An ``avepoint_dynamics(...)`` source; built from ``source_args`` and dlt config if None.
        source_args: The same arguments as :func:`avepoint_dynamics`.

    Returns:
        The findings; ``findings.lines()`` says them in words.

    Example:
        >>> check_service(region="us").window_selects
        'start'
    """
    source = source if source is not None else avepoint_dynamics(**source_args)
    setup = jobs_setup(source)
    tokens, client = setup.connect()
    try:
        return probe_service(client)
    finally:
        client.close()
        tokens.close()


def jobs_setup(source: Any) -> JobsSetup:
    """The validated settings behind an ``avepoint_dynamics(...)`` source (query, hosts, credentials).

    Example:
        >>> jobs_setup(avepoint_dynamics(region="we")).query.base_url
        'https://graph-we.avepointonlineservices.com'
    """
    setup: JobsSetup = getattr(source.resources["jobs"], "avepoint_setup")  # noqa: B009 - set by the source
    return setup


def _declare_rejected_table(resource: DltResource, tenant: str | None) -> None:
    """``jobs_rejected``: a variant of the resource's table with none of the ``jobs`` columns.

    Declared here, before extraction: hints of a variant start as a copy of the resource's, and empty
    ``columns`` clear them (dlt merges non-empty ones into the copy); the hard-delete column comes next.
    """
    key = ["tenant", "rejection_key"] if tenant else ["rejection_key"]
    resource.apply_hints(
        table_name=REJECTED_TABLE,
        write_disposition="merge",
        primary_key=key,
        columns={},
        create_table_variant=True,
    )
    resource.apply_hints(
        table_name=REJECTED_TABLE,
        columns={
            DELETED_COLUMN: {"name": DELETED_COLUMN, "data_type": "bool", "hard_delete": True}
        },
        create_table_variant=True,
    )


#: Keys of ``[sources.avepoint_dynamics]`` that the CLI's tenant runs read (not the source).
TENANT_KEYS = ("tenants_differ_by",)


def known_config_keys() -> list[str]:
    """Every key the source's config sections may hold (dotted: ``credentials.client_id``)."""
    import inspect

    names = [
        name
        for name in inspect.signature(avepoint_dynamics).parameters
        if name not in ("credentials", "on_page", "on_run")
    ]
    fields = [f"credentials.{name}" for name in AvePointCredentials.get_resolvable_fields()]
    return [*names, "credentials", *fields, *TENANT_KEYS]


def check_config_keys(section: str = "avepoint_dynamics") -> None:
    """Refuse a key nothing reads under ``sources.<section>`` and the shared section (a typo).

    The source checks its own sections when it is built; a caller checks first when a misspelt key
    may be the reason a required one is missing (``credentials.clientid``).

    Raises:
        ConfigError: naming the unknown key, where it is written, and the closest known key.
    """
    known = known_config_keys()
    for name in dict.fromkeys([section, "avepoint_dynamics"]):
        check_section_keys(name, known)


def _check_config_keys() -> None:
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.config_section_context import ConfigSectionContext

    sections = Container()[ConfigSectionContext].sections
    check_config_keys(sections[1] if len(sections) > 1 else "avepoint_dynamics")


def _declare_runs_table(resource: DltResource) -> None:
    """``_avepoint_runs``: one row per run, appended, with none of the ``jobs`` hints (no key, no merge)."""
    resource.apply_hints(
        table_name=RUNS_TABLE,
        write_disposition="append",
        primary_key=[],
        columns={},
        create_table_variant=True,
    )
    resource.apply_hints(table_name=RUNS_TABLE, columns=RUN_COLUMNS, create_table_variant=True)


def _tenant(value: Any) -> str | None:
    if value is None or not str(value).strip():
        return None
    return str(value).strip()


def _positive(key: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"{value!r} is not a whole number >= 1") from None
    if number < 1 or isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not a whole number >= 1")
    return number
