"""What the CLI shows while it runs: live progress lines on a terminal, and log lines that never collide.

On a terminal, progress redraws in place (``\\r``): one line, or one per tenant running (``load --tenants
--parallel``). A log record written meanwhile would start in the middle of it (``... ETA 0 s2026-12-03
... INFO ...``): the handler here erases the live lines, writes the record, and draws them again below it.
dlt logs through a logger of its own (not propagating to the root) and resets its level from its config at
every pipeline; it gets the same kind of handler, with a level of its own, so ``-q`` hides its warnings too.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from typing import TYPE_CHECKING, TextIO

from avepoint_dynamics import JobsPage

if TYPE_CHECKING:
    from ..load.tenant_runs import TenantResult

#: ``tenant``: ``"tenant <name>: "`` when a tenant's run logged it (:class:`TenantOfRecord`), else empty.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(tenant)s%(message)s"
_ERASE = "\r\033[K"
_UP = "\033[A"

logger = logging.getLogger("avepoint_dynamics.cli")


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 job``, ``2 jobs``, ``1,000 pages``."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


class LiveLine:
    """The lines a terminal shows in place (one, or one per key); anything else written clears them first.

    Each key (a tenant) has a line of its own, in the order the keys came; ``settle`` turns a key's line
    into an ordinary one above the live ones.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.lock = threading.RLock()
        self._lines: dict[str, str] = {}
        self._drawn = 0

    def show(self, text: str, key: str = "") -> None:
        with self.lock:
            self._lines[key] = text
            self._draw()

    def settle(self, key: str, text: str) -> None:
        """``key``'s line becomes ``text``, written above the live lines for good."""
        with self.lock:
            self._lines.pop(key, None)
            self.clear()
            self.stream.write(text + "\n")
            self.redraw()
            self.stream.flush()

    def clear(self) -> None:
        """Erase the live lines (before something else is written)."""
        if self._drawn:
            self.stream.write(_ERASE + (_UP + _ERASE) * (self._drawn - 1))
            self._drawn = 0

    def redraw(self) -> None:
        if self._lines:
            self._draw()

    def finish(self) -> None:
        """Leave the lines as they are and move below them: they are no longer live."""
        with self.lock:
            if self._drawn:
                self.stream.write("\n")
                self.stream.flush()
            self._lines.clear()
            self._drawn = 0

    def _draw(self) -> None:
        lines = list(self._lines.values())
        if len(lines) > 1:
            # a line longer than the terminal wraps, and the cursor would no longer find the first one
            width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
            lines = [line[:width] for line in lines]
        erase = _ERASE + (_UP + _ERASE) * max(self._drawn - 1, 0)
        self.stream.write(erase + "\n".join(lines))
        self.stream.flush()
        self._drawn = len(lines)


class TenantOfRecord(logging.Filter):
    """Names the tenant whose run logged a record (``load --tenants``): its thread is running that tenant."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ..load.tenant_runs import tenant_of_thread

        tenant = tenant_of_thread(record.thread)
        record.tenant = f"tenant {tenant}: " if tenant else ""
        return True


class LiveLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that erases the live line before a record and redraws it after."""

    def __init__(self, live: LiveLine) -> None:
        super().__init__(live.stream)
        self.live = live
        self.addFilter(TenantOfRecord())

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


#: No ETA before this long and this many pages after the first page.
ETA_AFTER_S = 0.5
ETA_AFTER_PAGES = 3


def configure_logging(
    live: LiveLine, *, quiet: bool, verbose: bool, level: str | None = None
) -> None:
    """Our records at INFO (DEBUG with ``-v``, WARNING with ``-q``); dlt's at WARNING (ERROR with ``-q``).

    ``level`` (``--log-level``, ``RUNTIME__LOG_LEVEL``, ``[runtime] log_level``) sets ours instead.
    dlt's logger keeps the level its config gives it (``[runtime] log_level``, WARNING by default); the
    handler's level only lets fewer through.
    """
    ours = LiveLineHandler(live)
    ours.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(ours)
    default = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    root.setLevel(getattr(logging, level) if level else default)

    # dlt reuses the first handler it finds on its logger (see LiveLineHandler.setFormatter).
    dlt_logger = logging.getLogger("dlt")
    for handler in dlt_logger.handlers[:]:
        dlt_logger.removeHandler(handler)
    theirs = LiveLineHandler(live)
    theirs.setFormatter(logging.Formatter(LOG_FORMAT))
    theirs.setLevel(logging.ERROR if quiet and not level else logging.NOTSET)
    dlt_logger.addHandler(theirs)
    dlt_logger.propagate = False


class Progress:
    """Pages, jobs, rate and ETA: a live line on a terminal, a log line every few seconds elsewhere.

    Called from the connector's page threads (``on_page``), so it counts under a lock. With a ``label``
    (a tenant), the line is that label's own, and starts with it.
    """

    def __init__(
        self,
        live: LiveLine,
        *,
        quiet: bool = False,
        interval_s: float | None = None,
        label: str = "",
    ) -> None:
        self.live = live
        self.quiet = quiet
        self.label = label
        self.interval_s = interval_s if interval_s is not None else (0.2 if live.enabled else 5.0)
        self.pages = self.jobs = self.expected = 0
        self.started = time.monotonic()
        #: When the first page arrived, and the jobs read by then: the rate of reading is measured
        #: from there (signing in and learning the service come before it and say nothing of it).
        self._first: tuple[float, int] | None = None
        self._shown = 0.0
        self._lock = threading.Lock()

    def __call__(self, page: JobsPage) -> None:
        with self._lock:
            self.pages += 1
            self.jobs += len(page.jobs)
            if self._first is None:
                self._first = (time.monotonic(), self.jobs)
            if page.number == 1 and page.total:
                self.expected += page.total
            now = time.monotonic()
            due = not self.quiet and now - self._shown >= self.interval_s
            if due:
                self._shown = now
                text = self.line(now)
        if due:
            if self.label:
                text = f"{self.label}: {text}"
            if self.live.enabled:
                self.live.show(text, self.label)
            else:
                logger.info("progress: %s", text)

    def line(self, now: float | None = None) -> str:
        now = now or time.monotonic()
        elapsed = max(now - self.started, 1e-6)
        rate = self.jobs / elapsed
        text = f"pages {self.pages:,} · jobs {self.jobs:,}"
        if self.expected:
            text += f" / {self.expected:,}"
        text += f" · {rate:,.0f} jobs/s"
        eta = self._eta(now)
        if eta is not None:
            text += f" · ETA {eta:,.0f} s"
        return text

    def _eta(self, now: float) -> float | None:
        """Seconds left at the rate since the first page; None until there is a rate to trust.

        Measured from the first page over at least ``ETA_AFTER_S`` and ``ETA_AFTER_PAGES`` pages: the
        first line must not promise 950 s because signing in took a second.
        """
        if self._first is None or not self.expected or self.jobs >= self.expected:
            return None
        since, read_then = self._first
        span = now - since
        if span < ETA_AFTER_S or self.pages < ETA_AFTER_PAGES or self.jobs <= read_then:
            return None
        return (self.expected - self.jobs) / ((self.jobs - read_then) / span)

    def close(self) -> None:
        """The last figures stay on the terminal; the line is no longer live."""
        if self.live.enabled and not self.quiet and self.pages:
            self.live.show(self.line())
        self.live.finish()

    def settle(self, outcome: str) -> None:
        """A labelled line's end: ``<label>: <outcome> · <figures>`` stays, above the lines still live.

        Nothing when no page was read (a tenant that failed at once: its error line says enough).
        """
        if self.quiet or not self.pages:
            return
        text = f"{self.label}: {outcome} · {self.line()}"
        if self.live.enabled:
            self.live.settle(self.label, text)
        else:
            logger.info("progress: %s", text)


class TenantProgress(Progress):
    """One tenant's progress (``load --tenants``): its own live line, then one line saying how it went."""

    def done(self, result: TenantResult) -> None:
        outcome = "done" if result.ok else "failed"
        self.settle(f"{outcome} in {result.seconds:,.1f} s")
