"""The live world: the job history as tests and demos change it while the server runs.

One lock guards the store; every method here takes it briefly. Reading the whole ground truth
snapshots the arrays under the lock and renders outside it, so the server keeps answering.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

from avepoint_simulator.jobs_store import (
    FINISH_STATUS_WEIGHTS,
    STATUS_WEIGHTS,
    TYPE_WEIGHTS,
    JobFilter,
    JobStore,
    pick_weighted,
)
from avepoint_simulator.times import (
    TICKS_PER_SECOND,
    ServiceClock,
    format_ticks,
    parse_time,
    ticks_from_datetime,
)

__all__ = ["World", "wall_ticks"]


def wall_ticks() -> int:
    """This machine's wall clock now, in ticks (the service's clock may be offset: ``World.now_ticks``)."""
    return ticks_from_datetime(dt.datetime.now(dt.UTC))


class World:
    """Thread-safe access to the job history, plus the changes a live service goes through.

    Args:
        store: The history to wrap.
        seed: Seeds the choices made for jobs added later.
        clock: The service's clock (default: this machine's).
    """

    def __init__(self, store: JobStore, seed: int, clock: ServiceClock | None = None) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._rng = random.Random(f"world:{seed}")
        self._clock = clock or ServiceClock()

    def now_ticks(self) -> int:
        """The service's clock now, in ticks: what a job starting now would show as its start."""
        return self._clock.ticks()

    # ------------------------------------------------------------------ reading
    @property
    def organizations(self) -> list[dict[str, Any]]:
        """The organizations jobs belong to: ``[{"id", "name", "objectType"}]``."""
        with self._lock:
            return [
                {"id": o.id, "name": o.name, "objectType": o.object_type}
                for o in self._store.organizations
            ]

    def total(self) -> int:
        """How many jobs the API holds now."""
        with self._lock:
            return len(self._store)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One job by its current or original jobId, as the API serves it, or None."""
        with self._lock:
            pos = self._store.find(job_id)
            return None if pos is None else self._store.render(pos)

    def query(
        self,
        flt: JobFilter,
        offset: int,
        limit: int,
        newest_first: bool,
        selects: str = "start",
        shuffle_ties: bool = False,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Count matching jobs and render one page (see :meth:`JobStore.query`).

        Args:
            flt: What to select.
            offset: Rank of the page's first job.
            limit: Page size.
            newest_first: Order by start time descending.
            selects: What the time window selects (``"start"``, ``"overlap"``, ``"finish"``).
            shuffle_ties: Jobs with equal start times in a new order each time.
        """
        with self._lock:
            store = self._store
            if selects == "start" or (flt.start is None and flt.end is None):  # no window asked
                total, positions = store.query(flt, offset, limit, newest_first)
            else:
                total, positions = store.query_selected(flt, selects, offset, limit, newest_first)
            if shuffle_ties and positions:
                positions = self._shuffle_ties(positions)
            return total, store.render_many(positions)

    def _shuffle_ties(self, positions: list[int]) -> list[int]:
        """Jobs with equal start times in a random order (within the page)."""
        ticks = self._store.ticks
        out: list[int] = []
        group: list[int] = []
        for pos in positions:
            if group and ticks[group[0]] != ticks[pos]:
                self._rng.shuffle(group)
                out.extend(group)
                group = []
            group.append(pos)
        self._rng.shuffle(group)
        return out + group

    def iter_ground_truth(self, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Every job held at the moment of the call, oldest first (startTime, then jobId).

        The arrays are snapshotted under the lock; rendering happens outside it.
        """
        with self._lock:
            store = self._store
            lo, hi = store.base, store.end
            statuses = bytes(store.statuses[lo:hi])
            held = {p: copy.deepcopy(j) for p, j in store.materialized.items() if lo <= p < hi}
        for start in range(lo, hi, batch):
            for pos in range(start, min(start + batch, hi)):
                job = held.get(pos)
                # Generation reads only append-only arrays (ticks, types, orgs): safe unlocked.
                yield (
                    job
                    if job is not None
                    else store.generate(pos, statuses[pos - lo], store.now_ticks)
                )

    def ground_truth(self) -> list[dict[str, Any]]:
        """Every job the API holds now, as API dicts, oldest first (startTime, then jobId)."""
        return list(self.iter_ground_truth())

    # ------------------------------------------------------------------ changing
    def add_jobs(
        self,
        n: int,
        running: int = 0,
        organization_id: str | None = None,
        spread_hours: float | None = None,
    ) -> list[dict[str, Any]]:
        """Add jobs that start after every existing job and before the wall clock now.

        Args:
            n: How many.
            running: How many of them (the newest) are still in progress.
            organization_id: Put them all in this organization (added if unknown).
            spread_hours: Spread their starts over the last this many hours (a night of jobs), still
                after every existing job. They last as long as jobs of the history do; one that would
                finish after now is still running (in addition to ``running``). Default: they all
                arrive in the last milliseconds.

        Returns:
            The new jobs as API dicts, oldest first.

        Raises:
            ValueError: ``spread_hours`` is not positive, or the newest job starts after now.
        """
        if spread_hours is not None and not spread_hours > 0:
            raise ValueError(f"spread_hours must be > 0, not {spread_hours!r}")
        if n <= 0:
            return []
        running = max(0, min(running, n))
        with self._lock:
            store = self._store
            now = self._clock.ticks()
            last = store.last_ticks()
            if last is not None and last >= now - 2 * n - TICKS_PER_SECOND:
                if last >= now:
                    raise ValueError(
                        "the newest job starts after the wall clock (was the simulator anchored "
                        "with a future `now`?); new jobs must start before now"
                    )
                while now - last <= 2 * n:
                    # Too little room for n distinct starts before now; wait a few microseconds.
                    time.sleep(0.001)
                    now = self._clock.ticks()
            floor = last if last is not None else now - 86_400 * TICKS_PER_SECOND
            if spread_hours is None:
                # A live service shows a job from the moment it starts: arrivals land in the last
                # millisecond, never back-dated behind what a client may already have read.
                low = max(floor, now - max(4 * n, TICKS_PER_SECOND // 1000))
            else:
                low = max(floor, now - int(spread_hours * 3600 * TICKS_PER_SECOND))
            rng = self._rng
            starts = sorted(rng.randrange(low + 1, now) for _ in range(n))
            org = store.org_index(organization_id, create=True) if organization_id else None
            added: list[dict[str, Any]] = []
            previous = low
            for i, start in enumerate(starts):
                start = max(start, previous + 1)
                quantized = start - start % 10 ** (7 - rng.randrange(8))
                if quantized > previous:
                    start = quantized
                start = min(start, now - 1)
                previous = start
                status = 2 if i >= n - running else pick_weighted(rng, STATUS_WEIGHTS)
                pos = store.append(
                    start,
                    pick_weighted(rng, TYPE_WEIGHTS),
                    status,
                    org if org is not None else store.pick_org(rng),
                )
                job = store.generate(pos, status, now if spread_hours is None else None)
                if spread_hours is not None and status != 2 and parse_time(job["finishTime"]) > now:
                    # It started too late in the night to be done by now: it is still running.
                    store.set_status(pos, 2)
                    job = store.generate(pos, 2, now)
                store.materialized[pos] = job
                added.append(copy.deepcopy(job))
            return added

    def finish_running(
        self, job_ids: list[str] | None = None, status: int | None = None
    ) -> list[dict[str, Any]]:
        """Finish running jobs now: finishTime = wall clock, counts and durationHours filled.

        Args:
            job_ids: Only these (ids of running jobs); default every running job.
            status: The final status (default: mostly 3, some 4 and 7).

        Returns:
            The finished jobs as API dicts.

        Raises:
            KeyError: A given jobId is not held.
        """
        with self._lock:
            store = self._store
            positions = store.running_positions()
            if job_ids is not None:
                wanted = set()
                for job_id in job_ids:
                    pos = store.find(job_id)
                    if pos is None:
                        raise KeyError(job_id)
                    wanted.add(pos)
                positions = [p for p in positions if p in wanted]
            now = self._clock.ticks()
            finished = []
            for pos in positions:
                final = (
                    status
                    if status is not None
                    else pick_weighted(self._rng, FINISH_STATUS_WEIGHTS)
                )
                job = store.render(pos)
                fresh = store.generate(pos, final, None)
                for key in (
                    "successfulEntity", "failedEntity", "skippedEntity", "warningEntity", "totalEntity",
                    "successfulRecord", "failedRecord", "skippedRecord", "warningRecord", "totalRecord",
                    "backupSize",
                ):  # fmt: skip
                    job[key] = fresh[key]
                start = store.ticks[pos]
                finish = max(now - now % 10 ** (7 - self._rng.randrange(8)), start + 1)
                job["status"] = final
                job["finishTime"] = format_ticks(finish)
                job["durationHours"] = round((finish - start) / (3600 * TICKS_PER_SECOND), 4)
                store.materialized[pos] = job
                store.set_status(pos, final)
                finished.append(copy.deepcopy(job))
            return finished

    def purge_oldest(self, n: int) -> int:
        """Retention: forget the ``n`` oldest jobs. Returns how many were purged."""
        with self._lock:
            return self._store.purge_oldest(n)

    def churn(self, n: int) -> None:
        """Insert ``n`` new jobs and purge the ``n`` oldest (what happens while a client pages)."""
        self.add_jobs(n)
        self.purge_oldest(n)

    def patch_job(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Overwrite fields of a job as served, with any value (to make it malformed on purpose).

        The job keeps its place in the order and in filters (its original start time, type,
        status and organization); only what the API serves changes. Unknown field names are
        added as extra fields.

        Returns:
            The job as now served.

        Raises:
            KeyError: No such job.
        """
        with self._lock:
            pos = self._require(job_id)
            job = self._store.render(pos)
            job.update(fields)
            if "jobId" in fields and isinstance(fields["jobId"], str):
                self._store.renamed[fields["jobId"]] = pos
            self._store.materialized[pos] = job
            return copy.deepcopy(job)

    def drop_field(self, job_id: str, field: str) -> dict[str, Any]:
        """Remove a field from a job as served (e.g. ``jobId``). Returns the job as now served."""
        with self._lock:
            pos = self._require(job_id)
            job = self._store.render(pos)
            job.pop(field, None)
            self._store.materialized[pos] = job
            return copy.deepcopy(job)

    def _require(self, job_id: str) -> int:
        pos = self._store.find(job_id)
        if pos is None:
            raise KeyError(job_id)
        return pos
