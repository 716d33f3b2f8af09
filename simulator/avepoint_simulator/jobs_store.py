"""The job history: a deterministic generator and the indexes that answer a page in milliseconds.

A million jobs cannot be a million dicts (that would be gigabytes). The store keeps only what
filtering and ordering need, in flat arrays indexed by *position* (0 = the oldest job ever held):

- ``ticks``: start time, 100 ns ticks, non-decreasing with position (so ``bisect`` finds a window);
- ``types``, ``statuses``, ``orgs``, ``object_types``: one byte each;
- per filter value, the sorted array of positions holding it (so a filtered count is two bisects).

Everything else in a job (ids, finish time, counts, sizes) is generated on demand from
``(seed, position)``; a job that was changed (finished, patched, added live) is kept as a dict
in ``materialized``. Purging the oldest jobs only moves ``base``: positions never change.

Not thread-safe on its own: :class:`avepoint_simulator.world.World` holds the lock.
"""

from __future__ import annotations

import copy
import itertools
import math
import operator
import random
import uuid
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from avepoint_simulator.times import TICKS_PER_SECOND, format_compact, format_ticks, parse_time

__all__ = [
    "JOB_TYPES",
    "MODULES",
    "STATUS_NAMES",
    "TYPE_PREFIXES",
    "JobFilter",
    "JobStore",
    "Organization",
]

#: Job type codes (``type``): 1 backup, 2 restore, 4 dry run, 8 retention, 16 audit backup, 32 export.
JOB_TYPES = (1, 2, 4, 8, 16, 32)
#: jobId prefixes by type, after AvePoint's "DCIB..." (Dynamics Cloud Incremental Backup).
TYPE_PREFIXES = {1: "DCIB", 2: "DCRS", 4: "DCDR", 8: "DCRT", 16: "DCAB", 32: "DCEX"}
#: ``objectType`` -> ``module``.
MODULES = {1: "Customer Engagement", 2: "Unified Operations"}
#: Documented status codes; others exist and are undocumented.
STATUS_NAMES = {2: "in progress", 3: "finished", 4: "failed", 7: "finished with exception"}

TYPE_WEIGHTS = {1: 80, 2: 4, 4: 2, 8: 8, 16: 5, 32: 1}
STATUS_WEIGHTS = {3: 88, 4: 5, 7: 7}
FINISH_STATUS_WEIGHTS = {3: 85, 4: 5, 7: 10}
# (name, objectType, weight): several tenants' environments, CE and F&O.
_ORGS = (
    ("contoso-prod", 1, 30),
    ("contoso-dev", 1, 10),
    ("fabrikam-prod", 1, 25),
    ("fabrikam-uat", 1, 10),
    ("northwind-fo-prod", 2, 15),
    ("adatum-fno", 2, 10),
)
# Median duration in minutes by type; durations are log-normal around it.
_MEDIAN_MINUTES = {1: 20.0, 2: 10.0, 4: 5.0, 8: 2.0, 16: 8.0, 32: 15.0}
# About 2 % of jobs start at exactly the same moment as the next newer one (boundary tests).
_TIE_THRESHOLD = 5  # out of 256
_ID_MODULUS = 10**8
#: Generated jobs run at most 6 hours (durations are capped at 360 minutes).
_MAX_GENERATED_TICKS = 6 * 3600 * TICKS_PER_SECOND + TICKS_PER_SECOND


@dataclass(frozen=True)
class Organization:
    """A Dynamics 365 organization (environment) whose jobs the API reports."""

    id: str
    name: str
    object_type: int


@dataclass(frozen=True)
class JobFilter:
    """What a jobs request selects. ``None`` means "any"; times are ticks, window half-open."""

    start: int | None = None
    end: int | None = None
    type: int | None = None
    status: int | None = None
    organization_id: str | None = None
    object_type: int | None = None


def _table(weights: dict[int, int]) -> bytes:
    """A 256-entry lookup table: one random byte picks a value with the given weights."""
    total = sum(weights.values())
    out = bytearray()
    items = list(weights.items())
    for value, weight in items:
        out += bytes([value]) * (256 * weight // total)
    out += bytes([items[0][0]]) * (256 - len(out))
    return bytes(out)


def pick_weighted(rng: random.Random, weights: dict[int, int]) -> int:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


class JobStore:
    """Compact, indexed job history.

    Args:
        jobs: How many jobs the history starts with.
        seed: Seeds everything; same seed and ``now_ticks`` give identical jobs.
        now_ticks: The anchor: every generated job starts before it.
        history_days: How far back the history reaches.
        running: How many of the newest jobs are in progress (default: 3 when there are at
            least 30 jobs, fewer for tiny histories).
    """

    def __init__(
        self,
        jobs: int,
        seed: int,
        now_ticks: int,
        history_days: float = 180.0,
        running: int | None = None,
    ) -> None:
        if jobs < 0:
            raise ValueError("jobs must be >= 0")
        self.seed = seed
        self.now_ticks = now_ticks
        self._seed_base = (seed & 0xFFFFFFFF) << 40
        meta = random.Random(f"avepoint-simulator:{seed}")
        self.organizations: list[Organization] = [
            Organization(str(uuid.UUID(int=meta.getrandbits(128), version=4)), name, object_type)
            for name, object_type, _ in _ORGS
        ]
        self._org_position = {org.id: i for i, org in enumerate(self.organizations)}
        self._org_weights = {i: w for i, (_, _, w) in enumerate(_ORGS)}
        # An offset so jobId digits look random yet stay unique and grow with position.
        self._id_offset = meta.randrange(10**7, 5 * 10**7)
        self.base = 0
        self.materialized: dict[int, dict[str, Any]] = {}
        self.renamed: dict[str, int] = {}
        # Bumped by every change that can alter a query's matches (invalidates the cache).
        self.version = 0
        self._match_cache: OrderedDict[tuple[Any, ...], tuple[int, array[int]]] = OrderedDict()
        self._build(jobs, history_days, running)

    # ------------------------------------------------------------------ building
    def _build(self, n: int, history_days: float, running: int | None) -> None:
        rng = random.Random(self.seed)
        getrandbits, log = rng.getrandbits, math.log
        span = int(history_days * 86_400 * TICKS_PER_SECOND)
        mean_gap = span / max(n, 1)
        type_table = _table(TYPE_WEIGHTS)
        org_table = _table(self._org_weights)
        status_table = _table(STATUS_WEIGHTS)
        powers = [10 ** (7 - d) for d in range(8)]
        ticks = array("q", bytes(8 * n))
        types, statuses, orgs = bytearray(n), bytearray(n), bytearray(n)
        t = self.now_ticks - 1 - int(rng.random() * mean_gap)
        job_type = 1
        # Built newest to oldest so every start is below "now" without a second pass.
        for pos in range(n - 1, -1, -1):
            r = getrandbits(64)
            if pos == n - 1 or (r & 0xFF) >= _TIE_THRESHOLD:
                u = (((r >> 8) & 0xFFFFFF) + 1) / 16_777_217
                t -= int(-log(u) * mean_gap) + 1
                # Quantizing the running value (not each job independently) keeps the order.
                t -= t % powers[(r >> 32) & 7]
                job_type = type_table[(r >> 35) & 0xFF]
            # else: a tie, same start and same type, so jobId order == position order.
            ticks[pos] = t
            types[pos] = job_type
            orgs[pos] = org_table[(r >> 43) & 0xFF]
            statuses[pos] = status_table[(r >> 51) & 0xFF]
        if running is None:
            running = min(3, n // 10)
        for pos in range(max(0, n - running), n):
            statuses[pos] = 2
        self.ticks = ticks
        self.types = types
        self.statuses = statuses
        self.orgs = orgs
        self.object_types = orgs.translate(self._object_type_table())
        self.indexes: dict[str, dict[int, array[int]]] = {
            "type": self._index(types),
            "status": self._index(statuses),
            "org": self._index(orgs),
            "objectType": self._index(self.object_types),
        }

    def _object_type_table(self) -> bytes:
        table = bytearray(256)
        for i, org in enumerate(self.organizations):
            table[i] = org.object_type
        return bytes(table)

    @staticmethod
    def _index(values: bytearray) -> dict[int, array[int]]:
        index: dict[int, array[int]] = {}
        positions = range(len(values))
        for value in set(values):
            mask = values.translate(bytes(int(i == value) for i in range(256)))
            index[value] = array("i", itertools.compress(positions, mask))
        return index

    # ------------------------------------------------------------------ size
    def __len__(self) -> int:
        return len(self.ticks) - self.base

    @property
    def end(self) -> int:
        """One past the newest position."""
        return len(self.ticks)

    def last_ticks(self) -> int | None:
        """Start of the newest job held, or None when empty."""
        return self.ticks[-1] if len(self) else None

    # ------------------------------------------------------------------ organizations
    def org_index(self, organization_id: str, create: bool = False) -> int | None:
        """Position of an organization in the table (lower-case GUID), optionally adding it."""
        key = organization_id.lower()
        found = self._org_position.get(key)
        if found is None and create:
            if len(self.organizations) >= 255:
                raise ValueError("at most 255 organizations")
            found = len(self.organizations)
            self.organizations.append(Organization(key, f"org-{key[:8]}", 1))
            self._org_position[key] = found
        return found

    def pick_org(self, rng: random.Random) -> int:
        """A random organization of the original table, with the usual weights."""
        return pick_weighted(rng, self._org_weights)

    # ------------------------------------------------------------------ queries
    def window(self, start: int | None, end: int | None) -> tuple[int, int]:
        """Positions ``[lo, hi)`` of the live jobs with ``start <= startTime < end``."""
        lo = self.base if start is None else bisect_left(self.ticks, start, self.base)
        hi = self.end if end is None else bisect_left(self.ticks, end, lo)
        return lo, max(lo, hi)

    def query(
        self, flt: JobFilter, offset: int, limit: int, newest_first: bool
    ) -> tuple[int, list[int]]:
        """Count the matching jobs and return the positions of one page.

        Args:
            flt: The filter.
            offset: Rank of the first job of the page in the chosen order.
            limit: Page size.
            newest_first: Order by start time descending (ties: position descending).

        Returns:
            ``(total matching, positions of the page in order)``.
        """
        lo, hi = self.window(flt.start, flt.end)
        conditions: list[tuple[str, bytearray | bytes, int]] = []
        if flt.type is not None:
            conditions.append(("type", self.types, flt.type))
        if flt.status is not None:
            conditions.append(("status", self.statuses, flt.status))
        if flt.object_type is not None:
            conditions.append(("objectType", self.object_types, flt.object_type))
        if flt.organization_id is not None:
            org = self.org_index(flt.organization_id)
            if org is None:
                return 0, []
            conditions.append(("org", self.orgs, org))
        # A value outside a byte (status 1000) can match nothing.
        if any(not 0 <= value < 256 for _, _, value in conditions):
            return 0, []
        if not conditions:
            total = hi - lo
            ranks = range(offset, min(offset + limit, total))
            if newest_first:
                return total, [hi - 1 - r for r in ranks]
            return total, [lo + r for r in ranks]
        # Walk the smallest candidate set; with one condition it is exactly the answer.
        candidates: list[tuple[int, array[int], int, int]] = []
        for name, _, value in conditions:
            positions = self.indexes[name].get(value)
            if positions is None:
                return 0, []
            a, b = bisect_left(positions, lo), bisect_left(positions, hi)
            candidates.append((b - a, positions, a, b))
        candidates.sort(key=lambda c: c[0])
        count, positions, a, b = candidates[0]
        if len(conditions) == 1:
            ranks = range(offset, min(offset + limit, count))
            if newest_first:
                return count, [positions[b - 1 - r] for r in ranks]
            return count, [positions[a + r] for r in ranks]
        key = (lo, hi, tuple((name, value) for name, _, value in conditions))
        matches = self._cached_matches(key)
        if matches is None:
            matches = self._walk(
                positions[a:b], [(column, value) for _, column, value in conditions]
            )
            self._remember(key, matches)
        total = len(matches)
        if newest_first:
            return total, [
                matches[total - 1 - r] for r in range(offset, min(offset + limit, total))
            ]
        return total, list(matches[offset : offset + limit])

    def query_selected(
        self, flt: JobFilter, selects: str, offset: int, limit: int, newest_first: bool
    ) -> tuple[int, list[int]]:
        """Like :meth:`query`, for a service whose time window selects another way than by start time.

        Args:
            flt: The filter; ``start``/``end`` bound the window ``[start, end)`` in ticks.
            selects: ``"finish"``: jobs that finished in the window (running jobs never match);
                ``"overlap"``: jobs that ran during it (started before its end, not finished before its
                start; running jobs match any window after their start).
            offset: Rank of the first job of the page.
            limit: Page size.
            newest_first: Order by start time descending.

        A slow path (it reads the finish time of each candidate): made for the tests' histories.
        """
        lo, hi = self.window(None, flt.end)
        if flt.start is not None:
            reach = flt.start - _MAX_GENERATED_TICKS
            lo = max(lo, bisect_left(self.ticks, reach, self.base))
        candidates = set(range(lo, hi))
        candidates.update(p for p in self.materialized if self.base <= p < hi)
        candidates.update(p for p in self.running_positions() if p < hi)
        matches = []
        for pos in sorted(candidates):
            if not self._matches_codes(pos, flt):
                continue
            finish = self._finish_ticks(pos)
            if selects == "finish":
                inside = finish is not None and (flt.start is None or finish >= flt.start)
                inside = inside and (flt.end is None or finish < flt.end)  # type: ignore[operator]
            else:  # overlap
                inside = flt.start is None or finish is None or finish >= flt.start
            if inside:
                matches.append(pos)
        total = len(matches)
        ordered = matches[::-1] if newest_first else matches
        return total, ordered[offset : offset + limit]

    def _matches_codes(self, pos: int, flt: JobFilter) -> bool:
        if flt.type is not None and self.types[pos] != flt.type:
            return False
        if flt.status is not None and self.statuses[pos] != flt.status:
            return False
        if flt.object_type is not None and self.object_types[pos] != flt.object_type:
            return False
        if flt.organization_id is not None:
            org = self.org_index(flt.organization_id)
            if org is None or self.orgs[pos] != org:
                return False
        return True

    def _finish_ticks(self, pos: int) -> int | None:
        held = self.materialized.get(pos)
        if held is not None:
            raw = held.get("finishTime")
            if not isinstance(raw, str):
                return None
            try:
                return parse_time(raw)
            except ValueError:
                return None
        if self.statuses[pos] == 2:
            return None
        job = self.generate(pos, self.statuses[pos], self.now_ticks)
        return parse_time(job["finishTime"])

    @staticmethod
    def _walk(candidates: array[int], checks: list[tuple[bytearray | bytes, int]]) -> array[int]:
        """Candidates whose columns all hold the wanted values (C-level loops: itemgetter,
        map, compress; a Python loop costs several times more on 100,000 candidates)."""
        if len(candidates) < 2:
            return array("i", [p for p in candidates if all(c[p] == v for c, v in checks)])
        mask: Iterator[Any] | None = None
        for column, value in checks:
            hits = map(value.__eq__, operator.itemgetter(*candidates)(column))
            mask = hits if mask is None else map(operator.and_, mask, hits)
        assert mask is not None
        return array("i", itertools.compress(candidates, mask))

    def _cached_matches(self, key: tuple[Any, ...]) -> array[int] | None:
        # A client pages the same combined filter many times: walk once per store version.
        held = self._match_cache.get(key)
        if held is None or held[0] != self.version:
            return None
        self._match_cache.move_to_end(key)
        return held[1]

    def _remember(self, key: tuple[Any, ...], matches: array[int]) -> None:
        self._match_cache[key] = (self.version, matches)
        while len(self._match_cache) > 32:
            self._match_cache.popitem(last=False)

    # ------------------------------------------------------------------ jobs
    def job_id_of(self, pos: int) -> str:
        """The jobId a position was generated with (even if a patch changed it since)."""
        digits = (self._id_offset + pos) % _ID_MODULUS
        return f"{TYPE_PREFIXES.get(self.types[pos], 'DCXX')}{format_compact(self.ticks[pos])}{digits:08d}"

    def find(self, job_id: str) -> int | None:
        """Position of a live job by its current or original jobId."""
        pos = self.renamed.get(job_id)
        if pos is None and len(job_id) == 26 and job_id[-8:].isdigit():
            pos = (int(job_id[-8:]) - self._id_offset) % _ID_MODULUS
            if not (self.base <= pos < self.end) or self.job_id_of(pos) != job_id:
                return None
        if pos is None or not (self.base <= pos < self.end):
            return None
        return pos

    def render(self, pos: int) -> dict[str, Any]:
        """The job at a position as the API serves it (a fresh dict the caller may keep)."""
        held = self.materialized.get(pos)
        if held is not None:
            return copy.deepcopy(held)
        return self.generate(pos, self.statuses[pos], self.now_ticks)

    def render_many(self, positions: Iterable[int]) -> list[dict[str, Any]]:
        """Render several positions."""
        return [self.render(p) for p in positions]

    def generate(self, pos: int, status: int, finish_cap: int | None) -> dict[str, Any]:
        """Generate the job at a position, deterministically from ``(seed, pos)``.

        Args:
            pos: Position (its start time, type and organization come from the arrays).
            status: Status to generate counts for (2 = in progress: no finish).
            finish_cap: Latest allowed finish (ticks); a job never finishes in the future.
        """
        rng = random.Random(self._seed_base + pos)
        job_type = self.types[pos]
        start = self.ticks[pos]
        org = self.organizations[self.orgs[pos]]
        finish: int | None = None
        hours: float | None = None
        if status != 2:
            minutes = min(
                360.0,
                max(0.5, rng.lognormvariate(math.log(_MEDIAN_MINUTES.get(job_type, 10.0)), 0.8)),
            )
            exact = start + int(minutes * 60 * TICKS_PER_SECOND)
            finish = exact - exact % 10 ** (7 - rng.randrange(8))
            if finish_cap is not None and finish > finish_cap:
                finish = finish_cap
            if finish <= start:
                finish = start + 1
            hours = round((finish - start) / (3600 * TICKS_PER_SECOND), 4)
        entities = self._counts(
            rng, status, rng.randint(20, 600) if job_type in (1, 16) else rng.randint(1, 60)
        )
        records = self._counts(
            rng,
            status,
            rng.randint(1_000, 2_000_000) if job_type in (1, 16) else rng.randint(10, 50_000),
        )
        size = records[4] * rng.randint(1_500, 9_000) if job_type in (1, 16, 32) else 0
        return {
            "module": MODULES.get(org.object_type, "Customer Engagement"),
            "type": job_type,
            "jobId": self.job_id_of(pos),
            "startTime": format_ticks(start),
            "finishTime": None if finish is None else format_ticks(finish),
            "durationHours": hours,
            "status": status,
            "successfulEntity": entities[0],
            "failedEntity": entities[1],
            "skippedEntity": entities[2],
            "warningEntity": entities[3],
            "totalEntity": entities[4],
            "successfulRecord": records[0],
            "failedRecord": records[1],
            "skippedRecord": records[2],
            "warningRecord": records[3],
            "totalRecord": records[4],
            "backupSize": size,
            "organizationId": org.id,
            "organizationName": org.name,
            "objectType": org.object_type,
        }

    @staticmethod
    def _counts(rng: random.Random, status: int, total: int) -> tuple[int, int, int, int, int]:
        """(successful, failed, skipped, warning, total) that add up, shaped by the status."""
        if status == 2:
            total = int(total * rng.random())  # only what is done so far
        skipped = rng.randint(0, max(0, total // 50)) if rng.random() < 0.3 else 0
        failed = warning = 0
        if status == 4:
            failed = rng.randint(1, max(1, total - skipped)) if total - skipped > 0 else 0
        elif status == 7:
            failed = rng.randint(0, max(0, total // 100))
            warning = rng.randint(1, max(1, total // 20)) if total - skipped - failed > 0 else 0
        elif status not in (2, 3):
            failed = rng.randint(0, max(0, total // 100))
        successful = max(0, total - skipped - failed - warning)
        return successful, failed, skipped, warning, successful + failed + skipped + warning

    # ------------------------------------------------------------------ changes
    def append(self, start: int, job_type: int, status: int, org: int) -> int:
        """Add a job after every existing one; returns its position."""
        last = self.last_ticks()
        if last is not None and start < last:
            raise ValueError("new jobs must start after every existing job")
        pos = len(self.ticks)
        self.version += 1
        self.ticks.append(start)
        self.types.append(job_type)
        self.statuses.append(status)
        self.orgs.append(org)
        object_type = self.organizations[org].object_type
        self.object_types.append(object_type)
        for name, value in (
            ("type", job_type),
            ("status", status),
            ("org", org),
            ("objectType", object_type),
        ):
            self.indexes[name].setdefault(value, array("i")).append(pos)
        return pos

    def set_status(self, pos: int, status: int) -> None:
        """Move a job between status indexes (a running job finishing)."""
        old = self.statuses[pos]
        if old == status:
            return
        self.version += 1
        positions = self.indexes["status"][old]
        del positions[bisect_left(positions, pos)]
        target = self.indexes["status"].setdefault(status, array("i"))
        target.insert(bisect_left(target, pos), pos)
        self.statuses[pos] = status

    def purge_oldest(self, n: int) -> int:
        """Forget the ``n`` oldest jobs (retention); returns how many went."""
        n = max(0, min(n, len(self)))
        self.version += 1
        self.base += n
        for pos in [p for p in self.materialized if p < self.base]:
            del self.materialized[pos]
        for job_id in [j for j, p in self.renamed.items() if p < self.base]:
            del self.renamed[job_id]
        return n

    def running_positions(self) -> list[int]:
        """Positions of the live jobs whose status is 2 (in progress)."""
        positions = self.indexes["status"].get(2, array("i"))
        return list(positions[bisect_left(positions, self.base) :])
