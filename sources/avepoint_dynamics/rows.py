"""Job objects from the API → typed Arrow batches for ``jobs`` (one row per job, labels added).

A job that cannot become a row is set aside (``rejected``); the rows that remove jobs from ``jobs`` (a
status filter they left) are built here too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention
from dlt.common.schema.typing import TTableSchemaColumns

from .rejected import DELETED_COLUMN, Bounds, RejectedJob, reject, typed_table
from .settings import FINAL_STATUSES, status_label, type_label
from .times import ARROW_UTC_MICROS, api_times_to_arrow, parse_api_time

_UTC_MICROS = ARROW_UTC_MICROS


class BadValue(ValueError):
    """A field of a job that cannot be turned into its column type."""


_INT64 = range(-(2**63), 2**63)


def _int(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is int:
        return _int64(value)
    if isinstance(value, bool):
        raise BadValue(f"{value!r} is not a number")
    if isinstance(value, float) and value.is_integer():
        return _int64(int(value))
    if isinstance(value, str):
        try:
            return _int64(int(value.strip()))
        except ValueError:
            pass
    raise BadValue(f"{value!r} is not a whole number")


def _int64(value: int) -> int:
    # A bigint column: a larger number would crash the batch's Arrow array, not just this job.
    if value not in _INT64:
        raise BadValue(f"{value!r} does not fit a 64-bit integer")
    return value


def _float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadValue(f"{value!r} is not a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise BadValue(f"{value!r} is not a number")


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadValue(f"{value!r} is not an ISO-8601 time")
    try:
        return parse_api_time(value)
    except ValueError:
        raise BadValue(f"{value!r} is not an ISO-8601 time") from None


@dataclass(frozen=True)
class Column:
    """A field of the API's job object and the typed column it becomes."""

    api_name: str
    name: str
    arrow_type: pa.DataType
    convert: Callable[[Any], Any]
    required: bool = False


#: Every field of the job object (API_NOTES), in table order. Times become UTC timestamps, never strings.
JOB_COLUMNS: tuple[Column, ...] = (
    Column("jobId", "job_id", pa.string(), _text, required=True),
    Column("startTime", "start_time", _UTC_MICROS, _time, required=True),
    Column("finishTime", "finish_time", _UTC_MICROS, _time),
    Column("durationHours", "duration_hours", pa.float64(), _float),
    Column("status", "status", pa.int64(), _int),
    Column("type", "type", pa.int64(), _int),
    Column("module", "module", pa.string(), _text),
    Column("objectType", "object_type", pa.int64(), _int),
    Column("organizationId", "organization_id", pa.string(), _text),
    Column("organizationName", "organization_name", pa.string(), _text),
    *(
        Column(f"{outcome}{unit}", f"{outcome}_{unit.lower()}", pa.int64(), _int)
        for unit in ("Entity", "Record")
        for outcome in ("successful", "failed", "skipped", "warning", "total")
    ),
    Column("backupSize", "backup_size", pa.int64(), _int),
)
_KNOWN = {column.api_name for column in JOB_COLUMNS}
#: The job fields the connector knows (any other arrives as a text column).
JOB_FIELD_NAMES = frozenset(_KNOWN)
_FINAL = pa.array(sorted(FINAL_STATUSES), pa.int64())
_REQUIRED = {column.name for column in JOB_COLUMNS if column.required}
_naming = NamingConvention()


def dlt_columns() -> TTableSchemaColumns:
    """Column hints for the ``jobs`` table, so an empty first load still creates the typed table."""
    kinds = {
        pa.string(): "text",
        pa.int64(): "bigint",
        pa.float64(): "double",
        _UTC_MICROS: "timestamp",
    }
    hints: TTableSchemaColumns = {
        column.name: {"data_type": kinds[column.arrow_type], "nullable": not column.required}  # type: ignore[typeddict-item]
        for column in JOB_COLUMNS
    }
    hints["start_time"]["timezone"] = hints["finish_time"]["timezone"] = True
    hints["type_name"] = {"data_type": "text", "nullable": True}
    hints["status_name"] = {"data_type": "text", "nullable": True}
    return hints


@dataclass
class JobBatch:
    """Rows ready for dlt: one Arrow table of good jobs, the rejected ones, and what the state needs."""

    table: pa.Table | None
    rejected: list[RejectedJob] = field(default_factory=list)
    open_jobs: dict[str, datetime] = field(default_factory=dict)
    """Jobs not final yet (status 2, a code nobody documented, or none), by id, with their start time."""
    final_ids: list[str] = field(default_factory=list)
    """Jobs in a final status (3, 4, 7)."""
    outside: int = 0
    """Jobs that started outside the window they were asked for, inside another window of the run: left to
    that window, so a job reaches the table once whatever the API's bounds mean (``endTime`` inclusive)."""
    strays: int = 0
    """Jobs that started outside every window of the run: kept (never lost), but they may come twice."""


class JobRows:
    """Turns job objects into typed rows, one Arrow table per batch.

    Args:
        extra_columns: Constant columns added to every row (e.g. ``{"tenant": "contoso"}``).

    Example:
        >>> batch = JobRows().to_batch([{"jobId": "DCIB1", "startTime": "2024-06-15T03:00:01Z", "status": 3}])
        >>> batch.table.column("status_name").to_pylist()
        ['finished']
    """

    def __init__(
        self, extra_columns: dict[str, str] | None = None, windows: list[Bounds] | None = None
    ) -> None:
        self._constants = dict(extra_columns or {})
        self._extra_names: dict[str, str] = {}
        self._windows = list(windows or [])

    def to_batch(self, jobs: list[dict[str, Any]], bounds: list[Bounds] | None = None) -> JobBatch:
        """Convert jobs; a job with a value that does not fit its column is rejected, never dropped.

        The common case is columnar (one ``pa.array`` per field, ~20x faster than a loop over rows);
        a batch with any odd value is converted row by row instead, to find and set aside the culprits.

        Args:
            jobs: Job objects as the API sent them.
            bounds: The window each job was asked for (one per job). A job that started outside it but
                inside another of the run's ``windows`` is left to that one (``outside``); one outside
                them all is kept (``strays``).
        """
        if not jobs:
            return JobBatch(None)
        fast = _columns_fast(jobs)
        if fast is None:
            return self._to_batch_row_by_row(jobs, bounds)
        arrays, complete = fast
        # Every job holding exactly the known fields is the rule: one sum instead of a union of key sets.
        keys_known = complete and sum(map(len, jobs)) == len(JOB_COLUMNS) * len(jobs)
        return self._batch(arrays, jobs, bounds, [], keys_known)

    def _to_batch_row_by_row(
        self, jobs: list[dict[str, Any]], bounds: list[Bounds] | None
    ) -> JobBatch:
        values: dict[str, list[Any]] = {column.name: [] for column in JOB_COLUMNS}
        rejected: list[RejectedJob] = []
        kept: list[dict[str, Any]] = []
        kept_bounds: list[Bounds] = []
        for index, job in enumerate(jobs):
            try:
                row = [self._convert(column, job) for column in JOB_COLUMNS]
            except BadValue as error:
                rejected.append(reject(job, str(error), bounds[index] if bounds else None))
                continue
            for column, value in zip(JOB_COLUMNS, row, strict=True):
                values[column.name].append(value)
            kept.append(job)
            if bounds is not None:
                kept_bounds.append(bounds[index])
        if not kept:
            return JobBatch(None, rejected)
        arrays = {
            column.name: pa.array(values[column.name], type=column.arrow_type)
            for column in JOB_COLUMNS
        }
        return self._batch(
            arrays, kept, kept_bounds if bounds is not None else None, rejected, keys_known=False
        )

    def _batch(
        self,
        arrays: dict[str, pa.Array],
        jobs: list[dict[str, Any]],
        bounds: list[Bounds] | None,
        rejected: list[RejectedJob],
        keys_known: bool,
    ) -> JobBatch:
        """Typed columns of ``jobs`` → the batch: window check, open jobs, new fields, the table."""
        outside = strays = 0
        if bounds is not None:
            inside = _inside(arrays["start_time"], bounds)
            if not pc.all(inside).as_py():
                starts = arrays["start_time"].cast(pa.int64()).to_pylist()
                keep = inside.to_pylist()
                for index, fits in enumerate(keep):
                    if not fits:  # left to the run's window it belongs to; kept if it has none
                        keep[index] = not self._elsewhere(starts[index])
                        outside += not keep[index]
                        strays += keep[index]
                if outside:
                    mask = pa.array(keep, pa.bool_())
                    arrays = {name: array.filter(mask) for name, array in arrays.items()}
                    jobs = [job for job, kept in zip(jobs, keep, strict=True) if kept]
                    if not jobs:
                        return JobBatch(None, rejected, outside=outside, strays=strays)
        final = pc.fill_null(pc.is_in(arrays["status"], value_set=_FINAL), False)
        still_open = pc.invert(final)
        open_ids = arrays["job_id"].filter(still_open).to_pylist()
        open_starts = arrays["start_time"].filter(still_open).to_pylist()
        open_jobs = dict(zip(open_ids, open_starts, strict=True))
        final_ids = arrays["job_id"].filter(final).to_pylist()
        extras = {} if keys_known else _extras(jobs)
        table = self._table(arrays, extras, len(jobs))
        return JobBatch(table, rejected, open_jobs, final_ids, outside, strays)

    def _elsewhere(self, start: int) -> bool:
        return any(_within(start, window) for window in self._windows)

    def _table(
        self, arrays: dict[str, pa.Array], extras: dict[str, list[Any]], count: int
    ) -> pa.Table:
        """Typed columns + labels + new API fields (as text) + constant columns, in a stable order."""
        columns = dict(arrays)
        columns["type_name"] = _labels(arrays["type"], type_label)
        columns["status_name"] = _labels(arrays["status"], status_label)
        for key in sorted(extras):
            name = self._extra_name(key)
            if name not in columns:
                columns[name] = pa.array(extras[key], pa.string())
        for name, constant in self._constants.items():
            columns[name] = pa.array([constant] * count, pa.string())
        return typed_table(columns, required=_REQUIRED | self._constants.keys())

    @staticmethod
    def _convert(column: Column, job: dict[str, Any]) -> Any:
        raw = job.get(column.api_name)
        try:
            value = column.convert(raw)
        except BadValue as error:
            raise BadValue(f"field {column.api_name}: {error}") from None
        if value is None and column.required:
            raise BadValue(f"field {column.api_name} is missing")
        if column.name == "job_id" and not value:
            raise BadValue("field jobId is empty")
        return value

    def _extra_name(self, api_name: str) -> str:
        name = self._extra_names.get(api_name)
        if name is None:
            # New API fields arrive as text columns: a type that changes between pages can never break the table.
            name = self._extra_names[api_name] = _naming.normalize_identifier(api_name)
        return name


def left_jobs_table(jobs: dict[str, datetime], constants: dict[str, str] | None = None) -> pa.Table:
    """Rows that remove jobs from ``jobs``: they no longer match a status filter they were loaded under."""
    ids = sorted(jobs)
    columns = {
        "job_id": pa.array(ids, pa.string()),
        "start_time": pa.array([jobs[job_id] for job_id in ids], _UTC_MICROS),
        DELETED_COLUMN: pa.array([True] * len(ids), pa.bool_()),
    }
    for name, value in (constants or {}).items():
        columns[name] = pa.array([value] * len(ids), pa.string())
    return typed_table(columns, required=_REQUIRED | (constants or {}).keys())


def fingerprint(job: dict[str, Any]) -> str:
    """A short digest of a job as the API sent it (any field changed, the digest changes)."""
    return hashlib.blake2b(
        orjson.dumps(job, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).hexdigest()


def _within(start: int, bounds: Bounds) -> bool:
    low, high = bounds
    return (low is None or start >= low) and start < high


def _inside(starts: pa.Array, bounds: list[Bounds]) -> pa.Array:
    """True where a start time (UTC microseconds) lies in its job's window."""
    micros = starts.cast(pa.int64())
    low = pa.array([bound[0] for bound in bounds], pa.int64())
    high = pa.array([bound[1] for bound in bounds], pa.int64())
    after_low = pc.fill_null(pc.greater_equal(micros, low), True)  # null low: from the beginning
    return pc.and_(after_low, pc.less(micros, high))


def _labels(codes: pa.Array, label: Callable[[int | None], str | None]) -> pa.Array:
    values = codes.to_pylist()
    names = {code: label(code) for code in set(values)}
    return pa.array([names[code] for code in values], pa.string())


def _columns_fast(jobs: list[dict[str, Any]]) -> tuple[dict[str, pa.Array], bool] | None:
    """All known columns at once with Arrow's converters, or None if any value needs a closer look.

    Returns:
        The arrays, and whether every job holds every known field.
    """
    arrays: dict[str, pa.Array] = {}
    complete = True
    for column in JOB_COLUMNS:
        try:
            raw = list(map(itemgetter(column.api_name), jobs))  # ~1.4x a .get() comprehension
        except KeyError:
            complete = False
            raw = [job.get(column.api_name) for job in jobs]
        try:
            array = _FAST[column.convert](raw, column.arrow_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None
        if array is None or (column.required and array.null_count):
            return None
        arrays[column.name] = array
    if pc.any(pc.equal(arrays["job_id"], "")).as_py():
        return None
    return arrays, complete


def _extras(jobs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Fields the API added since ``JOB_COLUMNS`` was written, as text, by API name."""
    return {
        key: [_text(job.get(key)) for job in jobs]
        for key in set().union(*map(dict.keys, jobs)) - _KNOWN
    }


def _fast_int(raw: list[Any], arrow_type: pa.DataType) -> pa.Array | None:
    # Inferred, not forced: pa.array([2.5], pa.int64()) would silently truncate to 2.
    array = pa.array(raw)
    if array.type == pa.int64():
        return array
    return array.cast(arrow_type) if array.type == pa.null() else None


def _fast_float(raw: list[Any], arrow_type: pa.DataType) -> pa.Array | None:
    array = pa.array(raw)
    if array.type == pa.float64() and any(value.__class__ is bool for value in raw):
        return None  # Arrow reads [1.5, true] as [1.5, 1.0]; the row path sets the job aside
    return array.cast(arrow_type) if array.type in (pa.float64(), pa.int64(), pa.null()) else None


def _fast_text(raw: list[Any], arrow_type: pa.DataType) -> pa.Array | None:
    return pa.array(raw, arrow_type)  # raises on a non-string value: the row path renders it


def _fast_time(raw: list[Any], arrow_type: pa.DataType) -> pa.Array | None:
    # A time without a zone raises here and is read as UTC by the row path (times.py owns both readers).
    return api_times_to_arrow(raw)


_FAST: dict[Callable[[Any], Any], Callable[[list[Any], pa.DataType], pa.Array | None]] = {
    _int: _fast_int,
    _float: _fast_float,
    _text: _fast_text,
    _time: _fast_time,
}
