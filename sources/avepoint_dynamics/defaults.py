"""What the source brings to dlt's configuration: DuckDB's memory while it loads the jobs.

A plain ``pipeline.run(avepoint_dynamics())`` into DuckDB ends with a merge of every row read; with DuckDB's
own settings (``memory_limit`` 80 % of the machine's memory, a thread per core) its buffer pool keeps what
it inserted, so the run's peak grows with the history: 274 MB at 100,000 jobs, 450 MB at 1,000,000 (bench/).
With ``memory_limit`` 40 MB and one thread DuckDB spills instead, and the peak stays flat for a few tenths
of a second more load time.

The settings are a dlt config provider of their own, registered after every other one: any
``destination.duckdb.credentials.global_config`` the user sets (environment, ``secrets.toml``,
``config.toml``, a ``DuckDbCredentials`` passed to the destination) wins over them, key by key not merged:
a user's ``global_config`` replaces this one whole. They apply to every DuckDB connection dlt opens in
the process under the ``duckdb`` destination's name (a named destination, MotherDuck and other
destinations are not touched), so queries through ``pipeline.dataset()`` in the same process run under
them too.
"""

from __future__ import annotations

from typing import Any, ClassVar

import dlt
from dlt.common.configuration.container import Container
from dlt.common.configuration.providers import DictionaryProvider
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

#: DuckDB's settings for the load, the same as the CLI's (``--duckdb-memory-limit``, ``--duckdb-threads``).
DUCKDB_LOAD_SETTINGS: dict[str, Any] = {"memory_limit": "40MB", "threads": 1}


class SourceDefaults(DictionaryProvider):
    """The source's defaults, consulted only when no other provider has the key."""

    NAME: ClassVar[str] = "avepoint_dynamics defaults"

    def __init__(self) -> None:
        super().__init__()
        self._config_doc = {
            "destination": {
                "duckdb": {"credentials": {"global_config": dict(DUCKDB_LOAD_SETTINGS)}}
            }
        }

    @property
    def name(self) -> str:
        return self.NAME


def register_defaults() -> None:
    """Register :class:`SourceDefaults` once in the current dlt run context (last, lowest priority)."""
    providers = Container()[PluggableRunContext].providers
    if SourceDefaults.NAME not in providers:
        dlt.config.register_provider(SourceDefaults())
