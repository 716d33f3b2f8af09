"""One test per assumption about dlt beyond its documented API (``avepoint_dynamics.dlt_compat``).

Each fails loudly, naming the assumption, when a dlt release changes it. CI runs them at the lowest dlt
pyproject allows (``.ci/run``'s floor step, ``.ci/constraints-floor.txt``) and at the newest (``scripts/test``).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import dlt
import pytest
from avepoint_dynamics import dlt_compat

pytestmark = pytest.mark.unit


def _pipeline(tmp_path: Path, name: str = "compat") -> Any:
    return dlt.pipeline(
        name,
        pipelines_dir=str(tmp_path / "pipelines"),
        dataset_name="compat",
        destination=dlt.destinations.duckdb(str(tmp_path / f"{name}.duckdb")),
    )


def test_current_load_id_is_the_package_being_extracted(tmp_path: Path) -> None:
    seen: list[str | None] = []

    @dlt.resource(name="t")
    def items() -> Any:
        seen.append(dlt_compat.current_load_id())
        yield {"id": 1}

    pipeline = _pipeline(tmp_path)
    pipeline.extract(items())
    (load_id,) = pipeline.list_extracted_load_packages()
    assert seen == [load_id], "dlt.current.load_package_state() no longer names the package"
    assert dlt_compat.current_load_id() is None, "outside an extraction it must say: no package"


def test_deduplicated_is_declared_through_the_merge_options_and_withdrawn_by_its_hint(
    tmp_path: Path,
) -> None:
    @dlt.resource(name="t", primary_key="id", write_disposition="merge")
    def items(claims: list[bool]) -> Any:
        for number, claim in enumerate(claims):
            yield dlt.mark.with_hints([{"id": number}], dlt_compat.deduplicated_hint(claim))

    for claims, expected in (([True], True), ([True, False], False)):
        pipeline = _pipeline(tmp_path, f"dedup_{len(claims)}")
        pipeline.extract(items(claims))
        table = pipeline.default_schema.tables["t"]
        assert table.get(dlt_compat.DEDUPLICATED_HINT) is expected, (
            f"the merge's deduplicated option no longer ends as {dlt_compat.DEDUPLICATED_HINT}"
        )
        assert table.get("write_disposition") == "merge"
        assert "x-merge-strategy" not in table, "declaring it must not pick a merge strategy"


def test_a_false_deduplicated_option_is_still_dropped_by_dlt() -> None:
    """Why withdrawing the claim sets the hint itself; when this fails, use the option for both."""
    from dlt.extract.hints import DltResourceHints

    hints: dict[str, Any] = {
        "write_disposition": {"disposition": "merge", "deduplicated": False},
        "columns": {},
    }
    DltResourceHints._merge_write_disposition_dict(hints)
    assert dlt_compat.DEDUPLICATED_HINT not in hints


def test_sql_merge_reads_the_deduplicated_hint() -> None:
    import inspect

    from dlt.destinations import sql_jobs

    assert dlt_compat.DEDUPLICATED_HINT in inspect.getsource(sql_jobs), (
        "dlt's SQL merge no longer reads the hint: the claim would be ignored (harmless, but slower)"
    )


def test_table_name_meta_selects_a_variant() -> None:
    @dlt.resource(name="t", primary_key="id", write_disposition="merge")
    def items() -> Any:
        yield {"id": 1}

    resource = items()
    resource.apply_hints(table_name="other", primary_key="key", create_table_variant=True)
    schema = resource.compute_table_schema(meta=dlt_compat.table_name_meta("other"))
    assert schema["name"] == "other"
    assert [c for c, v in schema["columns"].items() if v.get("primary_key")] == ["key"]


def test_package_folders_are_where_the_runner_cleans_up(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    pipeline.extract([{"id": 1}], table_name="t")
    (load_id,) = pipeline.list_extracted_load_packages()
    assert dlt_compat.extracted_package_dir(pipeline.working_dir, load_id).is_dir()
    assert dlt_compat.extracted_packages_root(pipeline.working_dir).is_dir()
    assert not dlt_compat.normalized_or_loaded(pipeline.working_dir, load_id)
    pipeline.normalize()
    assert dlt_compat.normalized_or_loaded(pipeline.working_dir, load_id)
    assert not dlt_compat.extracted_package_dir(pipeline.working_dir, load_id).exists()


def test_dlt_steps_see_the_stop_flag_and_it_clears() -> None:
    from dlt.common.runtime import signals

    try:
        dlt_compat.ask_dlt_steps_to_stop(signal.SIGINT)
        assert signals.was_signal_received()
        with pytest.raises(BaseException) as raised:
            signals.raise_if_signalled()
        assert "signal" in type(raised.value).__name__.lower()
    finally:
        dlt_compat.clear_dlt_stop()
    assert not signals.was_signal_received()
