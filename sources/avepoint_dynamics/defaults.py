"""What the source brings to dlt's configuration: DuckDB's memory while it loads the jobs.

A plain ``pipeline.run(avepoint_dynamics())`` into DuckDB ends with a merge of every row read; with DuckDB's
own settings (``memory_limit`` 80 % of the machine's memory, a thread per core) its buffer pool keeps what
it inserted, so the run's peak grows with the history: 274 MB at 100,000 jobs, 450 MB at 1,000,000
(docs/performance.md). With a ``memory_limit`` and one thread DuckDB spills instead, and the peak follows
the limit: 96 MB gave 250 MB at 100,000 jobs and 299 MB at 1,000,000 (+19 %), 64 MB 247 and 269 MB.

Two limits, chosen per run. A merge whose staged rows the run proved unique (``claims.py``: the usual
load) is an insert and a delete by key, which spills: 64 MB (``DUCKDB_LOAD_SETTINGS``). A merge that must
deduplicate (a window read again after the answers changed while paging) runs dlt's ``ROW_NUMBER()``
pass, whose hash partitions DuckDB cannot spill; from ~100,000 staged rows on it needs ~44 MB for the
``jobs`` table and ~60 MB for the tenants' (a ``tenant`` column in the key), whatever the size after
that. Under 40 MB that merge failed every time, and dlt retried the failed package on every later run: a
stuck pipeline. So the run that declares duplicates raises the limit to 96 MB before its load
(``DUCKDB_DEDUP_SETTINGS``, :func:`load_must_deduplicate`), and so does a run that starts with a package
an earlier run left pending (dlt loads it first, before the source says anything about its own rows).
dlt resolves the destination's configuration again for the load step, after the extract: a value set
while the rows are read is the one the load's connections get. The limit only ever rises within a
process: runs in threads of one process (tenants side by side) share the variable, and a run that
starts must not lower it under another one's deduplicating load; a long-lived process that once
deduplicated keeps 96 MB, as every run had before.

The setting is the environment variable dlt reads for ``destination.duckdb.credentials.global_config``,
set only when no provider holds that key already: a user's value anywhere (environment, ``secrets.toml``,
``config.toml``; a ``DuckDbCredentials`` passed to the destination) wins, whole, not merged, and is never
changed. An environment variable rather than a config provider of our own: dlt asks every provider for
every key of every configuration it resolves (~120 resolutions a run), and one more provider cost ~25 %
more of that time; the environment is asked anyway. It applies to every DuckDB connection dlt opens in
this process and its children under the ``duckdb`` destination's name (a named destination, MotherDuck
and other destinations are not touched), so queries through ``pipeline.dataset()`` in the same process
run under it too.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dlt

#: DuckDB's settings for a load whose rows are proven unique (no deduplicating merge).
DUCKDB_LOAD_SETTINGS: dict[str, Any] = {"memory_limit": "64MB", "threads": 1}
#: DuckDB's settings for a load whose merge deduplicates; the CLI's default (``--duckdb-memory-limit``).
DUCKDB_DEDUP_SETTINGS: dict[str, Any] = {"memory_limit": "96MB", "threads": 1}
#: Where dlt's environment provider looks for ``destination.duckdb.credentials.global_config``.
DUCKDB_GLOBAL_CONFIG_ENV = "DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG"


def _ours(settings: dict[str, Any]) -> str:
    # Compact JSON: tells the value the source wrote from a user's own (the docs' examples have spaces).
    return json.dumps(settings, separators=(",", ":"))


_OURS = {_ours(DUCKDB_LOAD_SETTINGS), _ours(DUCKDB_DEDUP_SETTINGS)}


def set_duckdb_defaults() -> None:
    """DuckDB's load settings for this process, unless the user configured ``global_config``."""
    current = os.environ.get(DUCKDB_GLOBAL_CONFIG_ENV)
    if current is None:
        if dlt.secrets.get("destination.duckdb.credentials.global_config") is not None:
            return
        os.environ[DUCKDB_GLOBAL_CONFIG_ENV] = _ours(DUCKDB_LOAD_SETTINGS)
    elif current not in _OURS:
        return
    if _pending_package():
        load_must_deduplicate()


def load_must_deduplicate() -> None:
    """The run's rows are not unique: its merge deduplicates, with the memory that needs (if ours to set)."""
    if os.environ.get(DUCKDB_GLOBAL_CONFIG_ENV) in _OURS:
        os.environ[DUCKDB_GLOBAL_CONFIG_ENV] = _ours(DUCKDB_DEDUP_SETTINGS)


def _pending_package() -> bool:
    """Whether the active pipeline holds a package an earlier run left (dlt loads it before this run's)."""
    from dlt.common.configuration.container import Container
    from dlt.common.pipeline import PipelineContext

    context = Container()[PipelineContext]
    if not context.is_active():
        return False
    return bool(getattr(context.pipeline(), "has_pending_data", False))
