"""``avepoint-dynamics``: load, backfill, check, demo, state, reset, report — with exit codes schedulers can act on.

Exit codes: 0 ok, 1 unexpected failure, 2 configuration or command-line error, 3 credentials refused,
4 a service that stayed unavailable or answered nonsense, 5 jobs set aside in ``jobs_rejected`` (only with
``--fail-on-rejected``), 6 an organization without a successful backup within the threshold (``alert``),
75 another run of the pipeline is in progress (try again later), 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM). Failures print one line (``-v``: the whole exception chain too).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import NoReturn

from avepoint_dynamics import ConfigError, avepoint_dynamics, check_connection, check_service

from .avepoint_pipeline import (
    DEFAULT_DATASET,
    DEFAULT_DUCKDB,
    DEFAULT_PIPELINE,
    DEFAULT_PIPELINES_DIR,
    TABLE_FORMATS,
    Target,
    default_pipelines_dir,
    make_pipeline,
    rejected_jobs,
    run_load,
)
from .console import LiveLine, Progress, TenantProgress, configure_logging, plural
from .failures import (
    EXIT_OK,
    EXIT_REJECTED,
    Terminated,
    UsageError,
    chain_lines,
    describe_failure,
)
from .report import DEFAULT_DAYS, DEFAULT_REPORT, ReportError, write_report
from .source_options import API, FIRST_LOAD, READING, add_source_options, source_args
from .tenants import tenant_target
from .views import DEFAULT_STALE_AFTER_HOURS

logger = logging.getLogger("avepoint_dynamics.cli")

_ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.IGNORECASE,
)
ISO_EXAMPLES = "2026-11-01 or 2026-11-01T00:00:00Z"


def iso_moment(flag: str, text: str) -> datetime:
    """A command-line date or time, ISO-8601 only (a date is its midnight, no offset is UTC).

    ``11/01/2026`` or ``Nov 1 2026`` are refused rather than guessed: one reads them as 1 November,
    another as 11 January.

    Raises:
        UsageError: naming ``flag`` and the accepted form.
    """
    value = text.strip()
    if not _ISO_8601.fullmatch(value):
        raise UsageError(
            f"{flag} {text!r} is not an ISO-8601 date or time; write it like {ISO_EXAMPLES}"
        )
    value = value.replace(",", ".")
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)  # beyond microseconds: truncated
    value = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", value)  # +0200 -> +02:00
    try:
        moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as error:
        raise UsageError(f"{flag} {text!r} is not a valid date or time ({error})") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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
    progress = Progress(args.live, quiet=args.quiet)
    try:
        source = avepoint_dynamics(**source_args(args), on_page=progress)
        info = run_load(source, _target(args))
    finally:
        progress.close()
    rejected = rejected_jobs(info)
    if not args.quiet:
        packages = len(getattr(info, "loads_ids", []) or [])
        print(
            f"loaded {plural(progress.jobs, 'job')} from {plural(progress.pages, 'page')} into "
            f"{info.destination_name}:{info.dataset_name} ({plural(packages, 'package')})"
            + (f"; {plural(rejected, 'job')} set aside in jobs_rejected" if rejected else "")
        )
    return _rejected_outcome(rejected, args)


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
        "%s%s set aside in jobs_rejected (see its reason column); they are read again next run",
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
    from .tenant_runs import run_tenants

    progress: dict[str, TenantProgress] = {}

    def watch(tenant: str) -> TenantProgress:
        progress[tenant] = TenantProgress(args.live, quiet=args.quiet, label=tenant)
        return progress[tenant]

    shared = {k: v for k, v in source_args(args).items() if k != "tenant"}
    try:
        results = run_tenants(
            tenants, _target(args), parallel=args.parallel or 1, watch=watch, **shared
        )
    finally:
        args.live.finish()
    worst = EXIT_OK
    for result in results:
        if result.ok:
            rejected = rejected_jobs(result.load_info, result.tenant)
            if not args.quiet:
                read = progress[result.tenant]
                info = result.load_info
                aside = (
                    f"; {plural(rejected, 'job')} set aside in jobs_rejected" if rejected else ""
                )
                print(
                    f"tenant {result.tenant}: loaded {plural(read.jobs, 'job')} from "
                    f"{plural(read.pages, 'page')} into {info.destination_name}:{info.dataset_name} "
                    f"in {result.seconds:,.1f} s{aside}"
                )
            worst = max(worst, _rejected_outcome(rejected, args, result.tenant))
            continue
        assert result.error is not None
        message, code = describe_failure(result.error)
        print(f"error: tenant {result.tenant}: {message}", file=sys.stderr)
        if args.verbose:
            for line in chain_lines(result.error):
                print(f"  {line}", file=sys.stderr)
        worst = max(worst, code)
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
    if args.deep:
        return _check_deep(args)
    result = check_connection(**source_args(args))
    print(
        f"ok: token from {result['identity_url']}; the jobs API at {result['api_url']} "
        f"({result['api_version']}) holds {plural(result['total_jobs'], 'job')}; nothing was loaded"
    )
    return EXIT_OK


def _check_deep(args: argparse.Namespace) -> int:
    """How the tenant's service reads requests: about 15 requests, nothing loaded."""
    findings = check_service(**source_args(args))
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
    pipeline = make_pipeline(target)
    resources = pipeline.state.get("sources", {}).get("avepoint_dynamics", {}).get("resources", {})
    state = resources.get("jobs", {})
    if tenant:
        state = state.get("tenants", {}).get(tenant, {})
    open_jobs = state.get("open_jobs", {})
    abandoned = state.get("abandoned_jobs", {})
    newest_abandoned = sorted(abandoned.items(), key=lambda item: item[1])[-20:]
    report = {
        "pipeline": pipeline.pipeline_name,
        "pipelines_dir": target.pipelines_dir,
        "state_file": os.path.join(pipeline.working_dir, "state.json"),
        "tenant": tenant,
        "cursor": state.get("cursor"),
        "service_time": state.get("service_time"),
        "filters": state.get("filters"),
        "open_jobs": len(open_jobs),
        "open_job_watermark": min(open_jobs.values()) if open_jobs else None,
        "open_oldest": [
            {"job_id": job_id, "start_time": start}
            for job_id, start in sorted(open_jobs.items(), key=lambda item: item[1])[:20]
        ],
        "set_aside_jobs": len(state.get("rejected_jobs", {}))
        + len(state.get("rejected_windows", {})),
        "abandoned_jobs": int(state.get("abandoned_count") or 0),
        "abandoned_newest": [
            {"job_id": job_id, "start_time": start} for job_id, start in newest_abandoned
        ],
    }
    if tenant is None and state.get("tenants"):
        report["tenants"] = sorted(state["tenants"])
    # How the service reads requests, as the first load learnt it (check --deep says the same).
    service = pipeline.state.get("sources", {}).get("avepoint_dynamics", {}).get("service", {})
    if len(service) == 1:
        report["service"] = next(iter(service.values()))
    elif service:
        report["service"] = service
    print(json.dumps(report, indent=2))
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("reset: not on a terminal, so there is no one to ask: use --yes")
    tenant = getattr(args, "tenant", None)
    pipeline = make_pipeline(tenant_target(_target(args), tenant) if tenant else _target(args))
    what = f"tenant {tenant!r} of pipeline" if tenant else "pipeline"
    if not args.yes:
        answer = input(f"Forget the incremental state of {what} {pipeline.pipeline_name!r}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return EXIT_OK
    from dlt.pipeline.helpers import pipeline_drop

    from .avepoint_pipeline import exclusive_run

    with exclusive_run(pipeline):
        pipeline.sync_destination()  # the state lives in the destination too: forget it there
        if tenant:
            pipeline_drop(
                pipeline, state_paths=f"resources.jobs.tenants.{tenant}", state_only=True
            )()
        else:
            pipeline_drop(pipeline, resources="jobs", state_only=True)()
    print(
        f"state of {what} {pipeline.pipeline_name!r} forgotten: the next load reads the whole history again"
    )
    return EXIT_OK


def cmd_alert(args: argparse.Namespace) -> int:
    """Exit 6 with one line per organization whose last successful backup is older than the threshold."""
    from .freshness import EXIT_STALE, check_freshness, organization_names

    target = _target(args)
    if target.destination == "duckdb" and not os.path.exists(target.duckdb_path):
        raise UsageError(
            f"no DuckDB file at {os.path.abspath(target.duckdb_path)}: check --duckdb-path "
            "(alert reads what load wrote)"
        )
    if args.stale_hours is not None and not (0 < args.stale_hours < float("inf")):
        raise UsageError(f"--stale-hours {args.stale_hours:g} is not a positive number of hours")
    freshness = check_freshness(
        make_pipeline(target),
        stale_after_hours=args.stale_hours,
        organizations=organization_names(args.organization or []),
    )
    if args.json:
        print(json.dumps(freshness.as_dict(), indent=2))
    elif freshness.stale:
        for line in freshness.lines():
            print(line)
    elif not args.quiet:
        print(freshness.summary())
    return EXIT_STALE if freshness.stale else EXIT_OK


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


# --------------------------------------------------------------------------- the parser
class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line naming the option (exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("avepoint-dynamics-dlt")
    except PackageNotFoundError:
        ours = "unknown"
    return f"%(prog)s {ours} (dlt {version('dlt')})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="avepoint-dynamics",
        description="Load the job history of AvePoint Cloud Backup for Dynamics 365 with dlt.",
        epilog="Exit codes: 0 ok, 1 unexpected, 2 configuration, 3 authentication, 4 API failure, "
        "5 jobs rejected (--fail-on-rejected), 6 stale backups (alert), 75 pipeline busy, "
        "130 interrupted, 143 terminated (SIGTERM).",
    )
    parser.add_argument("--version", action="version", version=_version())
    # -q / -v work before or after the command: `avepoint-dynamics -q load` and `... load -q`.
    quiet_help = "no progress or summary; only warnings and errors (default: off)"
    verbose_help = "debug logging, and the whole exception chain of a failure (default: off)"
    common = _Parser(add_help=False)
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=quiet_help
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help
    )
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet_help)
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def where_options(command: argparse.ArgumentParser) -> None:
        """Which pipeline: its destination, name and working folder."""
        command.add_argument(
            "--destination",
            metavar="NAME",
            default="duckdb",
            help="a dlt destination name: duckdb, postgres, filesystem, ... (default: duckdb)",
        )
        command.add_argument(
            "--duckdb-path",
            metavar="FILE",
            default=DEFAULT_DUCKDB,
            help=f"the DuckDB file (default: {DEFAULT_DUCKDB})",
        )
        command.add_argument(
            "--pipeline-name",
            metavar="NAME",
            default=DEFAULT_PIPELINE,
            help=f"dlt pipeline name: its state and working folder (default: {DEFAULT_PIPELINE})",
        )
        command.add_argument(
            "--pipelines-dir",
            metavar="DIR",
            default=None,
            help="the pipeline's working folder root (default: beside the DuckDB file, FILE.dlt/; "
            f"./{DEFAULT_PIPELINES_DIR}/ for other destinations)",
        )

    def dataset_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--dataset",
            metavar="NAME",
            default=DEFAULT_DATASET,
            help=f"dataset / schema name (default: {DEFAULT_DATASET})",
        )

    def loading_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--duckdb-memory-limit",
            metavar="SIZE",
            default="40MB",
            help="DuckDB memory_limit while loading; 'none' for DuckDB's own (default: 40MB)",
        )
        command.add_argument(
            "--duckdb-threads",
            metavar="N",
            default="1",
            help="DuckDB threads while loading; 'none' for DuckDB's own (default: 1)",
        )
        command.add_argument(
            "--table-format",
            choices=sorted(TABLE_FORMATS),
            default=None,
            help="with --destination filesystem: write Delta tables, merged on the job id "
            "(needs the lakehouse extra; default: Parquet files, one row per job per load)",
        )
        command.add_argument(
            "--fail-on-rejected",
            action="store_true",
            help="exit 5 when jobs were set aside in jobs_rejected (default: exit 0 and warn)",
        )

    def api_options(command: argparse.ArgumentParser) -> None:
        add_source_options(command, API)

    def reading_options(command: argparse.ArgumentParser) -> None:
        add_source_options(command, READING)
        command.add_argument(
            "--tenants",
            metavar="A,B",
            help="several tenants, comma-separated; each reads [sources.avepoint_dynamics_<name>] "
            "and loads through a pipeline of its own, <pipeline-name>_<name> "
            "(default: one tenant, [sources.avepoint_dynamics])",
        )
        command.add_argument(
            "--parallel",
            metavar="N",
            type=int,
            default=None,
            help="with --tenants: load up to N tenants at once (default: 1, one after another)",
        )

    load = commands.add_parser(
        "load", parents=[common], help="incremental load (the scheduled job)"
    )
    where_options(load)
    dataset_option(load)
    loading_options(load)
    api_options(load)
    reading_options(load)
    add_source_options(load, FIRST_LOAD)
    load.set_defaults(func=cmd_load, end_time=None)

    backfill = commands.add_parser(
        "backfill",
        parents=[common],
        help="load a bounded range; the incremental state is untouched",
    )
    where_options(backfill)
    dataset_option(backfill)
    loading_options(backfill)
    api_options(backfill)
    reading_options(backfill)
    backfill.add_argument(
        "--from",
        dest="from_",
        metavar="DATE",
        required=True,
        help=f"start, inclusive, ISO-8601 like {ISO_EXAMPLES} (required)",
    )
    backfill.add_argument("--to", metavar="DATE", help="end, exclusive, ISO-8601 (default: now)")
    backfill.set_defaults(func=cmd_backfill)

    check = commands.add_parser(
        "check", parents=[common], help="prove credentials and API work; loads nothing"
    )
    api_options(check)
    check.add_argument(
        "--deep",
        action="store_true",
        help="also learn how the service reads requests: its time window, bounds, order, page "
        "sizes, fields (about 15 requests; default: a token and one job)",
    )
    check.set_defaults(func=cmd_check, initial_start_time=None, end_time=None)

    state = commands.add_parser(
        "state",
        parents=[common],
        help="show the cursor, the followed (open, set-aside) and abandoned jobs, where the state lives",
    )
    where_options(state)
    state.add_argument(
        "--tenant", help="the state of this tenant (load --tenant / --tenants; default: none)"
    )
    state.set_defaults(func=cmd_state)

    reset = commands.add_parser(
        "reset", parents=[common], help="forget the incremental state (asks first)"
    )
    where_options(reset)
    dataset_option(reset)
    reset.add_argument(
        "--tenant", help="forget only this tenant's state (default: the whole pipeline's)"
    )
    reset.add_argument(
        "--yes",
        action="store_true",
        help="do not ask (default: ask on a terminal, refuse elsewhere)",
    )
    reset.set_defaults(func=cmd_reset)

    report = commands.add_parser(
        "report",
        parents=[common],
        help="write a self-contained HTML report of the analyst views (DuckDB)",
    )
    report.add_argument(
        "--duckdb-path",
        metavar="FILE",
        default=DEFAULT_DUCKDB,
        help=f"the DuckDB file (default: {DEFAULT_DUCKDB})",
    )
    dataset_option(report)
    report.add_argument(
        "--output",
        metavar="FILE",
        default=DEFAULT_REPORT,
        help=f"HTML file to write (default: {DEFAULT_REPORT})",
    )
    report.add_argument(
        "--stale-hours",
        metavar="HOURS",
        type=float,
        default=None,
        help=f"a backup older than this is stale (default: the views', {DEFAULT_STALE_AFTER_HOURS:g})",
    )
    report.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"days in the outcomes chart (default: {DEFAULT_DAYS})",
    )
    report.set_defaults(func=cmd_report)

    alert = commands.add_parser(
        "alert",
        parents=[common],
        help="exit 6 when an organization has no successful backup within the threshold "
        "(reads the destination's backup_freshness view)",
    )
    where_options(alert)
    dataset_option(alert)
    alert.add_argument(
        "--stale-hours",
        metavar="HOURS",
        type=float,
        default=None,
        help=f"no successful backup for longer than this is stale (default: the view's, "
        f"{DEFAULT_STALE_AFTER_HOURS:g})",
    )
    alert.add_argument(
        "--organization",
        metavar="NAME",
        action="append",
        help="only this organization, by name or id; repeat it or separate with commas "
        "(default: every organization)",
    )
    alert.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON, stale or not (default: one line per stale organization)",
    )
    alert.set_defaults(func=cmd_alert)

    demo = commands.add_parser(
        "demo", parents=[common], help="simulator + real pipeline + DuckDB file + summary"
    )
    demo.add_argument(
        "--jobs", type=int, default=20_000, help="jobs in the simulated history (default: 20000)"
    )
    demo.add_argument("--seed", type=int, default=42, help="seed of the history (default: 42)")
    demo.add_argument(
        "--latency-ms",
        type=int,
        default=5,
        help="latency the simulator adds to each request (default: 5)",
    )
    demo.add_argument(
        "--duckdb-path",
        metavar="FILE",
        default="avepoint_demo.duckdb",
        help="the DuckDB file, replaced if it exists (default: avepoint_demo.duckdb)",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


# --------------------------------------------------------------------------- running
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``avepoint-dynamics`` console script."""
    args = build_parser().parse_args(argv)
    args.live = LiveLine(sys.stderr)
    configure_logging(args.live, quiet=args.quiet, verbose=args.verbose)
    with _sigterm_interrupts():
        return run_command(args.func, args)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler or container stopping us) ends the run the way Ctrl-C does.

    The handler raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main thread, where dlt runs
    its steps: dlt stops the step and commits nothing of it, and the next run finishes or redoes it.
    A second SIGTERM while we wind down kills at once (the default action).
    """

    def terminate(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (the CLI called from a test or another program)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; turn any failure into one line on stderr and a distinct exit code."""
    try:
        return func(args)
    except (Exception, KeyboardInterrupt) as error:
        message, code = describe_failure(error)
        prefix = "" if code >= 128 else "error: "  # an interruption is not an error
        print(f"{prefix}{message}", file=sys.stderr)
        if getattr(args, "verbose", False):
            for line in chain_lines(error):
                print(f"  {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
