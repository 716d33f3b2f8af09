"""An independent oracle: what a job of the API should look like as a row, written from the API notes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: API field → column, spelled out by hand (not imported from the connector).
COLUMN_OF = {
    "jobId": "job_id",
    "startTime": "start_time",
    "finishTime": "finish_time",
    "durationHours": "duration_hours",
    "status": "status",
    "type": "type",
    "module": "module",
    "objectType": "object_type",
    "organizationId": "organization_id",
    "organizationName": "organization_name",
    "successfulEntity": "successful_entity",
    "failedEntity": "failed_entity",
    "skippedEntity": "skipped_entity",
    "warningEntity": "warning_entity",
    "totalEntity": "total_entity",
    "successfulRecord": "successful_record",
    "failedRecord": "failed_record",
    "skippedRecord": "skipped_record",
    "warningRecord": "warning_record",
    "totalRecord": "total_record",
    "backupSize": "backup_size",
}
STATUS_NAMES = {2: "in progress", 3: "finished", 4: "failed", 7: "finished with exception"}
TYPE_NAMES = {
    1: "backup",
    2: "restore",
    4: "dry run",
    8: "retention",
    16: "audit backup",
    32: "export",
}


def api_time(text: str | None) -> datetime | None:
    """Parse by hand: digits beyond microseconds are truncated, as .NET ticks → microseconds."""
    if text is None:
        return None
    body = text.rstrip("Z")
    whole, _, fraction = body.partition(".")
    moment = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return moment.replace(microsecond=int((fraction + "000000")[:6]) if fraction else 0)


def expected_row(job: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for api_name, column in COLUMN_OF.items():
        value = job.get(api_name)
        row[column] = api_time(value) if api_name in ("startTime", "finishTime") else value
    row["status_name"] = STATUS_NAMES.get(job["status"], f"unknown ({job['status']})")
    row["type_name"] = TYPE_NAMES.get(job["type"], f"unknown ({job['type']})")
    return row


def assert_rows_equal(rows: dict[str, dict[str, Any]], jobs: list[dict[str, Any]]) -> None:
    """Field-by-field equality of the destination and the API's ground truth."""
    expected = {job["jobId"]: expected_row(job) for job in jobs}
    missing = expected.keys() - rows.keys()
    extra = rows.keys() - expected.keys()
    assert not missing, f"{len(missing)} jobs missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected jobs, e.g. {sorted(extra)[:3]}"
    for job_id, want in expected.items():
        got = rows[job_id]
        for column, value in want.items():
            actual = got[column]
            if isinstance(actual, datetime):
                actual = actual.astimezone(UTC)
            if isinstance(value, float) and actual is not None:
                assert abs(actual - value) < 1e-9, (job_id, column, actual, value)
            else:
                assert actual == value, (job_id, column, actual, value)
