"""One writer per (dataset, tenant), wherever runs start: a lease kept in the destination itself.

The run lock in the pipeline's working folder (:func:`~avepoint_pipelines.load.pipeline.exclusive_run`)
only sees runs of that folder: an Airflow task in a fresh temporary folder, a second host, or a CLI
backfill with another ``--pipelines-dir`` each have their own. The lease is a row of ``_avepoint_lease`` in
the destination dataset, keyed by tenant, taken with one atomic statement (``INSERT ... ON CONFLICT DO
UPDATE ... WHERE`` the row expired or is ours), so two runs into one dataset cannot both hold it, wherever
they run.

- **Expiry.** A lease lasts ``lease_seconds`` (600, whole seconds) past its last renewal, measured on the destination's
  clock (the hosts' clocks may disagree). A thread renews it every third of that while the run holds it,
  and the run checks it is still its own before it loads; a run killed with SIGKILL stops renewing, and
  its lease expires. A lease whose holder was a process of this host that no longer exists is taken over
  at once.
- **Cost.** Three or four statements per run, and one every 200 s.
- **Where a destination cannot hold it** (the filesystem destination: no SQL), the run says so in its log
  and the working folder's lock is the only one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from avepoint_dynamics import AvePointError
from dlt.destinations.exceptions import DatabaseException
from dlt.pipeline.pipeline import Pipeline

from .shared_dataset import dataset_writer

logger = logging.getLogger(__name__)

LEASE_TABLE = "_avepoint_lease"
#: How long a lease lasts past its last renewal; renewed every third of it.
DEFAULT_LEASE_SECONDS = 600.0
#: The key of the one default tenant.
NO_TENANT = ""
#: Destinations without SQL, where no lease can be kept.
NO_LEASE = {"filesystem"}


class DatasetBusy(AvePointError):
    """Another run holds the dataset's lease for this tenant (a backfill on another host, say)."""

    exit_code = 75  # like PipelineBusy: a temporary failure, try again later


class LeaseStepFailed(Exception):
    """The destination failed while the run took its lease (before anything was read).

    Shaped like dlt's ``PipelineStepFailed`` (``pipeline``, ``step``, ``exception``), so a failure is
    described the same way: the destination, the step, what it said, the settings to check.
    """

    def __init__(self, pipeline: Pipeline, error: BaseException) -> None:
        super().__init__(f"the destination failed while taking the lease: {error}")
        self.pipeline = pipeline
        self.step = "lease"
        self.exception = error


class LeaseLost(AvePointError):
    """The lease expired while the run held it and another run took it: this run loaded nothing."""

    exit_code = 75


@dataclass(frozen=True)
class Holder:
    """Who holds a lease."""

    holder: str
    host: str
    pid: int
    command: str
    acquired_at: Any
    expires_at: Any

    def describe(self) -> str:
        return (
            f"{self.command} (pid {self.pid} on {self.host}, since {self.acquired_at:%Y-%m-%d %H:%M:%S}"
            f", lease until {self.expires_at:%H:%M:%S} UTC unless renewed)"
        )


class DestinationLease:
    """The lease of one (dataset, tenant) for one run.

    Args:
        pipeline: The run's pipeline (its destination and dataset).
        tenant: The tenant, or None for the one default tenant.
        duckdb_path: The DuckDB file (its writer lock is taken around every statement), or None.
        seconds: How long the lease lasts past each renewal.
        command: What the run is, for the message another run shows (``load``, ``backfill``...).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        tenant: str | None,
        duckdb_path: str | None,
        seconds: float = DEFAULT_LEASE_SECONDS,
        command: str = "a run",
    ) -> None:
        self.pipeline = pipeline
        self.key = tenant or NO_TENANT
        self.duckdb_path = duckdb_path
        self.seconds = float(seconds)
        self.command = command
        self.holder = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._open = threading.local()  # this thread's client while a step's statements share it

    # ------------------------------------------------------------------ the run's side
    def acquire(self) -> None:
        """Take the lease, or raise :class:`DatasetBusy` naming who holds it."""
        with self._session():
            self._ensure_table()
            claimed = self._claim()
            current = None if claimed else self._current()
            if not claimed and current is not None and self._dead_here(current):
                claimed = self._take_over(current)
                if claimed:
                    logger.warning(
                        "took over the lease of %s: its holder, pid %d on this host, is gone",
                        self._what(),
                        current.pid,
                    )
        if claimed:
            self._start_renewing()
            return
        held = current.describe() if current is not None else "another run"
        raise DatasetBusy(
            f"{self._what()} is being written by {held}; one run writes a dataset's tenant at a "
            "time, so try again when it ends"
        )

    def confirm(self) -> None:
        """Renew the lease before writing; :class:`LeaseLost` if another run took it meanwhile."""
        with self._session():
            claimed = self._claim()
        if not claimed:
            raise LeaseLost(
                f"the lease of {self._what()} expired while this run read (no renewal for "
                f"{self.seconds:.0f} s) and another run took it; nothing was loaded, run again"
            )

    def release(self) -> None:
        """Stop renewing and give the lease back (a lease this run no longer holds is left alone)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        with suppress(DatabaseException):
            self._execute(
                "DELETE FROM {table} WHERE lease_key = %s AND holder = %s", self.key, self.holder
            )

    # ------------------------------------------------------------------ statements
    def _what(self) -> str:
        tenant = f"tenant {self.key}" if self.key else "the default tenant"
        return f"dataset {self.pipeline.dataset_name!r} ({tenant})"

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """One connection (and the DuckDB file's writer lock) for a step's statements, in this thread.

        Each ``pipeline.sql_client()`` resolves the destination's configuration and opens the database
        (~30 ms for a DuckDB file on the benchmark machine): taking the lease is three statements, and
        each opened its own until issue 23. Nested sessions reuse the outer one's client.
        """
        client = getattr(self._open, "client", None)
        if client is not None:
            yield client
            return
        with dataset_writer(self.duckdb_path), self.pipeline.sql_client() as client:
            self._open.client = client
            try:
                yield client
            finally:
                self._open.client = None

    def _execute(self, sql: str, *args: Any) -> Any:
        with self._session() as client:
            table = client.make_qualified_table_name(LEASE_TABLE)
            name = client.escape_column_name(LEASE_TABLE)
            return client.execute_sql(sql.format(table=table, name=name), *args)

    def _ensure_table(self) -> None:
        with self._session() as client:
            if not client.has_dataset():
                with suppress(DatabaseException):  # another run created it a moment ago
                    client.create_dataset()
            table = client.make_qualified_table_name(LEASE_TABLE)
            with suppress(DatabaseException):  # the same race, for the table
                client.execute_sql(
                    f"CREATE TABLE IF NOT EXISTS {table} (lease_key VARCHAR PRIMARY KEY, "
                    "holder VARCHAR NOT NULL, host VARCHAR, pid BIGINT, command VARCHAR, "
                    "acquired_at TIMESTAMP WITH TIME ZONE, expires_at TIMESTAMP WITH TIME ZONE)"
                )

    def _claim(self) -> bool:
        """Insert the lease, or take it over when expired, or renew it when ours: one statement."""
        self._execute(
            "INSERT INTO {table} (lease_key, holder, host, pid, command, acquired_at, "
            "expires_at) VALUES (%s, %s, %s, %s, %s, now(), now() + INTERVAL '1 second' * %s) "
            "ON CONFLICT (lease_key) DO UPDATE SET holder = excluded.holder, host = excluded.host, "
            "pid = excluded.pid, command = excluded.command, expires_at = excluded.expires_at, "
            "acquired_at = CASE WHEN {name}.holder = excluded.holder THEN {name}.acquired_at "
            "ELSE excluded.acquired_at END "
            "WHERE {name}.expires_at < now() OR {name}.holder = excluded.holder",
            self.key,
            self.holder,
            self.host,
            self.pid,
            self.command,
            round(self.seconds),
        )
        current = self._current()
        return current is not None and current.holder == self.holder

    def _current(self) -> Holder | None:
        rows = self._execute(
            "SELECT holder, host, pid, command, acquired_at, expires_at FROM {table} "
            "WHERE lease_key = %s",
            self.key,
        )
        return Holder(*rows[0]) if rows else None

    def _take_over(self, gone: Holder) -> bool:
        self._execute(
            "UPDATE {table} SET holder = %s, host = %s, pid = %s, command = %s, acquired_at = now(), "
            "expires_at = now() + INTERVAL '1 second' * %s WHERE lease_key = %s AND holder = %s",
            self.holder,
            self.host,
            self.pid,
            self.command,
            round(self.seconds),
            self.key,
            gone.holder,
        )
        current = self._current()
        return current is not None and current.holder == self.holder

    def _dead_here(self, holder: Holder) -> bool:
        """The holder was a process of this host that no longer runs (killed, crashed)."""
        if holder.host != self.host or holder.pid == self.pid:
            return False
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # someone else's process: alive
            return False
        return False

    def _start_renewing(self) -> None:
        def renew() -> None:
            while not self._stop.wait(self.seconds / 3):
                try:
                    with self._session():
                        claimed = self._claim()
                    if not claimed:
                        logger.warning("the lease of %s was taken by another run", self._what())
                        return
                except DatabaseException as error:  # the next renewal tries again
                    logger.warning("could not renew the lease of %s: %s", self._what(), error)

        self._renewer = threading.Thread(target=renew, name="avepoint-lease", daemon=True)
        self._renewer.start()


@contextmanager
def dataset_lease(
    pipeline: Pipeline,
    tenant: str | None,
    duckdb_path: str | None,
    seconds: float = DEFAULT_LEASE_SECONDS,
    command: str = "a run",
) -> Iterator[DestinationLease | None]:
    """Hold the (dataset, tenant) lease while the block runs; None where the destination holds none.

    Raises:
        DatasetBusy: another run holds it.
    """
    destination = pipeline.destination
    if destination is None or destination.destination_name in NO_LEASE:
        # Every run says it (an INFO line: not a fault of this run, and -q keeps quiet about it).
        logger.info(
            "the %s destination cannot hold a lease: runs into dataset %r are kept apart only within "
            "this working folder (%s)",
            destination.destination_name if destination else "?",
            pipeline.dataset_name,
            pipeline.working_dir,
        )
        yield None
        return
    lease = DestinationLease(pipeline, tenant, duckdb_path, seconds, command)
    try:
        lease.acquire()
    except AvePointError:
        raise
    except Exception as error:  # the destination's driver: unreachable, refused, no permission
        raise LeaseStepFailed(pipeline, error) from error
    try:
        yield lease
    finally:
        lease.release()
