"""Unit tier: job objects → typed rows, by the columnar fast path and by the row-by-row path alike.

``JobRows.to_batch`` converts a batch column by column with Arrow's converters when every value is what
its column expects, and falls back to one job at a time (to find and set aside the culprits) when one is
not. Both paths must give the same row for the same job: the expected rows come from ``tests/expected.py``
(written from the API notes, not from the connector), and each example runs both paths.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from avepoint_dynamics import rows
from avepoint_dynamics.incremental import follow_marks
from avepoint_dynamics.rejected import (
    DELETED_COLUMN,
    RejectedJob,
    rejected_table,
    resolved_rejections_table,
)
from avepoint_dynamics.rows import (
    JOB_COLUMNS,
    JobRows,
    dlt_columns,
    fingerprint,
    left_jobs_table,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from .expected import COLUMN_OF, STATUS_NAMES, TYPE_NAMES

pytestmark = pytest.mark.unit

T0 = datetime(2024, 6, 15, 3, 0, 1, tzinfo=UTC)
COUNTS = [f"{o}{u}" for u in ("Entity", "Record") for o in ("successful", "failed", "skipped", "warning", "total")]  # fmt: skip


def job(number: int = 1, **fields: Any) -> dict[str, Any]:
    """A complete job as the API sends it (every documented field), finished."""
    start = T0 + timedelta(minutes=number)
    value: dict[str, Any] = {
        "jobId": f"DCIB{number:022d}",
        "startTime": start.strftime("%Y-%m-%dT%H:%M:%S.%f") + "7Z",  # .NET: 7 digits
        "finishTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "durationHours": 1.0,
        "status": 3,
        "type": 1,
        "module": "Customer Engagement",
        "objectType": 1,
        "organizationId": "69cb1ecc-f8e8-439b-8077-a4b7fd45e87f",
        "organizationName": "Contoso",
        **{name: number for name in COUNTS},
        "backupSize": 2**40 + number,
    }
    value.update(fields)
    return value


def by_id(table: pa.Table | None) -> dict[str, dict[str, Any]]:
    return {} if table is None else {row["job_id"]: row for row in table.to_pylist()}


def row_by_row(jobs: list[dict[str, Any]], **kwargs: Any) -> rows.JobBatch:
    return JobRows(**kwargs)._to_batch_row_by_row(jobs, None)


def assert_fast_path(jobs: list[dict[str, Any]], taken: bool) -> None:
    assert (rows._columns_fast(jobs) is not None) is taken, "fast path" if taken else "row path"


# ---------------------------------------------------------------------- the two paths agree
ZONES = {"Z": timedelta(0), "+00:00": timedelta(0), "+02:00": timedelta(hours=2), "-05:30": -timedelta(hours=5, minutes=30)}  # fmt: skip
INT64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def api_time(draw: st.DrawFn) -> tuple[str, datetime]:
    """An API time as text (0 to 7 fractional digits, Z or an offset) and the UTC moment it means."""
    moment = draw(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)))
    digits = draw(st.integers(0, 7))
    zone = draw(st.sampled_from(sorted(ZONES)))
    fraction = (moment.strftime("%f") + "9")[
        :digits
    ]  # a 7th digit (.NET ticks) is cut, not rounded
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "") + zone
    micro = int((fraction + "000000")[:6])
    meant = moment.replace(microsecond=micro, tzinfo=UTC) - ZONES[zone]
    return text, meant


@st.composite
def api_jobs(draw: st.DrawFn) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Jobs whose every value fits its column (the fast path's case), some fields absent or null,
    each with the row the API notes say it becomes (columns of absent fields are null)."""
    out = []
    for index in range(draw(st.integers(1, 12))):
        start, start_utc = draw(api_time())
        value: dict[str, Any] = {
            "jobId": f"J{index}",
            "startTime": start,
            "status": draw(st.sampled_from([2, 3, 4, 7, 5])),
            "type": draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64])),
        }
        expected: dict[str, Any] = {column: None for column in COLUMN_OF.values()}
        expected.update(
            job_id=value["jobId"],
            start_time=start_utc,
            status=value["status"],
            type=value["type"],
            status_name=STATUS_NAMES.get(value["status"], f"unknown ({value['status']})"),
            type_name=TYPE_NAMES.get(value["type"], f"unknown ({value['type']})"),
        )
        if draw(st.booleans()):
            finish, finish_utc = draw(st.none() | api_time()) or (None, None)
            value["finishTime"], expected["finish_time"] = finish, finish_utc
        optional = {
            "durationHours": st.none() | st.floats(0, 1e6, allow_nan=False),
            "module": st.none() | st.text(max_size=20),
            "objectType": st.none() | st.integers(1, 2),
            "organizationName": st.none() | st.text(max_size=20),
            "backupSize": st.none() | INT64,
            **{name: st.none() | INT64 for name in COUNTS},
        }
        for name, strategy in optional.items():
            if draw(st.booleans()):
                value[name] = expected[COLUMN_OF[name]] = draw(strategy)
        out.append((value, expected))
    return out


@settings(max_examples=100, deadline=None)
@given(api_jobs())
def test_the_fast_path_and_the_row_path_give_the_rows_the_api_notes_describe(
    examples: list[tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    jobs = [value for value, _ in examples]

    fast = JobRows().to_batch(jobs)
    slow = row_by_row(jobs)

    assert_fast_path(jobs, taken=True)
    assert not fast.rejected and not slow.rejected
    assert fast.table is not None and slow.table is not None
    assert fast.table.schema == slow.table.schema
    assert fast.table.to_pylist() == slow.table.to_pylist()
    assert by_id(fast.table) == {row["job_id"]: row for _, row in examples}
    assert (fast.open_jobs, fast.final_ids) == (slow.open_jobs, slow.final_ids)


@st.composite
def time_like(draw: st.DrawFn) -> str:
    """Text that may or may not be a time the API could send: separators, zones, digits vary."""
    moment = draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 30)))
    separator = draw(st.sampled_from(["T", " ", "t"]))
    digits = draw(st.integers(0, 9))
    zone = draw(st.sampled_from(["", "Z", "z", "+02:00", "+0200", "-05", "+00:00", "+14:00"]))
    fraction = "." + (moment.strftime("%f") + "123")[:digits] if digits else ""
    return moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S") + fraction + zone


ANY_VALUE = (
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | time_like()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


#: Values at the edges of what a column takes: JSON's booleans, 64-bit limits, numbers as text, ...
EDGES = [True, False, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2.0, 2.5, 1e19, "7", " 7 ", "2.5", "", "2024-06-15", "2024-06-15T03:00:01", "2024-06-15T03:00:01.123456789Z", [], {}]  # fmt: skip
#: The job's fields by how their column converts them (int, float, text, time).
BY_CONVERTER: dict[str, list[str]] = {}
for _column in JOB_COLUMNS:
    BY_CONVERTER.setdefault(_column.convert.__name__, []).append(_column.api_name)


@settings(max_examples=150, deadline=None)
@given(api_jobs(), st.data())
def test_whatever_the_api_sends_both_paths_load_and_set_aside_the_same_jobs(
    examples: list[tuple[dict[str, Any], dict[str, Any]]], data: st.DataObject
) -> None:
    jobs = [dict(value) for value, _ in examples]
    # One field takes odd values (anything JSON can hold) in some jobs; the rest stays typical.
    kind = data.draw(st.sampled_from(sorted(BY_CONVERTER)))  # each kind of column as often
    field = data.draw(st.sampled_from(BY_CONVERTER[kind]))
    for job_ in jobs:
        if data.draw(st.booleans()):
            job_[field] = data.draw(st.sampled_from(EDGES) | ANY_VALUE, label=field)

    # Differential: the batch as to_batch makes it (columnar when it can) and one job at a time.
    batch = JobRows().to_batch(jobs)
    slow = row_by_row(jobs)

    assert [(r.job_id, r.reason) for r in batch.rejected] == [
        (r.job_id, r.reason) for r in slow.rejected
    ]
    assert by_id(batch.table) == by_id(slow.table)


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("totalRecord", "5", 5),  # a number as text
        ("totalRecord", 5.0, 5),  # a whole float
        ("durationHours", "0.5", 0.5),
        ("status", " 4 ", 4),
        ("startTime", "2024-06-15T03:00:01", T0),  # no zone: UTC
        ("organizationName", 42, "42"),  # text columns take what they get, as text
        ("module", {"b": 1, "a": [2]}, '{"a": [2], "b": 1}'),
    ],
)
def test_values_of_another_json_type_take_the_row_path_and_still_load(
    field: str, value: Any, stored: Any
) -> None:
    jobs = [job(1), job(2, **{field: value}), job(3)]

    batch = JobRows().to_batch(jobs)

    assert_fast_path(jobs, taken=False)
    assert not batch.rejected
    loaded = by_id(batch.table)
    column = COLUMN_OF[field]
    assert loaded[jobs[1]["jobId"]][column] == stored
    # the rest of the batch is what the fast path makes of those jobs
    clean = by_id(JobRows().to_batch([jobs[0], jobs[2]]).table)
    assert {k: loaded[k] for k in clean} == clean


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("totalRecord", "lots", "field totalRecord: 'lots' is not a whole number"),
        ("totalRecord", 2.5, "field totalRecord: 2.5 is not a whole number"),
        ("status", True, "field status: True is not a number"),
        ("durationHours", "long", "field durationHours: 'long' is not a number"),
        ("durationHours", False, "field durationHours: False is not a number"),
        ("backupSize", [1, 2], "field backupSize: [1, 2] is not a whole number"),
        ("backupSize", 2**63, "field backupSize: 9223372036854775808 does not fit a 64-bit integer"),
        ("backupSize", 1.8e19, "does not fit a 64-bit integer"),
        ("startTime", "31/12/2026 25:00", "field startTime: '31/12/2026 25:00' is not an ISO-8601 time"),
        ("startTime", None, "field startTime is missing"),
        ("startTime", 1718420401, "field startTime: 1718420401 is not an ISO-8601 time"),
        ("finishTime", "yesterday", "field finishTime"),
        ("jobId", "", "field jobId is empty"),
        ("jobId", None, "field jobId is missing"),
    ],
)  # fmt: skip
def test_a_value_that_fits_no_column_sets_its_job_aside_and_spares_the_batch(
    field: str, value: Any, reason: str
) -> None:
    bad = job(2, **{field: value})
    jobs = [job(1), bad, job(3)]

    batch = JobRows().to_batch(jobs, bounds=[(None, 2**62)] * 3)

    assert_fast_path(jobs, taken=False)
    assert [job["jobId"] for job in (jobs[0], jobs[2])] == sorted(by_id(batch.table))
    [rejected] = batch.rejected
    assert reason in rejected.reason
    assert json.loads(rejected.raw) == json.loads(json.dumps(bad, sort_keys=True, default=str))
    assert rejected.bounds == (None, 2**62)  # where to read it again
    assert rejected.job_id == (bad["jobId"] or None)


def test_a_batch_of_only_bad_jobs_has_no_table() -> None:
    batch = JobRows().to_batch([job(1, status="x"), job(2, startTime=None)])

    assert batch.table is None and len(batch.rejected) == 2
    assert JobRows().to_batch([]).table is None


# ---------------------------------------------------------------------- labels, new fields, constants
def test_codes_get_their_names_and_unknown_codes_say_so() -> None:
    jobs = [job(1, status=7, type=16), job(2, status=5, type=64), job(3, status=None, type=None)]

    table = JobRows().to_batch(jobs).table
    assert table is not None

    assert table.column("status_name").to_pylist() == [
        "finished with exception",
        "unknown (5)",
        None,
    ]
    assert table.column("type_name").to_pylist() == ["audit backup", "unknown (64)", None]


def test_fields_the_api_added_arrive_as_text_columns_with_dlt_names() -> None:
    jobs = [job(1, retentionPolicy="P30D", extraCounts={"a": 1}), job(2, newCounter=5)]

    table = JobRows().to_batch(jobs).table
    assert table is not None

    assert table.column("retention_policy").to_pylist() == ["P30D", None]
    assert table.column("extra_counts").to_pylist() == ['{"a": 1}', None]
    assert table.column("new_counter").to_pylist() == [None, "5"]  # text, whatever the type
    assert table.schema.field("new_counter").type == pa.string()


def test_constant_columns_are_added_to_every_row() -> None:
    table = JobRows(extra_columns={"tenant": "contoso"}).to_batch([job(1), job(2)]).table
    assert table is not None

    assert table.column("tenant").to_pylist() == ["contoso", "contoso"]


def test_the_table_is_typed_in_a_stable_order() -> None:
    table = JobRows().to_batch([job(1)]).table
    assert table is not None

    names = [column.name for column in JOB_COLUMNS]
    assert table.column_names == [*names, "type_name", "status_name"]
    assert table.schema.field("start_time").type == pa.timestamp("us", tz="UTC")
    assert (
        not table.schema.field("job_id").nullable and not table.schema.field("start_time").nullable
    )
    assert table.schema.field("finish_time").nullable
    hints = dlt_columns()
    assert list(hints)[: len(names)] == names
    assert hints["start_time"] == {"data_type": "timestamp", "nullable": False, "timezone": True}
    assert hints["backup_size"] == {"data_type": "bigint", "nullable": True}
    assert hints["status_name"] == {"data_type": "text", "nullable": True}


# ---------------------------------------------------------------------- open and final jobs
def test_jobs_not_final_are_open_with_their_start_and_final_ones_are_listed() -> None:
    jobs = [
        job(1, status=2),
        job(2, status=3),
        job(3, status=None),
        job(4, status=9),
        job(5, status=7),
    ]

    batch = JobRows().to_batch(jobs)

    assert batch.open_jobs == {
        jobs[i]["jobId"]: T0 + timedelta(minutes=i + 1, microseconds=0) for i in (0, 2, 3)
    }
    assert batch.final_ids == [jobs[1]["jobId"], jobs[4]["jobId"]]


# ---------------------------------------------------------------------- windows: outside and strays
def micros(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def test_a_job_outside_its_window_is_left_to_the_window_it_belongs_to_or_kept_if_none() -> None:
    first = (micros(T0), micros(T0 + timedelta(minutes=2)))  # job 1 started in it
    second = (micros(T0 + timedelta(minutes=2)), micros(T0 + timedelta(minutes=4)))
    jobs = [job(1), job(3), job(9)]  # 1 in first; 3 in second; 9 in none of the run's windows
    converter = JobRows(windows=[first, second])

    batch = converter.to_batch(jobs, bounds=[first, first, first])  # all three came with the first

    assert sorted(by_id(batch.table)) == [jobs[0]["jobId"], jobs[2]["jobId"]]
    assert (batch.outside, batch.strays) == (1, 1)
    assert jobs[1]["jobId"] not in batch.open_jobs and jobs[1]["jobId"] not in batch.final_ids


def test_a_window_from_the_beginning_holds_every_earlier_job() -> None:
    bounds = (None, micros(T0 + timedelta(hours=1)))

    batch = JobRows(windows=[bounds]).to_batch([job(1), job(2)], bounds=[bounds, bounds])

    assert (batch.outside, batch.strays) == (0, 0) and batch.table is not None
    assert batch.table.num_rows == 2


# ---------------------------------------------------------------------- the other tables
def test_a_rejected_job_without_an_id_is_known_by_its_start_organization_and_type() -> None:
    raw = json.dumps({"startTime": "2024-06-15T03:00:01Z", "organizationId": "o", "type": 1})
    twin = json.dumps(
        {"startTime": "2024-06-15T03:00:01Z", "organizationId": "o", "type": 1, "x": 2}
    )
    other = json.dumps({"startTime": "2024-06-15T03:00:02Z", "organizationId": "o", "type": 1})

    key = RejectedJob(None, None, "r", raw).key

    assert key.startswith("?") and len(key) == 25
    assert RejectedJob(None, None, "r", twin).key == key  # the same job, another field changed
    assert RejectedJob(None, None, "r", other).key != key
    assert RejectedJob("DCIB1", None, "r", raw).key == "DCIB1"
    assert RejectedJob(None, None, "r", "not json").key.startswith("?")


def test_rejected_resolved_and_left_tables_are_typed_even_when_empty_or_null() -> None:
    seen = T0
    table = rejected_table(
        [RejectedJob(None, None, "bad", "{}")], seen, constants={"tenant": "contoso"}
    )
    assert table.to_pylist()[0] == {
        "rejection_key": RejectedJob(None, None, "bad", "{}").key,
        "job_id": None,
        "start_time_raw": None,
        "reason": "bad",
        "raw_job": "{}",
        "last_seen_at": seen,
        "tenant": "contoso",
    }
    assert table.schema.field("job_id").type == pa.string()  # all nulls, still text

    resolved = resolved_rejections_table(["A", "B"])
    assert resolved.to_pylist() == [
        {"rejection_key": "A", DELETED_COLUMN: True},
        {"rejection_key": "B", DELETED_COLUMN: True},
    ]

    left = left_jobs_table({"B": T0, "A": T0 + timedelta(seconds=1)})
    assert left.column("job_id").to_pylist() == ["A", "B"]  # sorted: the same input, the same file
    assert left.column(DELETED_COLUMN).to_pylist() == [True, True]
    assert not left.schema.field("job_id").nullable


def test_follow_marks_split_open_from_final_and_skip_what_cannot_be_read() -> None:
    jobs = [
        job(1, status=2),
        job(2, status=4),
        job(3, status=True),  # not a status code: open
        job(4, jobId=None),
        job(5, startTime="soon"),
        job(6, startTime=None),
    ]

    open_jobs, final = follow_marks(jobs)

    assert set(open_jobs) == {jobs[0]["jobId"], jobs[2]["jobId"]}
    assert final == [jobs[1]["jobId"]]


def test_a_fingerprint_changes_with_any_field_and_not_with_key_order() -> None:
    original = job(1)
    reordered = dict(reversed(list(original.items())))

    assert fingerprint(reordered) == fingerprint(original)
    for field in original:
        assert fingerprint({**original, field: "changed"}) != fingerprint(original), field
