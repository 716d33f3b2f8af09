"""What the source brings to dlt's configuration: DuckDB's memory while it loads the jobs.

A plain ``pipeline.run(avepoint_dynamics())`` into DuckDB ends with a merge of every row read; with DuckDB's
own settings (``memory_limit`` 80 % of the machine's memory, a thread per core) its buffer pool keeps what
it inserted, so the run's peak grows with the history: 274 MB at 100,000 jobs, 450 MB at 1,000,000
(docs/performance.md).
With ``memory_limit`` 96 MB and one thread DuckDB spills instead: 250 MB at 100,000 jobs, 299 MB at 1,000,000.
Not lower: a merge that must deduplicate (``claims.py``: a window read again after the answers changed
while paging) runs dlt's ``ROW_NUMBER()`` pass, whose hash partitions DuckDB cannot spill; from ~100,000
staged rows on it needs ~44 MB for the ``jobs`` table and ~60 MB for the tenants' (a ``tenant`` column in
the key), whatever the size after that. Under 40 MB that merge failed every time, and dlt retried the
failed package on every later run: a stuck pipeline (docs/performance.md).

The setting is the environment variable dlt reads for ``destination.duckdb.credentials.global_config``,
set only when no provider holds that key already: a user's value anywhere (environment, ``secrets.toml``,
``config.toml``; a ``DuckDbCredentials`` passed to the destination) wins, whole, not merged. An
environment variable rather than a config provider of our own: dlt asks every provider for every key of
every configuration it resolves (~120 resolutions a run), and one more provider cost ~25 % more of that
time; the environment is asked anyway. It applies to every DuckDB connection dlt opens in this process
and its children under the ``duckdb`` destination's name (a named destination, MotherDuck and other
destinations are not touched), so queries through ``pipeline.dataset()`` in the same process run under
it too.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dlt

#: DuckDB's settings for the load, the same as the CLI's (``--duckdb-memory-limit``, ``--duckdb-threads``).
DUCKDB_LOAD_SETTINGS: dict[str, Any] = {"memory_limit": "96MB", "threads": 1}
#: Where dlt's environment provider looks for ``destination.duckdb.credentials.global_config``.
DUCKDB_GLOBAL_CONFIG_ENV = "DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG"


def set_duckdb_defaults() -> None:
    """DuckDB's load settings for this process, unless the user configured ``global_config``."""
    if DUCKDB_GLOBAL_CONFIG_ENV in os.environ:
        return
    if dlt.secrets.get("destination.duckdb.credentials.global_config") is not None:
        return
    os.environ[DUCKDB_GLOBAL_CONFIG_ENV] = json.dumps(DUCKDB_LOAD_SETTINGS)
