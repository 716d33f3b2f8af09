"""Stopping a run in seconds, whatever is in flight: abandoned requests, interruptible waits.

A request can hang for its whole timeout (60 s) and then be retried for minutes; a stop must not wait for
it. A run's page requests go to daemon threads (:class:`PagePool`): stopping abandons them, the run's
waits end at once with :class:`RunStopped`, and whatever an abandoned request brings back is dropped.
Nothing is committed by a stopped run (dlt commits the state with a load package only), so the next run
reads from the last complete load.

A run in the main thread is stopped by the interruption itself (Ctrl-C, or the CLI's SIGTERM handler):
leaving the reading abandons its pool. Runs in other threads (tenants side by side) are stopped by
:func:`stop_all`.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_ACTIVE: set[StopSignal] = set()
_ACTIVE_LOCK = threading.Lock()
_POOL_NUMBER = itertools.count(1)


class RunStopped(Exception):
    """The run was asked to stop (SIGINT / SIGTERM); what it had in flight was abandoned."""

    def __init__(self, what: str = "the run was stopped; what it had in flight was abandoned"):
        super().__init__(what)


class StopSignal:
    """One run's stop: set when the run ends or is stopped; its waits and requests check it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._on_stop: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        """Stop: wake every wait, and abandon what the run's pools have in flight."""
        with self._lock:
            self._event.set()
            callbacks, self._on_stop = self._on_stop, []
        for callback in callbacks:
            callback()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the run stops (at once if it already has)."""
        with self._lock:
            if not self._event.is_set():
                self._on_stop.append(callback)
                return
        callback()

    def check(self) -> None:
        """Raise :class:`RunStopped` if the run was stopped."""
        if self._event.is_set():
            raise RunStopped()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or until the run is stopped (then :class:`RunStopped`)."""
        if self._event.wait(max(0.0, seconds)):
            raise RunStopped()


#: The stop of the run whose threads these are (set by :func:`run_scope` and the pool's workers).
_CURRENT = threading.local()


def current_stop() -> StopSignal | None:
    """The stop of the run this thread works for, if any."""
    return getattr(_CURRENT, "stop", None)


def interruptible_sleep(seconds: float) -> None:
    """A retry's wait: ends at once with :class:`RunStopped` when this thread's run is stopped."""
    stop = current_stop()
    if stop is None:
        stop = StopSignal()  # outside a run: an ordinary wait
    stop.sleep(seconds)


@contextmanager
def run_scope() -> Iterator[StopSignal]:
    """One run: its stop signal, registered for :func:`stop_all`, set when the run ends either way."""
    stop = StopSignal()
    previous = current_stop()
    _CURRENT.stop = stop
    with _ACTIVE_LOCK:
        _ACTIVE.add(stop)
    try:
        yield stop
    finally:
        stop.set()
        with _ACTIVE_LOCK:
            _ACTIVE.discard(stop)
        _CURRENT.stop = previous


def stop_all() -> int:
    """Stop every run of this process (a signal handler's job: each ends within seconds).

    Returns:
        How many runs were stopped.
    """
    with _ACTIVE_LOCK:
        running = list(_ACTIVE)
    for stop in running:
        stop.set()
    return len(running)


class PagePool:
    """A fixed number of daemon worker threads for one run's requests; abandoned, never waited for, on stop.

    ``concurrent.futures.ThreadPoolExecutor`` waits for its running workers when it shuts down and again
    when the interpreter exits: a hanging request held a stop for its whole timeout and retries.

    Args:
        workers: Threads (requests in flight at most).
        stop: The run's stop: setting it fails every unfinished future with :class:`RunStopped`.
        name: Thread name prefix.
    """

    def __init__(self, workers: int, stop: StopSignal, name: str = "avepoint-page") -> None:
        self._stop = stop
        self._work: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ]
        self._work = queue.SimpleQueue()
        self._unfinished: set[Future[Any]] = set()
        self._lock = threading.Lock()
        self._closed = False
        number = next(_POOL_NUMBER)
        self._threads = [
            threading.Thread(target=self._worker, name=f"{name}-{number}_{index}", daemon=True)
            for index in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()
        stop.on_stop(self.abandon)

    def submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        """Run ``fn(*args)`` on a worker; a stopped pool fails the future at once."""
        future: Future[R] = Future()
        with self._lock:
            if self._closed or self._stop.is_set:
                future.set_exception(RunStopped())
                return future
            self._unfinished.add(future)
        future.add_done_callback(self._forget)
        self._work.put((future, fn, args))
        return future

    def owns(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` is one of this pool's workers."""
        return thread in self._threads

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn`` over ``items`` concurrently; results in the items' order."""
        futures = [self.submit(fn, item) for item in items]
        return (future.result() for future in futures)

    def abandon(self) -> None:
        """Stop: fail every unfinished future with :class:`RunStopped`, let the workers go."""
        with self._lock:
            unfinished, self._unfinished = list(self._unfinished), set()
            first_close = not self._closed
            self._closed = True
        for future in unfinished:
            if not future.cancel():
                with suppress(InvalidStateError):  # it finished meanwhile
                    future.set_exception(RunStopped())
        if first_close:
            for _ in self._threads:
                self._work.put(None)

    def shutdown(self) -> None:
        """End the workers once the queued work is done (none is left after a complete read)."""
        with self._lock:
            first_close = not self._closed
            self._closed = True
        if first_close:
            for _ in self._threads:
                self._work.put(None)

    def __enter__(self) -> PagePool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.shutdown()
        else:
            self.abandon()

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._unfinished.discard(future)

    def _worker(self) -> None:
        _CURRENT.stop = self._stop
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as error:  # handed to whoever waits for the future
                _settle(future, error=error)
            else:
                _settle(future, result=result)


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Give a future its outcome, unless a stop already failed it (its result is dropped then)."""
    with suppress(InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class InPool:
    """A page source whose requests from the run's own thread go through the pool too.

    A request made in the run's thread (a probe, the service's time) would hold a stop for its whole
    timeout when that thread is not the main one (tenants side by side): waiting on a pool's future
    ends at once when the run is stopped.
    """

    def __init__(self, client: Any, pool: PagePool) -> None:
        self._client = client
        self._pool = pool

    def fetch_page(self, window: Any, number: int, page_size: int | None = None) -> Any:
        if self._pool.owns(threading.current_thread()):
            return self._client.fetch_page(window, number, page_size)
        return self._pool.submit(self._client.fetch_page, window, number, page_size).result()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._client, name, value)
