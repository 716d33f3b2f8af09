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
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, NoReturn

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


# --------------------------------------------------------------------------- the commands, as a table
@dataclass(frozen=True)
class Flag:
    """One option of a command: its names and the keywords ``add_argument`` takes."""

    names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def _flag(*names: str, **options: Any) -> Flag:
    return Flag(names, options)


@dataclass(frozen=True)
class SourceFlags:
    """The source's parameters ``names`` as options, from its signature (:mod:`.source_options`)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    """One command: its name, help, what runs it, its options in ``--help`` order, fixed values."""

    name: str
    help: str
    func: Callable[[argparse.Namespace], int]
    options: tuple[Flag | SourceFlags, ...]
    defaults: dict[str, Any] = field(default_factory=dict)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Before or after the command: ``avepoint-dynamics -q load`` and ``... load -q``.
GLOBAL_FLAGS = (
    _flag(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress or summary; only warnings and errors (default: off)",
    ),
    _flag(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, and the whole exception chain of a failure (default: off)",
    ),
    _flag(
        "--log-level",
        metavar="LEVEL",
        default=None,
        help=f"log level: {', '.join(LOG_LEVELS)} (default: RUNTIME__LOG_LEVEL or [runtime] log_level "
        "if set, else INFO; -q WARNING, -v DEBUG)",
    ),
)
DUCKDB_PATH = _flag(
    "--duckdb-path",
    metavar="FILE",
    default=DEFAULT_DUCKDB,
    help=f"the DuckDB file (default: {DEFAULT_DUCKDB})",
)
#: Which pipeline: its destination, name and working folder.
WHERE = (
    _flag(
        "--destination",
        metavar="NAME",
        default="duckdb",
        help="a dlt destination name: duckdb, postgres, filesystem, ... (default: duckdb)",
    ),
    DUCKDB_PATH,
    _flag(
        "--pipeline-name",
        metavar="NAME",
        default=DEFAULT_PIPELINE,
        help=f"dlt pipeline name: its state and working folder (default: {DEFAULT_PIPELINE})",
    ),
    _flag(
        "--pipelines-dir",
        metavar="DIR",
        default=None,
        help="the pipeline's working folder root (default: beside the DuckDB file, FILE.dlt/; "
        f"./{DEFAULT_PIPELINES_DIR}/ for other destinations)",
    ),
)
DATASET = _flag(
    "--dataset",
    metavar="NAME",
    default=DEFAULT_DATASET,
    help=f"dataset / schema name (default: {DEFAULT_DATASET})",
)
LOADING = (
    _flag(
        "--duckdb-memory-limit",
        metavar="SIZE",
        default="auto",
        help="DuckDB memory_limit while loading: 'auto' is 64MB, 96MB for a load that must "
        "deduplicate (or your global_config); 'none' for DuckDB's own (default: auto)",
    ),
    _flag(
        "--duckdb-threads",
        metavar="N",
        default="1",
        help="DuckDB threads while loading; 'none' for DuckDB's own (default: 1)",
    ),
    _flag(
        "--table-format",
        choices=sorted(TABLE_FORMATS),
        default=None,
        help="with --destination filesystem: write Delta tables, merged on the job id "
        "(needs the lakehouse extra; default: Parquet files, one row per job per load)",
    ),
    _flag(
        "--json",
        action="store_true",
        help="print the run's outcome as one JSON object on stdout: what was read, inserted, "
        "updated, deleted, set aside, requests, retries, cursors, load id (default: one line)",
    ),
    _flag(
        "--fail-on-rejected",
        action="store_true",
        help="exit 5 when jobs were set aside in jobs_rejected (default: exit 0 and warn)",
    ),
)
READING_FLAGS = (
    SourceFlags(API),
    SourceFlags(READING),
    _flag(
        "--tenants",
        metavar="A,B",
        help="several tenants, comma-separated; each reads [sources.avepoint_dynamics_<name>] "
        "and loads through a pipeline of its own, <pipeline-name>_<name> "
        "(default: one tenant, [sources.avepoint_dynamics])",
    ),
    _flag(
        "--parallel",
        metavar="N",
        type=int,
        default=None,
        help="with --tenants: load up to N tenants at once (default: 1, one after another)",
    ),
)
COMMANDS = (
    Command(
        "load",
        "incremental load (the scheduled job)",
        cmd_load,
        (*WHERE, DATASET, *LOADING, *READING_FLAGS, SourceFlags(FIRST_LOAD)),
        {"end_time": None},
    ),
    Command(
        "backfill",
        "load a bounded range; the incremental state is untouched",
        cmd_backfill,
        (
            *WHERE,
            DATASET,
            *LOADING,
            *READING_FLAGS,
            _flag(
                "--from",
                dest="from_",
                metavar="DATE",
                required=True,
                help=f"start, inclusive, ISO-8601 like {ISO_EXAMPLES} (required)",
            ),
            _flag("--to", metavar="DATE", help="end, exclusive, ISO-8601 (default: now)"),
        ),
    ),
    Command(
        "check",
        "prove credentials and API work; loads nothing",
        cmd_check,
        (
            SourceFlags(API),
            _flag(
                "--deep",
                action="store_true",
                help="also learn how the service reads requests: its time window, bounds, order, "
                "page sizes, fields (15 to 25 requests; default: a token and one job)",
            ),
            _flag(
                "--json",
                action="store_true",
                help="print the result as one JSON object on stdout (default: a sentence)",
            ),
        ),
        {"initial_start_time": None, "end_time": None},
    ),
    Command(
        "state",
        "show the cursor, the followed (open, set-aside) and abandoned jobs, where the state lives",
        cmd_state,
        (
            *WHERE,
            _flag(
                "--tenant",
                help="the state of this tenant (load --tenant / --tenants; default: none)",
            ),
            _flag(
                "--json",
                action="store_true",
                help="one JSON object on stdout, on one line (default: the same object, indented)",
            ),
        ),
    ),
    Command(
        "reset",
        "forget the incremental state (asks first)",
        cmd_reset,
        (
            *WHERE,
            DATASET,
            _flag(
                "--tenant",
                help="forget only this tenant's state (default: the pipeline's and every tenant's "
                "loaded beside it with --tenant / --tenants)",
            ),
            _flag(
                "--yes",
                action="store_true",
                help="do not ask (default: ask on a terminal, refuse elsewhere)",
            ),
        ),
    ),
    Command(
        "report",
        "write a self-contained HTML report of the analyst views (DuckDB)",
        cmd_report,
        (
            DUCKDB_PATH,
            DATASET,
            _flag(
                "--output",
                metavar="FILE",
                default=DEFAULT_REPORT,
                help=f"HTML file to write (default: {DEFAULT_REPORT})",
            ),
            _flag(
                "--stale-hours",
                metavar="HOURS",
                type=float,
                default=None,
                help="a backup older than this is stale (default: the views', "
                f"{DEFAULT_STALE_AFTER_HOURS:g})",
            ),
            _flag(
                "--days",
                type=int,
                default=DEFAULT_DAYS,
                help=f"days in the outcomes chart (default: {DEFAULT_DAYS})",
            ),
        ),
    ),
    Command(
        "alert",
        "exit 6 when an organization has no successful backup within the threshold "
        "(reads the destination's backup_freshness view)",
        cmd_alert,
        (
            *WHERE,
            DATASET,
            _flag(
                "--stale-hours",
                metavar="HOURS",
                type=float,
                default=None,
                help="no successful backup for longer than this is stale (default: the view's, "
                f"{DEFAULT_STALE_AFTER_HOURS:g})",
            ),
            _flag(
                "--run-stale-hours",
                metavar="HOURS",
                type=float,
                default=None,
                help="no load completed for longer than this (the run log, _avepoint_runs) is "
                f"stale too: a silent loader (default: {DEFAULT_RUN_STALE_HOURS:g})",
            ),
            _flag(
                "--organization",
                metavar="NAME",
                action="append",
                help="only this organization, by name or id; repeat it or separate with commas "
                "(default: every organization)",
            ),
            _flag(
                "--json",
                action="store_true",
                help="print the result as JSON, stale or not (default: one line per stale "
                "organization)",
            ),
            _flag(
                "--wait",
                metavar="SECONDS",
                type=float,
                default=10.0,
                help="while a load holds the DuckDB file, wait this long before answering busy "
                "(exit 75) (default: 10)",
            ),
        ),
    ),
    Command(
        "demo",
        "simulator + real pipeline + DuckDB file + summary",
        cmd_demo,
        (
            _flag(
                "--jobs",
                type=int,
                default=20_000,
                help="jobs in the simulated history (default: 20000)",
            ),
            _flag("--seed", type=int, default=42, help="seed of the history (default: 42)"),
            _flag(
                "--latency-ms",
                type=int,
                default=5,
                help="latency the simulator adds to each request (default: 5)",
            ),
            _flag(
                "--duckdb-path",
                metavar="FILE",
                default="avepoint_demo.duckdb",
                help="the DuckDB file, replaced if it exists (default: avepoint_demo.duckdb)",
            ),
        ),
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The command line, built from :data:`GLOBAL_FLAGS` and :data:`COMMANDS`."""
    parser = _Parser(
        prog="avepoint-dynamics",
        description="Load the job history of AvePoint Cloud Backup for Dynamics 365 with dlt.",
        epilog="Exit codes: 0 ok, 1 unexpected, 2 configuration, 3 authentication, 4 API failure, "
        "5 jobs rejected (--fail-on-rejected), 6 stale backups (alert), 75 pipeline busy, "
        "130 interrupted, 143 terminated (SIGTERM).",
    )
    parser.add_argument("--version", action="version", version=_version())
    # A command's copy of the global flags leaves them unset unless given after the command.
    common = _Parser(add_help=False)
    for flag in GLOBAL_FLAGS:
        _add(parser, flag)
        _add(common, Flag(flag.names, {**flag.options, "default": argparse.SUPPRESS}))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, parents=[common], help=command.help)
        for option in command.options:
            _add(sub, option)
        sub.set_defaults(func=command.func, **command.defaults)
    return parser


def _add(parser: argparse.ArgumentParser, option: Flag | SourceFlags) -> None:
    if isinstance(option, SourceFlags):
        add_source_options(parser, option.names)
    else:
        parser.add_argument(*option.names, **option.options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``avepoint-dynamics`` console script.

    Called as the command (``argv`` None: the arguments are the process's), the heap is frozen before
    returning (:func:`_freeze_heap_before_exit`); called with arguments (tests, scripts), nothing is.
    """
    try:
        return _main(argv)
    finally:
        if argv is None:
            _freeze_heap_before_exit()


def _freeze_heap_before_exit() -> None:
    """Collect the run's garbage once, then move every live object out of the collector's reach.

    The interpreter's teardown runs full collections over the whole heap (dlt, pyarrow, DuckDB: ~100,000
    objects): ~0.28 s of an idle run's exit on the benchmark machine, ~0.11 s with this (issue 23,
    docs/performance.md). Garbage is collected first, so what it holds (files, connections) is still
    finalized; the live objects are freed by reference counting as before, only not walked again.
    """
    import gc

    gc.collect()
    gc.freeze()


def _main(argv: Sequence[str] | None) -> int:
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
