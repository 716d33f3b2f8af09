"""The commands of ``avepoint-dynamics``: what each does with its parsed options, and its exit code.

The parser and the entry point are in :mod:`avepoint_pipelines.cli`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from avepoint_dynamics import (
    USER_TIME_EXAMPLES,
    ConfigError,
    RunRecord,
    avepoint_dynamics,
    check_config_keys,
    check_connection,
    check_service,
    parse_user_time,
)
from avepoint_dynamics.state import JOBS_RESOURCE, read_state, service_state, tenant_state_path

from ..analytics.report import ReportError, write_report
from ..failures import (
    EXIT_OK,
    EXIT_REJECTED,
    UsageError,
    causes,
    chain_lines,
    describe_failure,
)
from ..load.pipeline import (
    DEFAULT_DATASET,
    Target,
    default_pipelines_dir,
    make_pipeline,
    rejected_jobs,
    run_load,
)
from ..load.run_log import RunCounts
from ..load.tenants import tenant_target
from .console import Progress, TenantProgress, plural
from .source_options import source_args

logger = logging.getLogger("avepoint_dynamics.cli")
T = TypeVar("T")

ISO_EXAMPLES = USER_TIME_EXAMPLES


def iso_moment(flag: str, text: str) -> datetime:
    """A command-line date or time, ISO-8601 only (a date is its midnight, no offset is UTC).

    ``11/01/2026`` or ``Nov 1 2026`` are refused rather than guessed: one reads them as 1 November,
    another as 11 January.

    Raises:
        UsageError: naming ``flag`` and the accepted form.
    """
    try:
        return parse_user_time(text)  # the source's own parser: a flag and a config key agree
    except ValueError as error:
        raise UsageError(f"{flag} {error}") from None


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _target(args: argparse.Namespace) -> Target:
    destination = args.destination
    memory = _none_or(getattr(args, "duckdb_memory_limit", None))
    threads = _none_or(getattr(args, "duckdb_threads", None))
    return Target(
        destination=destination,
        dataset_name=getattr(args, "dataset", DEFAULT_DATASET),
        pipeline_name=args.pipeline_name,
        duckdb_path=args.duckdb_path,
        pipelines_dir=args.pipelines_dir or default_pipelines_dir(destination, args.duckdb_path),
        duckdb_memory_limit=memory,
        duckdb_threads=int(threads) if threads else None,
        table_format=getattr(args, "table_format", None),
    )


def _none_or(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() in ("", "none") else value.strip()


# --------------------------------------------------------------------------- commands
def cmd_load(args: argparse.Namespace) -> int:
    if isinstance(getattr(args, "initial_start_time", None), str):
        args.initial_start_time = iso_moment("--initial-start-time", args.initial_start_time)
    tenants = _tenants_of(args)
    if tenants:
        return _load_tenants(args, tenants)
    check_config_keys()
    progress = Progress(args.live, quiet=args.quiet or args.json)
    counts = RunCounts(fail_on_rejected=args.fail_on_rejected)
    read: list[RunRecord] = []
    started = datetime.now(UTC)
    try:
        source = avepoint_dynamics(**source_args(args), on_page=progress, on_run=read.append)
        info = run_load(source, _target(args), counts)
    except (Exception, KeyboardInterrupt) as error:
        if args.json:
            _print_json(_failed_record(error, read, started))
        raise
    finally:
        progress.close()
    rejected = rejected_jobs(info)
    record = counts.record or (read[-1] if read else RunRecord())
    code = _rejected_outcome(rejected, args)
    if args.json:
        if counts.record is None:  # a destination without SQL: what the run itself knows
            record.outcome, record.exit_code = ("ok" if code == EXIT_OK else "rejected"), code
        _print_json(record)
    elif not args.quiet:
        packages = len(getattr(info, "loads_ids", []) or [])
        print(
            f"{_summary(record, counts.record is not None)} into "
            f"{info.destination_name}:{info.dataset_name} ({plural(packages, 'package')})"
            + (f"; {plural(rejected, 'job')} set aside in jobs_rejected" if rejected else "")
        )
    return code


def _summary(record: RunRecord, counted: bool) -> str:
    """``read 3,000 jobs from 30 pages; loaded 120 (100 new, 20 updated, 0 deleted)``."""
    read = f"read {plural(record.jobs_read, 'job')} from {plural(record.pages, 'page')}"
    if not counted or record.jobs_inserted is None or record.jobs_updated is None:
        return f"{read}; loaded {plural(record.jobs_yielded, 'job')} (rows not counted here)"
    written = record.jobs_inserted + record.jobs_updated
    return (
        f"{read}; loaded {plural(written, 'job')} ({record.jobs_inserted:,} new, "
        f"{record.jobs_updated:,} updated, {record.jobs_deleted:,} deleted)"
    )


def _print_json(record: RunRecord) -> None:
    print(json.dumps(record.as_dict(), indent=2))


def _failed_record(error: BaseException, read: list[RunRecord], started: datetime) -> RunRecord:
    """A failed run's record for ``--json``: what it read if it got that far, its exit code, no load."""
    _, code = describe_failure(error)
    record = read[-1] if read else RunRecord()
    record.outcome = {130: "interrupted", 143: "terminated", 75: "busy"}.get(code, "failed")
    record.exit_code = code
    record.load_id = None  # nothing was loaded: a run that fails writes no row
    record.jobs_inserted = record.jobs_updated = None
    if record.started_at is None:
        record.started_at = started  # this machine's clock: the service never answered
    return record


def _tenants_of(args: argparse.Namespace) -> list[str]:
    """The tenants to load (``--tenants a,b`` or ``--tenant a``); empty for the one default tenant."""
    listed = getattr(args, "tenants", None)
    one = getattr(args, "tenant", None)
    parallel = getattr(args, "parallel", None)
    if listed and one:
        raise UsageError(
            "--tenant and --tenants both given: --tenant NAME for one, --tenants a,b for several"
        )
    tenants = [name.strip() for name in listed.split(",") if name.strip()] if listed else []
    if listed and not tenants:
        raise UsageError(f"--tenants {listed!r} names no tenant; give them like --tenants a,b")
    if one:
        tenants = [one.strip()]
    if parallel is not None:
        if parallel < 1:
            raise UsageError(f"--parallel {parallel}: give 1 or more tenants at once")
        if len(tenants) < 2 and parallel > 1:
            raise UsageError(
                f"--parallel {parallel} runs several tenants at once: name them with --tenants a,b,c"
            )
    return tenants


def _rejected_outcome(rejected: int, args: argparse.Namespace, tenant: str = "") -> int:
    """Warn about jobs set aside; with ``--fail-on-rejected`` they make the run fail."""
    if not rejected:
        return EXIT_OK
    who = f"tenant {tenant}: " if tenant else ""
    logger.warning(
        "%s%s set aside in jobs_rejected (see its reason column); each is read again every run, "
        "except one without a start time found in a time span over a day long (its own warning "
        "names the backfill that reads it again)",
        who,
        plural(rejected, "job"),
    )
    if args.fail_on_rejected:
        print(
            f"error: {who}{plural(rejected, 'job')} set aside in jobs_rejected (--fail-on-rejected)",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    return EXIT_OK


def _load_tenants(args: argparse.Namespace, tenants: list[str]) -> int:
    """Each tenant in its own pipeline, up to ``--parallel`` at once; the exit code is the worst tenant's."""
    from ..load.tenant_runs import run_tenants

    progress: dict[str, TenantProgress] = {}

    def watch(tenant: str) -> TenantProgress:
        progress[tenant] = TenantProgress(args.live, quiet=args.quiet or args.json, label=tenant)
        return progress[tenant]

    shared = {k: v for k, v in source_args(args).items() if k != "tenant"}
    try:
        results = run_tenants(
            tenants,
            _target(args),
            parallel=args.parallel or 1,
            watch=watch,
            fail_on_rejected=args.fail_on_rejected,
            **shared,
        )
    finally:
        args.live.finish()
    worst = EXIT_OK
    records: list[dict[str, object]] = []
    for result in results:
        if result.ok:
            rejected = rejected_jobs(result.load_info, result.tenant)
            record = result.counts.record if result.counts else None
            if not args.quiet and not args.json:
                info = result.load_info
                aside = (
                    f"; {plural(rejected, 'job')} set aside in jobs_rejected" if rejected else ""
                )
                if record is None:
                    read = progress[result.tenant]
                    record = RunRecord(jobs_read=read.jobs, pages=read.pages)
                summary = _summary(
                    record, result.counts is not None and result.counts.record is not None
                )
                print(
                    f"tenant {result.tenant}: {summary} into "
                    f"{info.destination_name}:{info.dataset_name} "
                    f"in {result.seconds:,.1f} s{aside}"
                )
            code = _rejected_outcome(rejected, args, result.tenant)
            worst = max(worst, code)
            records.append((record or RunRecord(tenant=result.tenant, exit_code=code)).as_dict())
            continue
        assert result.error is not None
        message, code = describe_failure(result.error)
        print(f"error: tenant {result.tenant}: {message}", file=sys.stderr)
        if args.verbose:
            for line in chain_lines(result.error):
                print(f"  {line}", file=sys.stderr)
        worst = max(worst, code)
        records.append(RunRecord(tenant=result.tenant, outcome="failed", exit_code=code).as_dict())
    if args.json:
        outcome = "ok" if worst == EXIT_OK else "failed"
        print(json.dumps({"outcome": outcome, "exit_code": worst, "tenants": records}, indent=2))
    return worst


def cmd_backfill(args: argparse.Namespace) -> int:
    start = iso_moment("--from", args.from_)
    if args.to:
        end = iso_moment("--to", args.to)
        if end <= start:
            raise UsageError(
                f"--from {_iso(start)} is not before --to {_iso(end)}: the range [--from, --to) "
                "is empty"
            )
        args.initial_start_time, args.end_time = start, end
        return cmd_load(args)
    # Without --to, the range ends at the service's time now (not this machine's, which may be off):
    # still bounded, so the cursor stays where the scheduled runs put it. A --from days ahead of this
    # machine's clock is a typo whatever the clocks say: refused before any request.
    local_now = datetime.now(UTC)
    if start > local_now + timedelta(days=1):
        raise UsageError(
            f"--from {_iso(start)} is not before now ({_iso(local_now)}, --to's default): the range "
            "[--from, --to) is empty"
        )
    args.initial_start_time, args.end_time = start, "now"
    try:
        return cmd_load(args)
    except Exception as error:
        cause = _config_error_of(error)
        if cause is not None and cause.key == "initial_start_time":
            raise UsageError(f"--from {cause.problem}") from None
        raise


def _config_error_of(error: BaseException) -> ConfigError | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConfigError):
            return seen
        seen = getattr(seen, "exception", None) or seen.__cause__ or seen.__context__
    return None


def cmd_check(args: argparse.Namespace) -> int:
    check_config_keys()
    if args.deep:
        return _check_deep(args)
    result = check_connection(**source_args(args))
    if getattr(args, "json", False):
        print(json.dumps({"ok": True, "deep": False, **result}))
        return EXIT_OK
    print(
        f"ok: token from {result['identity_url']}; the jobs API at {result['api_url']} "
        f"({result['api_version']}) holds {plural(result['total_jobs'], 'job')}; nothing was loaded"
    )
    return EXIT_OK


def _check_deep(args: argparse.Namespace) -> int:
    """How the tenant's service reads requests: about 15 to 25 requests, nothing loaded."""
    findings = check_service(**source_args(args))
    if getattr(args, "json", False):
        print(json.dumps({"ok": True, "deep": True, **findings.as_dict()}))
        return EXIT_OK
    print(
        f"the jobs API at {findings.base_url} ({findings.api_version}), checked at "
        f"{findings.checked_at} (service time); nothing was loaded:"
    )
    for line in findings.lines():
        print(f"  {line}")
    if findings.window_selects not in (None, "start"):
        print(
            "  load reads this service its own way (see README, 'How the time window is read'); "
            "it learns the same by itself on its first run"
        )
    return EXIT_OK


def cmd_state(args: argparse.Namespace) -> int:
    tenant = getattr(args, "tenant", None)
    target = tenant_target(_target(args), tenant) if tenant else _target(args)
    if not _has_working_folder(target):
        raise UsageError(_no_state_here(target, tenant))
    pipeline = make_pipeline(target)
    state = read_state(pipeline, tenant)
    open_jobs = state.open_jobs
    newest_abandoned = sorted(state.abandoned_jobs.items(), key=lambda item: item[1])[-20:]
    report = {
        "pipeline": pipeline.pipeline_name,
        "pipelines_dir": target.pipelines_dir,
        "state_file": os.path.join(pipeline.working_dir, "state.json"),
        "tenant": tenant,
        "cursor": state.cursor,
        "service_time": state.service_time,
        "filters": state.filters,
        "open_jobs": len(open_jobs),
        "open_job_watermark": min(open_jobs.values()) if open_jobs else None,
        "open_oldest": [
            {"job_id": job_id, "start_time": start}
            for job_id, start in sorted(open_jobs.items(), key=lambda item: item[1])[:20]
        ],
        "set_aside_jobs": state.set_aside,
        "abandoned_jobs": state.abandoned_count,
        "abandoned_newest": [
            {"job_id": job_id, "start_time": start} for job_id, start in newest_abandoned
        ],
    }
    if state.tenants:
        report["tenants"] = list(state.tenants)
    if state.other_filters:
        # Earlier runs under other filters: a run under them again goes on from their own state.
        report["other_filters"] = {
            key: {"cursor": parked.get("cursor"), "open_jobs": len(parked.get("open_jobs") or {})}
            for key, parked in sorted(state.other_filters.items())
        }
    if tenant is None and (siblings := _tenant_pipelines(target)):
        report["tenant_pipelines"] = siblings
    # How the service reads requests, as the first load learnt it (check --deep says the same).
    service = service_state(pipeline)
    if len(service) == 1:
        report["service"] = next(iter(service.values()))
    elif service:
        report["service"] = service
    print(json.dumps(report) if getattr(args, "json", False) else json.dumps(report, indent=2))
    return EXIT_OK


def _has_working_folder(target: Target) -> bool:
    assert target.pipelines_dir is not None
    return os.path.isdir(os.path.join(target.pipelines_dir, target.pipeline_name))


def _tenant_pipelines(target: Target) -> list[str]:
    """The tenants loaded through ``<pipeline>_<tenant>`` pipelines beside ``target``'s."""
    assert target.pipelines_dir is not None
    prefix = f"{target.pipeline_name}_"
    try:
        names = os.listdir(target.pipelines_dir)
    except OSError:
        return []
    return sorted(
        name[len(prefix) :]
        for name in names
        if name.startswith(prefix)
        and os.path.isfile(os.path.join(target.pipelines_dir, name, "state.json"))
    )


def _no_state_here(target: Target, tenant: str | None) -> str:
    """Why there is no state to show, and where the states that exist are."""
    assert target.pipelines_dir is not None
    where = f"{target.pipelines_dir}/{target.pipeline_name}"
    text = f"no state: pipeline {target.pipeline_name!r} never ran here ({where} does not exist)"
    if target.destination == "duckdb":
        text += f"; check --duckdb-path (now {target.duckdb_path}) and --pipelines-dir"
    else:
        text += "; check --pipelines-dir (a load restores the state from the destination)"
    tenants = _tenant_pipelines(target) if tenant is None else []
    if tenants:
        text += f"; tenants loaded there: {', '.join(tenants)} (state --tenant NAME)"
    return text


def cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("reset: not on a terminal, so there is no one to ask: use --yes")
    tenant = getattr(args, "tenant", None)
    base = _target(args)
    targets: list[tuple[Target, str | None]] = (
        [(tenant_target(base, tenant), tenant)]
        if tenant
        else [(base, None), *((tenant_target(base, t), t) for t in _tenant_pipelines(base))]
    )
    what = (
        f"tenant {tenant!r} of pipeline {base.pipeline_name!r}"
        if tenant
        else f"pipeline {base.pipeline_name!r}"
        + (
            f" and of its tenants {', '.join(str(t) for _, t in targets[1:])}"
            if targets[1:]
            else ""
        )
    )
    if not args.yes:
        answer = input(f"Forget the incremental state of {what}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return EXIT_OK
    forgotten = [t for target, t in targets if _forget(target, t)]
    if not forgotten:
        print(f"nothing to forget: {_no_state_here(targets[0][0], tenant)}")
        return EXIT_OK
    print(f"state of {what} forgotten: the next load reads the whole history again")
    return EXIT_OK


def _forget(target: Target, tenant: str | None) -> bool:
    """Forget one pipeline's jobs state (a tenant's, in a tenant's pipeline); False if it never ran."""
    from dlt.pipeline.exceptions import PipelineNeverRan
    from dlt.pipeline.helpers import pipeline_drop

    from ..load.lease import dataset_lease
    from ..load.pipeline import exclusive_run

    on_disk = target.destination == "duckdb" and os.path.exists(target.duckdb_path)
    if not _has_working_folder(target) and not on_disk:
        return False  # never loaded here: nothing to forget, and no folder created for it
    pipeline = make_pipeline(target)
    lease = dataset_lease(pipeline, tenant, target.duckdb_file, target.lease_seconds, "a reset")
    with exclusive_run(pipeline), lease:
        try:
            pipeline.sync_destination()  # the state lives in the destination too: forget it there
        except PipelineNeverRan:
            return False
        if not read_state(pipeline).loaded:
            return False
        if tenant:
            pipeline_drop(pipeline, state_paths=tenant_state_path(tenant), state_only=True)()
        else:
            pipeline_drop(pipeline, resources=JOBS_RESOURCE, state_only=True)()
    return True


def cmd_alert(args: argparse.Namespace) -> int:
    """Exit 6 with one line per organization whose last successful backup is older than the threshold."""
    from ..analytics.freshness import EXIT_STALE, check_freshness, organization_names
    from ..analytics.run_freshness import DEFAULT_RUN_STALE_HOURS, check_runs

    target = _target(args)
    if target.destination == "duckdb" and not os.path.exists(target.duckdb_path):
        raise UsageError(
            f"no DuckDB file at {os.path.abspath(target.duckdb_path)}: check --duckdb-path "
            "(alert reads what load wrote)"
        )
    if args.stale_hours is not None and not (0 < args.stale_hours < float("inf")):
        raise UsageError(f"--stale-hours {args.stale_hours:g} is not a positive number of hours")
    pipeline = make_pipeline(target)
    freshness = _while_not_busy(
        lambda: check_freshness(
            pipeline,
            stale_after_hours=args.stale_hours,
            organizations=organization_names(args.organization or []),
        ),
        target,
        args.wait,
    )
    run_hours = args.run_stale_hours or DEFAULT_RUN_STALE_HOURS
    if not (0 < run_hours < float("inf")):
        raise UsageError(f"--run-stale-hours {run_hours:g} is not a positive number of hours")
    runs = _while_not_busy(lambda: check_runs(pipeline, run_hours), target, args.wait)
    silent = [tenant for tenant in runs if tenant.stale]
    if args.json:
        found = freshness.as_dict()
        found["runs"] = [tenant.as_dict() for tenant in runs]
        found["ok"] = found["ok"] and not silent
        print(json.dumps(found, indent=2))
    elif freshness.stale or silent:
        for line in [*(tenant.line() for tenant in silent), *freshness.lines()]:
            print(line)
    elif not args.quiet:
        print(freshness.summary())
    return EXIT_STALE if freshness.stale or silent else EXIT_OK


def _while_not_busy(read: Callable[[], T], target: Target, wait: float) -> T:
    """``read()``, again while a load holds the DuckDB file's lock, for up to ``wait`` seconds.

    A monitor polling ``alert`` during a load must not page for a lock: past ``wait`` the answer is
    "busy" (exit 75, try again), never "the destination failed".
    """
    from ..load.pipeline import PipelineBusy

    deadline = time.monotonic() + max(0.0, wait)
    pause = 0.1
    while True:
        try:
            return read()
        except Exception as error:
            if not any("Could not set lock on file" in str(c) for c in causes(error)):
                raise
            if time.monotonic() >= deadline:
                raise PipelineBusy(
                    f"the DuckDB file {target.duckdb_path} is being written by a load (it holds "
                    f"the file's lock) and stayed so for --wait {wait:g} s; try again when it ends"
                ) from None
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 2.0)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        path = write_report(
            args.duckdb_path,
            args.output,
            args.dataset,
            stale_after_hours=args.stale_hours,
            days=args.days,
        )
    except ReportError as error:
        raise UsageError(str(error)) from error
    if not args.quiet:
        print(f"report written to {path.resolve()}")
    return EXIT_OK
