"""What the CLI shows while it runs: a live progress line on a terminal, and log lines that never collide.

On a terminal, progress redraws one line in place (``\\r``). A log record written meanwhile would start
in the middle of it (``... ETA 0 s2026-12-03 ... INFO ...``): the handler here erases the live line,
writes the record, and draws the line again below it. dlt logs through a logger of its own (not
propagating to the root) and resets its level from its config at every pipeline; it gets the same kind
of handler, with a level of its own, so ``-q`` hides its warnings too.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

from avepoint_dynamics.client import JobsPage

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ERASE = "\r\033[K"

logger = logging.getLogger("avepoint_dynamics.cli")


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 job``, ``2 jobs``, ``1,000 pages``."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


class LiveLine:
    """The one line a terminal shows in place; anything else written to the stream clears it first."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.lock = threading.RLock()
        self._text = ""

    def show(self, text: str) -> None:
        with self.lock:
            self._text = text
            self._draw()

    def clear(self) -> None:
        """Erase the line (before something else is written)."""
        if self._text:
            self.stream.write(_ERASE)

    def redraw(self) -> None:
        if self._text:
            self._draw()

    def finish(self) -> None:
        """Leave the line as it is and move below it: it is no longer live."""
        with self.lock:
            if self._text:
                self.stream.write("\n")
                self.stream.flush()
                self._text = ""

    def _draw(self) -> None:
        self.stream.write(_ERASE + self._text)
        self.stream.flush()


class LiveLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that erases the live line before a record and redraws it after."""

    def __init__(self, live: LiveLine) -> None:
        super().__init__(live.stream)
        self.live = live

    def emit(self, record: logging.LogRecord) -> None:
        with self.live.lock:
            self.live.clear()
            super().emit(record)
            self.live.redraw()

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        # dlt re-initializes its logger at every pipeline and sets its own format on the handler it
        # finds there; keep ours, so every line on stderr looks alike.
        if self.formatter is None:
            super().setFormatter(fmt)


def configure_logging(live: LiveLine, *, quiet: bool, verbose: bool) -> None:
    """Our records at INFO (DEBUG with ``-v``, WARNING with ``-q``); dlt's at WARNING (ERROR with ``-q``).

    dlt's logger keeps the level its config gives it (``[runtime] log_level``, WARNING by default); the
    handler's level only lets fewer through.
    """
    ours = LiveLineHandler(live)
    ours.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(ours)
    root.setLevel(logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO))

    # dlt reuses the first handler it finds on its logger (see LiveLineHandler.setFormatter).
    dlt_logger = logging.getLogger("dlt")
    for handler in dlt_logger.handlers[:]:
        dlt_logger.removeHandler(handler)
    theirs = LiveLineHandler(live)
    theirs.setFormatter(logging.Formatter(LOG_FORMAT))
    theirs.setLevel(logging.ERROR if quiet else logging.NOTSET)
    dlt_logger.addHandler(theirs)
    dlt_logger.propagate = False


class Progress:
    """Pages, jobs, rate and ETA: a live line on a terminal, a log line every few seconds elsewhere.

    Called from the connector's page threads (``on_page``), so it counts under a lock.
    """

    def __init__(
        self, live: LiveLine, *, quiet: bool = False, interval_s: float | None = None
    ) -> None:
        self.live = live
        self.quiet = quiet
        self.interval_s = interval_s if interval_s is not None else (0.2 if live.enabled else 5.0)
        self.pages = self.jobs = self.expected = 0
        self.started = time.monotonic()
        self._shown = 0.0
        self._lock = threading.Lock()

    def __call__(self, page: JobsPage) -> None:
        with self._lock:
            self.pages += 1
            self.jobs += len(page.jobs)
            if page.number == 1 and page.total:
                self.expected += page.total
            now = time.monotonic()
            due = not self.quiet and now - self._shown >= self.interval_s
            if due:
                self._shown = now
                text = self.line(now)
        if due:
            if self.live.enabled:
                self.live.show(text)
            else:
                logger.info("progress: %s", text)

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

    def close(self) -> None:
        """The last figures stay on the terminal; the line is no longer live."""
        if self.live.enabled and not self.quiet and self.pages:
            self.live.show(self.line())
        self.live.finish()
