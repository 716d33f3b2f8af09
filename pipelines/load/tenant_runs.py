"""Running tenants: one tenant's run in its own pipeline, and several tenants, up to N at once.

One tenant's run (:func:`run_tenant`) is what ``load --tenant``, a Dagster partition and an Airflow mapped
task each do: the tenant's pipeline (:func:`~avepoint_pipelines.load.tenants.tenant_target`) under its run lock,
the steps of a dlt run with the destination written only where it must be
(:func:`~avepoint_pipelines.load.pipeline.run_in_steps`). Several tenants (:func:`run_tenants`, what
``load --tenants a,b,c --parallel N`` does) run in threads of one process: dlt keeps its context (the
active pipeline, its state, the config section) per thread, and names the threads of its own pools after
the thread that started them, so each tenant's run sees only its own. A failing tenant is reported; the
others go on.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol, cast

from avepoint_dynamics import ConfigError, JobsPage, stop_all
from avepoint_dynamics.dlt_compat import ask_dlt_steps_to_stop, clear_dlt_stop
from dlt.common.pipeline import LoadInfo
from dlt.pipeline.pipeline import Pipeline

from .lease import dataset_lease
from .pipeline import (
    Target,
    exclusive_run,
    make_pipeline,
    prepare_source,
    refresh_views,
    run_in_steps,
)
from .run_log import RunCounts
from .tenants import checked_tenants, tenant_source, tenant_target

logger = logging.getLogger(__name__)

#: Which tenant each thread is running now (thread id → tenant), for log lines that name it.
_RUNNING: dict[int, str] = {}


def tenant_of_thread(thread_id: int | None) -> str | None:
    """The tenant a thread is running now (its log records are that tenant's), or None."""
    return _RUNNING.get(thread_id) if thread_id is not None else None


@dataclass
class TenantResult:
    """How one tenant's run went."""

    tenant: str
    load_info: Any = None
    error: BaseException | None = None
    seconds: float = 0.0
    counts: RunCounts | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class TenantWatch(Protocol):
    """Follows one tenant's run: each page read (from the connector's threads), then the outcome."""

    def __call__(self, page: JobsPage) -> None: ...

    def done(self, result: TenantResult) -> None: ...


def run_tenant(
    tenant: str,
    target: Target,
    *,
    on_page: Callable[[JobsPage], None] | None = None,
    counts: RunCounts | None = None,
    **source_args: Any,
) -> LoadInfo:
    """Load one tenant through its own pipeline (``<pipeline>_<tenant>``) into ``target``'s dataset.

    The source is built first (a config error costs nothing), then the tenant's run lock is taken
    (:class:`~avepoint_pipelines.load.pipeline.PipelineBusy` when a run of this tenant is on in
    this working folder) and its lease in the dataset (:class:`~avepoint_pipelines.load.lease.DatasetBusy`
    when a run of this tenant is on anywhere else).
    The analyst views are left to the caller: once after all tenants.

    Raises:
        Whatever the run raised: config, credentials, the service, the destination.
    """
    into = tenant_target(target, tenant)
    source = prepare_source(tenant_source(tenant, on_page=on_page, **source_args), into)
    pipeline = make_pipeline(into)
    counts = counts if counts is not None else RunCounts(tenant)
    command = "a backfill" if source_args.get("end_time") is not None else "a load"
    with (
        exclusive_run(pipeline),
        dataset_lease(pipeline, tenant, into.duckdb_file, into.lease_seconds, command) as lease,
    ):
        return run_in_steps(pipeline, source, into, counts, lease)


def run_tenants(
    tenants: list[str],
    target: Target | None = None,
    *,
    parallel: int = 1,
    watch: Callable[[str], TenantWatch] | None = None,
    fail_on_rejected: bool = False,
    **source_args: Any,
) -> list[TenantResult]:
    """Load every tenant into ``target``, up to ``parallel`` at once; a failing tenant spares the others.

    Then the analyst views, once, if any tenant loaded. Ctrl-C or SIGTERM stops the tenants not started,
    stops the running ones within seconds (their requests in flight abandoned, dlt's steps at their next
    boundary), waits for them, and is raised again.

    Args:
        tenants: Tenant names (each reads ``[sources.avepoint_dynamics_<name>]``).
        target: The destination and dataset; each tenant's pipeline is named after ``target``'s.
        parallel: Tenants running at once (threads of this process), 1 or more.
        watch: Called as each tenant starts; what it returns gets the tenant's pages and outcome.
        fail_on_rejected: A tenant with jobs set aside has the outcome ``rejected`` in the run log.
        source_args: Arguments for every tenant's source (dlt config fills in the rest).

    Returns:
        One result per tenant, in the order given.

    Raises:
        ConfigError: a tenant name is not valid or repeats, or ``parallel`` is below 1 (nothing ran).

    Example:
        >>> results = run_tenants(["contoso", "fabrikam", "northwind"], parallel=3)
        >>> [(r.tenant, r.ok) for r in results]
        [('contoso', True), ('fabrikam', False), ('northwind', True)]
    """
    names = checked_tenants(tenants)
    if parallel < 1:
        raise ConfigError("parallel", f"{parallel} tenants at once: give 1 or more")
    target = target or Target()

    def one(tenant: str) -> TenantResult:
        watcher = watch(tenant) if watch else None
        result = TenantResult(tenant, counts=RunCounts(tenant, fail_on_rejected))
        started = time.monotonic()
        _RUNNING[threading.get_ident()] = tenant
        try:
            result.load_info = run_tenant(
                tenant, target, on_page=watcher, counts=result.counts, **source_args
            )
        except Exception as error:  # reported per tenant; the others go on
            # The caller reports it (the CLI in one line per tenant); dlt's lookup trace is long.
            logger.debug("failed: %s: %s", type(error).__name__, error)
            result.error = error
        finally:
            _RUNNING.pop(threading.get_ident(), None)
        result.seconds = time.monotonic() - started
        if watcher:
            watcher.done(result)
        return result

    if parallel == 1 or len(names) == 1:
        # In the calling thread: Ctrl-C reaches dlt's steps as it does in a single run.
        results = [one(tenant) for tenant in names]
    else:
        results = _side_by_side(names, one, min(parallel, len(names)))
    loaded = [result for result in results if result.ok]
    if loaded:
        # Once, after every tenant: the views follow the table's columns, whoever loaded.
        refresh_views(cast(Pipeline, loaded[0].load_info.pipeline), target)
    return results


def _side_by_side(
    tenants: list[str], one: Callable[[str], TenantResult], workers: int
) -> list[TenantResult]:
    """``one(tenant)`` for each tenant in ``workers`` threads; results in the tenants' order."""
    # Not named dlt-pool-*: dlt would share one context between threads named so.
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="avepoint-tenant")
    futures: dict[Future[TenantResult], str] = {pool.submit(one, t): t for t in tenants}
    try:
        pending = set(futures)
        while pending:
            _, pending = wait(pending, return_when=FIRST_COMPLETED)
    except BaseException:  # Ctrl-C, SIGTERM: in this (the main) thread only
        for future in futures:
            future.cancel()
        # The tenants' reading stops at once, whatever it has in flight (stopping.py); dlt's steps check
        # its signal flag between items, files and jobs: the running tenants stop there.
        stop_all()
        ask_dlt_steps_to_stop(signal.SIGINT)
        wait(futures)
        clear_dlt_stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    by_tenant = {futures[future]: future.result() for future in futures}
    return [by_tenant[tenant] for tenant in tenants]
