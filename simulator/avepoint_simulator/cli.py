"""``avepoint-simulator``: run the simulator as a process (for demos and users' CI).

Prints one JSON line (``base_url``, ``identity_url``, ``client_id``, ``client_secret``,
``ca_file``), then ready-to-paste ``export SOURCES__AVEPOINT_DYNAMICS__...=...`` lines that point
``avepoint-dynamics`` (or any dlt pipeline of the source) at it, and serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from types import FrameType

from avepoint_simulator.faults import Faults
from avepoint_simulator.simulator import Simulator

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avepoint-simulator",
        description="A local simulator of the AvePoint Cloud Backup for Dynamics 365 jobs API.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument(
        "--jobs", type=int, default=10_000, help="jobs in the history at start (default 10000)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the history and the faults (default 0)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="latency added to each request"
    )
    parser.add_argument(
        "--token-lifetime", type=float, default=3600, help="token lifetime in seconds"
    )
    parser.add_argument("--no-tls", action="store_true", help="serve plain HTTP instead of HTTPS")
    parser.add_argument(
        "--sort", choices=("newest", "oldest"), default="newest", help="order of results"
    )
    parser.add_argument(
        "--wrapper", choices=("current", "draft"), default="current", help="answer shape"
    )
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="probability of a 500/502/503"
    )
    parser.add_argument(
        "--drop-rate", type=float, default=0.0, help="probability of a dropped connection"
    )
    parser.add_argument(
        "--truncate-rate", type=float, default=0.0, help="probability of a cut-short 200"
    )
    parser.add_argument(
        "--churn-per-page", type=int, default=0, help="jobs added and purged per jobs request"
    )
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="requests per second before 429s"
    )
    parser.add_argument(
        "--arrivals-per-minute", type=float, default=None, help="new jobs per minute (live clock)"
    )
    parser.add_argument(
        "--running",
        type=int,
        default=None,
        help="how many of the newest jobs are still in progress (default 3)",
    )
    parser.add_argument(
        "--clock-offset",
        type=float,
        default=0.0,
        help="seconds the service's clock runs ahead of this machine's (negative: behind)",
    )
    parser.add_argument(
        "--history-days",
        type=float,
        default=180.0,
        help="how far back the history reaches (default 180); with --running: a busy tenant whose "
        "newest pages hold only running jobs, e.g. --jobs 20000 --running 400 --history-days 30",
    )
    parser.add_argument(
        "--strict-get",
        action="store_true",
        help="v2 as documented: type, startTime and finishTime required (400 naming a missing one)",
    )
    parser.add_argument(
        "--window-selects",
        choices=("start", "overlap", "finish"),
        default="start",
        help="what the time window selects: jobs that started, ran or finished in it (default start)",
    )
    parser.add_argument(
        "--window",
        choices=("half_open", "inclusive", "ignored"),
        default="half_open",
        help="how the window's bounds are read (default half_open: [start, end))",
    )
    parser.add_argument(
        "--max-page-size", type=int, default=100, help="largest page size served (default 100)"
    )
    parser.add_argument(
        "--oversize-pages",
        choices=("refuse", "cap", "serve", "413", "422", "500", "drop"),
        default="refuse",
        help="a larger pageSize: refused with 400 (default), silently capped, served, answered "
        "413/422/500, or the connection dropped",
    )
    parser.add_argument(
        "--repeat-in-page",
        type=int,
        default=0,
        help="list each page's first job this many extra times (AvePoint's sample shows it)",
    )
    parser.add_argument(
        "--next-link",
        choices=("full", "short"),
        default="full",
        help="nextLink with the /dynamicsbackup prefix (full) or without it (short, as the sample)",
    )
    parser.add_argument(
        "--times-shown",
        choices=("held", "milliseconds"),
        default="held",
        help="times as held (0 to 7 digits, default) or rounded to milliseconds (windows still "
        "filter on the finer time)",
    )
    parser.add_argument("--client-id", default=None, help="client id of the default app")
    parser.add_argument("--client-secret", default=None, help="client secret of the default app")
    return parser


#: dlt's env-var spelling of the source's config section (``[sources.avepoint_dynamics]``).
ENV_PREFIX = "SOURCES__AVEPOINT_DYNAMICS__"


def export_lines(info: dict[str, str | None]) -> list[str]:
    """``export`` lines for a POSIX shell: the settings the source needs to use this simulator."""
    settings = {
        "BASE_URL": info["base_url"],
        "CREDENTIALS__IDENTITY_URL": info["identity_url"],
        "CREDENTIALS__CLIENT_ID": info["client_id"],
        "CREDENTIALS__CLIENT_SECRET": info["client_secret"],
        "CA_BUNDLE": info["ca_file"],
    }
    return [
        f"export {ENV_PREFIX}{key}={shlex.quote(value)}" for key, value in settings.items() if value
    ]


def main(argv: list[str] | None = None) -> int:
    """Run until interrupted. Returns the exit status (0 on Ctrl-C / SIGTERM, 2 on bad arguments)."""
    args = _parser().parse_args(argv)
    try:
        faults = Faults(
            latency_ms=args.latency_ms,
            token_lifetime_s=args.token_lifetime,
            sort=args.sort,
            wrapper=args.wrapper,
            error_rate=args.error_rate,
            drop_rate=args.drop_rate,
            truncate_rate=args.truncate_rate,
            churn_per_page=args.churn_per_page,
            rate_limit_per_second=args.rate_limit,
            clock_offset_s=args.clock_offset,
            strict_get=args.strict_get,
            window_selects=args.window_selects,
            window=args.window,
            max_page_size=args.max_page_size,
            oversize_pages=args.oversize_pages,
            repeat_in_page=args.repeat_in_page,
            next_link=args.next_link,
            times_shown=args.times_shown,
        )
    except ValueError as exc:
        print(f"avepoint-simulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    sim = Simulator(
        jobs=args.jobs,
        seed=args.seed,
        tls=not args.no_tls,
        faults=faults,
        host=args.host,
        port=args.port,
        arrivals_per_minute=args.arrivals_per_minute,
        running=args.running,
        history_days=args.history_days,
        client_id=args.client_id,
        client_secret=args.client_secret,
    )
    try:
        sim.start()
        info = sim.connection_info()
        print(json.dumps(info))
        print("# point avepoint-dynamics at this simulator: paste these lines into your shell")
        for line in export_lines(info):
            print(line)
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
