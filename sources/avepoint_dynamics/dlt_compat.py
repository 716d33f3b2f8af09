"""Every use of dlt beyond its documented API, in one place, each with a test (tests/test_dlt_compat.py).

dlt 1.x documents pipelines, sources, resources, hints and ``dlt.current``; the connector and its runner
also lean on a few internals. Each is named here with the assumption it makes, so that a dlt release that
changes one fails its test loudly instead of a run quietly doing something else:

1. :func:`current_load_id`: the load package being extracted (``dlt.current.load_package_state``);
   outside an extraction dlt raises ``CurrentLoadPackageStateNotAvailable``, which means "no package".
2. :func:`deduplicated_hint`: the merge's "staged rows are unique" option. Declaring it goes through the
   public ``write_disposition`` dict (``{"disposition": "merge", "deduplicated": True}``), which dlt
   stores as the ``x-stage-data-deduplicated`` table hint its SQL merge jobs read. Withdrawing it cannot:
   dlt 1.31 drops a ``False`` option (it copies only truthy ones), so the withdrawal sets that hint.
3. :func:`table_name_meta`: the metadata that asks a resource for the schema of one of its table
   variants (``dlt.extract.items.TableNameMeta``).
4. :func:`extracted_package_dir` and friends: where a pipeline keeps extracted and normalized packages
   (``<working_dir>/normalize/extracted/<load_id>``, ``<working_dir>/load/{normalized,loaded}/<load_id>``).
5. :func:`ask_dlt_steps_to_stop` / :func:`clear_dlt_stop`: dlt's signal flag, which its normalize and
   load steps check between files and jobs (``dlt.common.runtime.signals``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt

#: The table hint dlt's SQL merge reads to skip its deduplication (what ``deduplicated`` sets).
DEDUPLICATED_HINT = "x-stage-data-deduplicated"


def current_load_id() -> str | None:
    """The load id of the package being extracted now; None outside an extraction."""
    from dlt.common.storages.exceptions import CurrentLoadPackageStateNotAvailable

    try:
        return str(dlt.current.load_package_state()["load_id"])
    except CurrentLoadPackageStateNotAvailable:
        return None


def deduplicated_hint(deduplicated: bool) -> Any:
    """Hints for an item: merge, and whether the rows staged for the merge are already unique.

    Only the ``deduplicated`` option is given (no strategy): the table keeps the strategy it was declared
    with (the destination's default, or ``upsert`` for Delta tables, which ignore the option).
    """
    if deduplicated:
        disposition: Any = {"disposition": "merge", "deduplicated": True}
        return dlt.mark.make_hints(write_disposition=disposition)
    return dlt.mark.make_hints(additional_table_hints={DEDUPLICATED_HINT: False})


def table_name_meta(table_name: str) -> Any:
    """The metadata that selects one table variant of a resource (``compute_table_schema(meta=...)``)."""
    from dlt.extract.items import TableNameMeta

    return TableNameMeta(table_name)


def extracted_package_dir(working_dir: str | Path, load_id: str) -> Path:
    """Where the extract step keeps a package until normalize has taken it."""
    return Path(working_dir) / "normalize" / "extracted" / load_id


def extracted_packages_root(working_dir: str | Path) -> Path:
    """The folder of packages extracted and not yet normalized."""
    return Path(working_dir) / "normalize" / "extracted"


def normalized_or_loaded(working_dir: str | Path, load_id: str) -> bool:
    """Whether normalize committed the package (it waits to load, or loaded)."""
    root = Path(working_dir) / "load"
    return (root / "normalized" / load_id).is_dir() or (root / "loaded" / load_id).is_dir()


def ask_dlt_steps_to_stop(signal_number: int) -> None:
    """Raise dlt's signal flag: its steps stop at their next check (between items, files, jobs)."""
    from dlt.common.runtime import signals

    signals.set_received_signal(signal_number)
    signals.wake_all()


def clear_dlt_stop() -> None:
    """Lower dlt's signal flag again (the next run in this process must not stop at once)."""
    from dlt.common.runtime import signals

    signals.set_received_signal(0)
