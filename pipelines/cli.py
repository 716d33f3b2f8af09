"""``avepoint-dynamics``: load, backfill, check, demo, state, reset, report — with exit codes schedulers can act on.

Exit codes: 0 ok, 1 unexpected failure, 2 configuration error, 3 credentials refused, 4 a service that
stayed unavailable or answered nonsense, 5 another run of the pipeline is in progress, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from avepoint_dynamics import AvePointError, ConfigError, avepoint_dynamics, check_connection
from avepoint_dynamics.client import JobsPage

from .avepoint_pipeline import (
    DEFAULT_DATASET,
    DEFAULT_DUCKDB,
    DEFAULT_PIPELINE,
    Target,
    make_pipeline,
    run_load,
)
from .report import DEFAULT_DAYS, DEFAULT_REPORT, ReportError, write_report
from .views import DEFAULT_STALE_AFTER_HOURS

logger = logging.getLogger("avepoint_dynamics.cli")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_AUTH, EXIT_API = 0, 1, 2, 3, 4


class Progress:
    """Pages, jobs, rate and ETA: a live line on a terminal, a log line every few seconds elsewhere."""

    def __init__(
        self, stream: TextIO, *, quiet: bool = False, interval_s: float | None = None
    ) -> None:
        self.stream = stream
        self.quiet = quiet
        self.live = stream.isatty()
        self.interval_s = interval_s if interval_s is not None else (0.2 if self.live else 5.0)
        self.pages = self.jobs = self.expected = 0
        self.started = time.monotonic()
        self._shown = 0.0

    def __call__(self, page: JobsPage) -> None:
        self.pages += 1
        self.jobs += len(page.jobs)
        if page.number == 1 and page.total:
            self.expected += page.total
        now = time.monotonic()
        if not self.quiet and now - self._shown >= self.interval_s:
            self._shown = now
            self._show(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-6)
        rate = self.jobs / elapsed
        text = f"pages {self.pages:,} · jobs {self.jobs:,}"
        if self.expected:
            text += f" / {self.expected:,}"
        text += f" · {rate:,.0f} jobs/s"
        if self.expected and rate > 0 and self.jobs < self.expected:
            text += f" · ETA {(self.expected - self.jobs) / rate:,.0f} s"
        return text

    def _show(self, now: float) -> None:
        if self.live:
            self.stream.write("\r\033[K" + self.line(now))
            self.stream.flush()
        else:
            logger.info("progress: %s", self.line(now))

    def close(self) -> None:
        if self.live and not self.quiet and self.pages:
            self.stream.write("\r\033[K" + self.line() + "\n")
            self.stream.flush()


def _source_args(args: argparse.Namespace) -> dict[str, Any]:
    """Only the options given on the command line: dlt config fills in the rest."""
    names = [
        "region",
        "base_url",
        "api_version",
        "page_size",
        "job_type",
        "status",
        "organization_id",
        "object_type",
        "initial_start_time",
        "end_time",
        "max_concurrency",
        "ca_bundle",
        "tenant",
    ]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _target(args: argparse.Namespace) -> Target:
    return Target(
        destination=args.destination,
        dataset_name=args.dataset,
        pipeline_name=args.pipeline_name,
        duckdb_path=args.duckdb_path,
        pipelines_dir=args.pipelines_dir,
        duckdb_memory_limit=_none_or(args.duckdb_memory_limit),
        duckdb_threads=int(threads) if (threads := _none_or(args.duckdb_threads)) else None,
    )


def _none_or(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() in ("", "none") else value.strip()


def cmd_load(args: argparse.Namespace) -> int:
    if getattr(args, "tenants", None):
        return _load_tenants(args)
    progress = Progress(sys.stderr, quiet=args.quiet)
    source = avepoint_dynamics(**_source_args(args), on_page=progress)
    info = run_load(source, _target(args))
    progress.close()
    if not args.quiet:
        print(_load_summary(info, progress))
    return EXIT_OK


def _load_tenants(args: argparse.Namespace) -> int:
    """Every tenant in its own run; the exit code is the worst tenant's."""
    from .tenants import run_tenants

    tenants = [name.strip() for name in args.tenants.split(",") if name.strip()]
    progress = Progress(sys.stderr, quiet=args.quiet)
    shared = {k: v for k, v in _source_args(args).items() if k != "tenant"}
    results = run_tenants(tenants, _target(args), on_page=progress, **shared)
    progress.close()
    worst = EXIT_OK
    for result in results:
        if result.ok:
            if not args.quiet:
                print(f"tenant {result.tenant}: ok")
            continue
        assert result.error is not None
        message, code = describe_failure(result.error)
        print(f"error: tenant {result.tenant}: {message}", file=sys.stderr)
        worst = max(worst, code)
    return worst


def cmd_backfill(args: argparse.Namespace) -> int:
    # Without --to, the range ends at the service's time now (not this machine's): still bounded, so
    # the cursor stays where the scheduled runs put it.
    args.initial_start_time, args.end_time = args.from_, args.to or "now"
    return cmd_load(args)


def cmd_check(args: argparse.Namespace) -> int:
    result = check_connection(**_source_args(args))
    print(
        f"ok: token from {result['identity_url']}; the jobs API at {result['api_url']} "
        f"({result['api_version']}) holds {result['total_jobs']} jobs; nothing was loaded"
    )
    return EXIT_OK


def cmd_state(args: argparse.Namespace) -> int:
    pipeline = make_pipeline(_target(args))
    resources = pipeline.state.get("sources", {}).get("avepoint_dynamics", {}).get("resources", {})
    state = resources.get("jobs", {})
    tenant = getattr(args, "tenant", None)
    if tenant:
        state = state.get("tenants", {}).get(tenant, {})
    open_jobs = state.get("open_jobs", {})
    abandoned = state.get("abandoned_jobs", {})
    newest_abandoned = sorted(abandoned.items(), key=lambda item: item[1])[-20:]
    report = {
        "pipeline": pipeline.pipeline_name,
        "working_dir": pipeline.working_dir,
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
    print(json.dumps(report, indent=2))
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    pipeline = make_pipeline(_target(args))
    tenant = getattr(args, "tenant", None)
    what = f"tenant {tenant!r} of pipeline" if tenant else "pipeline"
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                "reset", "refusing to forget state without --yes when not on a terminal"
            )
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
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if not args.quiet:
        print(f"report written to {path.resolve()}")
    return EXIT_OK


def _load_summary(info: Any, progress: Progress) -> str:
    packages = len(getattr(info, "loads_ids", []) or [])
    return (
        f"loaded {progress.jobs:,} jobs from {progress.pages:,} pages into "
        f"{info.destination_name}:{info.dataset_name} ({packages} package(s))"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avepoint-dynamics",
        description="Load the job history of AvePoint Cloud Backup for Dynamics 365 with dlt.",
    )
    # -q / -v work before or after the command: `avepoint-dynamics -q load` and `... load -q`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="errors only"
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, errors only")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    def target_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--destination", default="duckdb", help="dlt destination (default duckdb)"
        )
        command.add_argument("--dataset", default=DEFAULT_DATASET, help="dataset / schema name")
        command.add_argument("--pipeline-name", default=DEFAULT_PIPELINE)
        command.add_argument("--duckdb-path", default=DEFAULT_DUCKDB, help="DuckDB file")
        command.add_argument("--pipelines-dir", default=None, help="dlt working folder root")
        command.add_argument(
            "--duckdb-memory-limit",
            default="40MB",
            help="DuckDB memory_limit while loading (default 40MB; 'none' for DuckDB's own)",
        )
        command.add_argument(
            "--duckdb-threads", default="1", help="DuckDB threads while loading (default 1; 'none')"
        )

    def source_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--region")
        command.add_argument("--base-url")
        command.add_argument("--api-version", choices=["v1", "v2"])
        command.add_argument("--page-size", type=int)
        command.add_argument(
            "--job-type", help="0 all, 1 backup, 2 restore, 4, 8, 16, 32, or a name"
        )
        command.add_argument("--status", help="2 in progress, 3 finished, 4 failed, 7, or a name")
        command.add_argument("--organization-id")
        command.add_argument("--object-type")
        command.add_argument("--max-concurrency", type=int)
        command.add_argument("--ca-bundle")
        command.add_argument("--tenant", help="name for a tenant column in every row")
        command.add_argument(
            "--tenants",
            help="several tenants, comma-separated; each reads [sources.avepoint_dynamics_<name>]",
        )

    load = commands.add_parser(
        "load", parents=[common], help="incremental load (the scheduled job)"
    )
    target_options(load)
    source_options(load)
    load.add_argument("--initial-start-time", help="where the very first load starts (ISO-8601)")
    load.set_defaults(func=cmd_load, end_time=None)

    backfill = commands.add_parser(
        "backfill",
        parents=[common],
        help="load a bounded range; the incremental state is untouched",
    )
    target_options(backfill)
    source_options(backfill)
    backfill.add_argument("--from", dest="from_", required=True, help="start (ISO-8601, inclusive)")
    backfill.add_argument("--to", help="end (ISO-8601, exclusive; default: now)")
    backfill.set_defaults(func=cmd_backfill)

    check = commands.add_parser(
        "check", parents=[common], help="prove credentials and API work; loads nothing"
    )
    source_options(check)
    check.set_defaults(func=cmd_check, initial_start_time=None, end_time=None)

    state = commands.add_parser(
        "state",
        parents=[common],
        help="show the cursor, the followed (open, set-aside) and the abandoned jobs",
    )
    target_options(state)
    state.add_argument("--tenant", help="the state of this tenant (load --tenant / --tenants)")
    state.set_defaults(func=cmd_state)

    reset = commands.add_parser(
        "reset", parents=[common], help="forget the incremental state (asks first)"
    )
    target_options(reset)
    reset.add_argument("--tenant", help="forget only this tenant's state")
    reset.add_argument("--yes", action="store_true", help="do not ask")
    reset.set_defaults(func=cmd_reset)

    report = commands.add_parser(
        "report",
        parents=[common],
        help="write a self-contained HTML report of the analyst views (DuckDB)",
    )
    report.add_argument("--duckdb-path", default=DEFAULT_DUCKDB, help="DuckDB file")
    report.add_argument("--dataset", default=DEFAULT_DATASET, help="dataset / schema name")
    report.add_argument("--output", default=DEFAULT_REPORT, help="HTML file to write")
    report.add_argument(
        "--stale-hours",
        type=float,
        default=None,
        help=f"a backup older than this is stale (default: the views', {DEFAULT_STALE_AFTER_HOURS:g})",
    )
    report.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days in the outcomes chart")
    report.set_defaults(func=cmd_report)

    demo = commands.add_parser(
        "demo", parents=[common], help="simulator + real pipeline + DuckDB file + summary"
    )
    demo.add_argument("--jobs", type=int, default=20_000)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--latency-ms", type=int, default=5)
    demo.add_argument("--duckdb-path", default="avepoint_demo.duckdb")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``avepoint-dynamics`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("dlt").setLevel(logging.WARNING)
    return run_command(args.func, args)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; turn any failure into one line on stderr and a distinct exit code."""
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        message, code = describe_failure(error)
        print(f"error: {message}", file=sys.stderr)
        return code


def describe_failure(error: BaseException) -> tuple[str, int]:
    """One line and an exit code for any failure, looking under dlt's wrappers for the real cause."""
    from dlt.common.configuration.exceptions import (
        ConfigFieldMissingException,
        ConfigurationValueError,
        ConfigValueCannotBeCoercedException,
    )

    for cause in _causes(error):
        if isinstance(cause, AvePointError):
            return str(cause), cause.exit_code
        if isinstance(cause, ConfigFieldMissingException):
            return _missing_config(list(cause.fields)), EXIT_CONFIG
        if isinstance(cause, ConfigValueCannotBeCoercedException):
            return (
                f"configuration value {cause.field_name} cannot be read as {cause.hint}",
                EXIT_CONFIG,
            )
        if isinstance(cause, ConfigurationValueError):
            return f"configuration error: {_first_line(cause)}", EXIT_CONFIG
    return f"{type(error).__name__}: {_first_line(error)}", EXIT_FAILED


def _missing_config(fields: list[str]) -> str:
    """Where a missing value goes, as a user writes it."""
    if "credentials" in fields:
        return (
            "missing credentials: set sources.avepoint_dynamics.credentials.client_id and one of "
            "client_secret, private_key + certificate, or pfx_path + pfx_password in .dlt/secrets.toml "
            "(or SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_ID, ..._CLIENT_SECRET env vars)"
        )
    keys = ", ".join(f"sources.avepoint_dynamics.{field}" for field in fields)
    return f"missing configuration {keys}: set it in .dlt/config.toml or .dlt/secrets.toml"


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = getattr(seen, "exception", None) or seen.__cause__ or seen.__context__
    return chain


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
