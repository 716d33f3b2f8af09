"""Constants of the AvePoint API: hosts by region, code labels, limits and defaults."""

from __future__ import annotations

from typing import Final

#: Data centers that host the AvePoint Graph API, and the identity service each one signs in against.
COMMERCIAL_IDENTITY: Final = "https://identity.avepointonlineservices.com"
REGIONS: Final[dict[str, tuple[str, str]]] = {
    **{
        dc: (f"https://graph-{dc}.avepointonlineservices.com", COMMERCIAL_IDENTITY)
        for dc in (
            "au",
            "sg",
            "ca",
            "ne",
            "we",
            "fr",
            "de",
            "jp",
            "kr",
            "ch",
            "uk",
            "us",
            "uae",
            "za",
            "qa",
        )
    },
    "gov": (
        "https://graph-gov.avepointonlineservices.com",
        "https://identity-gov.avepointonlineservices.com",
    ),
    "aos2": (
        "https://graph-aos2.avepointonlineservices.com",
        "https://identity-aos2.avepointonlineservices.com",
    ),
    "fedramp": ("https://graphusgovapi.online15.net", "https://identity.online15.net"),
}

DEFAULT_SCOPE: Final = "dynamics.readwrite.all"

#: v1 is the seed specification (POST with a JSON body); v2 the GET generation documented since 2024.
API_PATHS: Final[dict[str, str]] = {"v1": "/api/OpenApi/GetJobs", "v2": "/dynamicsbackup/jobs"}

DEFAULT_PAGE_SIZE: Final = 100
#: AvePoint's other APIs cap pages at 100 or 1000 and this one documents no cap: stay at the safe one.
MAX_PAGE_SIZE: Final = 100
DEFAULT_MAX_CONCURRENCY: Final = 8

JOB_TYPES: Final[dict[int, str]] = {
    0: "all",
    1: "backup",
    2: "restore",
    4: "dry run",
    8: "retention",
    16: "audit backup",
    32: "export",
}
JOB_STATUSES: Final[dict[int, str]] = {
    2: "in progress",
    3: "finished",
    4: "failed",
    7: "finished with exception",
}
#: The module a job belongs to (undocumented; observed values).
OBJECT_TYPES: Final[dict[int, str]] = {1: "Customer Engagement", 2: "Unified Operations"}
IN_PROGRESS_STATUS: Final = 2
#: A job in one of these is done and never changes again; any other status (2, or a code nobody
#: documented) is open: the job is followed until it reaches one of these.
FINAL_STATUSES: Final = frozenset({3, 4, 7})


def type_label(code: int | None) -> str | None:
    """The readable name of a job type code, ``unknown (N)`` for codes nobody documented."""
    if code is None:
        return None
    return JOB_TYPES.get(code, f"unknown ({code})")


def status_label(code: int | None) -> str | None:
    """The readable name of a job status code, ``unknown (N)`` for codes nobody documented."""
    if code is None:
        return None
    return JOB_STATUSES.get(code, f"unknown ({code})")
