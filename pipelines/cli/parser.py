"""``avepoint-dynamics``: load, backfill, check, demo, state, reset, report — with exit codes schedulers can act on.

Exit codes: 0 ok, 1 unexpected failure, 2 configuration or command-line error, 3 credentials refused,
4 a service that stayed unavailable or answered nonsense, 5 jobs set aside in ``jobs_rejected`` (only with
``--fail-on-rejected``), 6 an organization without a successful backup within the threshold (``alert``),
75 another run of the pipeline is in progress (try again later), 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM). Failures print one line (``-v``: the whole exception chain too).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from ..analytics.report import DEFAULT_DAYS, DEFAULT_REPORT
from ..analytics.run_freshness import DEFAULT_RUN_STALE_HOURS
from ..analytics.views import DEFAULT_STALE_AFTER_HOURS
from ..failures import (
    Terminated,
    UsageError,
    chain_lines,
    describe_failure,
)
from ..load.pipeline import (
    DEFAULT_DATASET,
    DEFAULT_DUCKDB,
    DEFAULT_PIPELINE,
    DEFAULT_PIPELINES_DIR,
    TABLE_FORMATS,
)
from .commands import (
    ISO_EXAMPLES,
    cmd_alert,
    cmd_backfill,
    cmd_check,
    cmd_demo,
    cmd_load,
    cmd_report,
    cmd_reset,
    cmd_state,
)
from .console import LiveLine, configure_logging
from .source_options import API, FIRST_LOAD, READING, add_source_options


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
    level_help = (
        f"log level: {', '.join(LOG_LEVELS)} (default: RUNTIME__LOG_LEVEL or [runtime] log_level "
        "if set, else INFO; -q WARNING, -v DEBUG)"
    )
    common.add_argument("--log-level", metavar="LEVEL", default=argparse.SUPPRESS, help=level_help)
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet_help)
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    parser.add_argument("--log-level", metavar="LEVEL", default=None, help=level_help)
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
            default="96MB",
            help="DuckDB memory_limit while loading; 'none' for DuckDB's own (default: 96MB)",
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
            "--json",
            action="store_true",
            help="print the run's outcome as one JSON object on stdout: what was read, inserted, "
            "updated, deleted, set aside, requests, retries, cursors, load id (default: one line)",
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
        "sizes, fields (15 to 25 requests; default: a token and one job)",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON object on stdout (default: a sentence)",
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
    state.add_argument(
        "--json",
        action="store_true",
        help="one JSON object on stdout, on one line (default: the same object, indented)",
    )
    state.set_defaults(func=cmd_state)

    reset = commands.add_parser(
        "reset", parents=[common], help="forget the incremental state (asks first)"
    )
    where_options(reset)
    dataset_option(reset)
    reset.add_argument(
        "--tenant",
        help="forget only this tenant's state (default: the pipeline's and every tenant's loaded "
        "beside it with --tenant / --tenants)",
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
        "--run-stale-hours",
        metavar="HOURS",
        type=float,
        default=None,
        help="no load completed for longer than this (the run log, _avepoint_runs) is stale too: "
        f"a silent loader (default: {DEFAULT_RUN_STALE_HOURS:g})",
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
    alert.add_argument(
        "--wait",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="while a load holds the DuckDB file, wait this long before answering busy (exit 75) "
        "(default: 10)",
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
    try:
        level = log_level(getattr(args, "log_level", None))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    configure_logging(args.live, quiet=args.quiet, verbose=args.verbose, level=level)
    with _sigterm_interrupts():
        return run_command(args.func, args)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(flag: str | None) -> str | None:
    """The log level asked for: ``--log-level``, else dlt's ``runtime.log_level`` (env or config).

    The level is handed to dlt too (``RUNTIME__LOG_LEVEL``, upper case), so its records follow.

    Raises:
        UsageError: the level is not one of :data:`LOG_LEVELS`.
    """
    import os

    if flag is not None:
        where, value = "--log-level", flag
    elif os.environ.get("RUNTIME__LOG_LEVEL"):
        where, value = "RUNTIME__LOG_LEVEL", os.environ["RUNTIME__LOG_LEVEL"]
    else:
        import dlt

        where = "[runtime] log_level"
        from dlt.common.configuration.providers.toml import TomlProviderReadException

        try:
            value = dlt.config.get("runtime.log_level", str)
        except TomlProviderReadException:
            return None  # the command reports the file that does not parse, in its one line
        except ValueError as error:  # dlt's own logger refuses it (it takes upper case only)
            raise UsageError(f"{where}: {error}; use one of {', '.join(LOG_LEVELS)}") from None
        if not value:
            return None
    level = str(value).strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in LOG_LEVELS:
        raise UsageError(
            f"{where} {value!r} is not a log level; use one of {', '.join(LOG_LEVELS)}"
        )
    os.environ["RUNTIME__LOG_LEVEL"] = level  # dlt's logger follows (and takes upper case only)
    return level


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
