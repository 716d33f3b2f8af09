"""Which time ranges re-read the followed jobs (not final yet, or set aside), at the least cost in requests.

A followed job is re-read through a range that holds its start time: a one-second window of its own
costs one request per status selection, while the span of a cluster of followed jobs costs one request
per page of *all* the jobs in it. A nightly wave of 2,000 jobs still running in the last hours is 20 pages
as one span, against 2,000 requests one by one. The total of a span is learnt by asking for its first
page; the planner splits a cluster at its widest gap while its span costs more than its jobs one by one.
A span that pays but whose widest gap is a quarter of its time or more (last week's wave and last night's
stragglers, with a busy day between them) gets a second look: its two parts are probed too, and read instead when they
cost less than the span (the two probes are the price of a look that finds nothing to save).

Example: followed jobs at 01:00:00, 01:00:30, 01:01:10 and 09:00:00 become, after one probe of
``[01:00:00, 09:00:01)`` (say 4,000 jobs: 40 pages, dearer than 4 windows) and a split at the widest gap,
``[01:00:00, 01:01:11)`` if it holds fewer than 3 pages of jobs, and ``[09:00:00, 09:00:01)``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from .model import Window

_SECOND = timedelta(seconds=1)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
#: At most this many spans are probed per run; beyond, followed jobs are read one window each.
MAX_PROBES = 16
#: Fewer followed jobs than this in a cluster are read one window each, without a probe.
MIN_CLUSTER = 3


def point_windows(starts: list[datetime], limit: datetime | None) -> list[Window]:
    """One-second windows around each start below ``limit`` (whole seconds: robust to any rounding of
    sub-second digits), merged where they touch.

    Example:
        >>> point_windows([t("01:00:00.2"), t("01:00:00.9"), t("01:00:01.5")], None)
        [Window(01:00:00, 01:00:02)]
    """
    windows: list[Window] = []
    for moment in sorted(starts):
        low = moment.replace(microsecond=0)
        high = low + _SECOND if limit is None else min(low + _SECOND, limit)
        if limit is not None and low >= limit:
            continue
        if windows and windows[-1].end is not None and low <= windows[-1].end:
            windows[-1] = Window(windows[-1].start, max(high, windows[-1].end))
        else:
            windows.append(Window(low, high))
    return windows


def plan_follow(
    starts: list[datetime],
    limit: datetime | None,
    cost_of: Callable[[list[Window]], list[int | None]],
    reads_per_window: int = 1,
    max_probes: int = MAX_PROBES,
) -> list[Window]:
    """The ranges that re-read every followed job that started before ``limit``, cheapest first found.

    Args:
        starts: Start times of the followed jobs.
        limit: Where the run's new-jobs window starts (jobs from there on are read by it); None: no limit.
        cost_of: Probes spans (all at once): the requests reading each would take, its first page
            included (the caller keeps that page for the read), or None when the service gives no total.
        reads_per_window: Requests a one-second window costs (one per status selection).
        max_probes: Probes allowed for the whole plan.

    Returns:
        Disjoint ranges in time order, each holding at least one followed job.
    """
    points = point_windows(starts, limit)
    if len(points) < MIN_CLUSTER:
        return points
    chosen: list[Window] = []
    frontier = [points]
    probes = 0
    while frontier:
        if probes + len(frontier) > max_probes:
            chosen.extend(window for cluster in frontier for window in cluster)
            break
        spans = [_span(cluster) for cluster in frontier]
        costs = cost_of(spans)
        probes += len(spans)
        following: list[list[Window]] = []
        for cluster, span, cost in zip(frontier, spans, costs, strict=True):
            one_by_one = len(cluster) * reads_per_window
            # The probe's first page(s) are already paid for: only what is left of the span counts.
            if cost is not None and cost - reads_per_window <= one_by_one:
                parts: list[list[Window]] = []
                if _worth_a_second_look(cluster, cost, reads_per_window):
                    parts, spent = _second_look(
                        cluster, cost, reads_per_window, cost_of, max_probes - probes
                    )
                    probes += spent
                chosen.extend(window for part in parts for window in part)
                if not parts:
                    chosen.append(span)
                continue
            if cost is None:  # no total to weigh: never probe again
                max_probes = probes
            for part in _split_at_widest_gap(cluster):
                if len(part) < MIN_CLUSTER:
                    chosen.extend(part)
                else:
                    following.append(part)
        frontier = following
    return sorted(chosen, key=lambda window: window.start or _EARLIEST)


def _worth_a_second_look(cluster: list[Window], cost: int, reads_per_window: int) -> bool:
    """A span worth probing in two parts: several pages, and a widest gap of a quarter of its time or more."""
    if len(cluster) < 2 or cost < 4 * reads_per_window:
        return False
    first, last = cluster[0].start, cluster[-1].end
    if first is None or last is None:
        return False
    gaps = [
        b.start - a.end for a, b in pairwise(cluster) if b.start is not None and a.end is not None
    ]
    return bool(gaps) and max(gaps) * 4 >= last - first


def _second_look(
    cluster: list[Window],
    span_cost: int,
    reads_per_window: int,
    cost_of: Callable[[list[Window]], list[int | None]],
    probes_left: int,
) -> tuple[list[list[Window]], int]:
    """The ranges of the cluster's two parts if they cost less than what is left of its span.

    Returns the parts' ranges (``[]``: keep the span) and the probes spent. Every probe is paid by the
    time of the choice: a part is read as its span (minus its probe's page) or one window per followed
    job, whichever is less; the span would cost what is left after its own probe's page.
    """
    parts = _split_at_widest_gap(cluster)
    probed = [part for part in parts if len(part) >= MIN_CLUSTER]
    if len(probed) > probes_left:
        return [], 0
    found = iter(cost_of([_span(part) for part in probed]) if probed else [])
    ranges: list[list[Window]] = []
    left = 0
    for part in parts:
        one_by_one = len(part) * reads_per_window
        cost = next(found) if len(part) >= MIN_CLUSTER else None
        if cost is not None and cost - reads_per_window <= one_by_one:
            ranges.append([_span(part)])
            left += cost - reads_per_window
        else:
            ranges.append(part)
            left += one_by_one
    return (ranges if left < span_cost - reads_per_window else []), len(probed)


def _span(cluster: list[Window]) -> Window:
    return Window(cluster[0].start, cluster[-1].end)


def _split_at_widest_gap(cluster: list[Window]) -> list[list[Window]]:
    gaps = [
        (later.start - earlier.end, index)
        for index, (earlier, later) in enumerate(pairwise(cluster), start=1)
        if later.start is not None and earlier.end is not None
    ]
    _gap, cut = max(gaps)
    return [cluster[:cut], cluster[cut:]]
