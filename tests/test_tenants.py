"""Several tenants into one dataset: own config, pipeline and state each, a tenant column, failures kept apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt
import pytest
from avepoint_dynamics import ApiError, ConfigError
from avepoint_dynamics.state import jobs_state, read_state
from avepoint_pipelines.load.pipeline import Target
from avepoint_pipelines.load.tenant_runs import run_tenants
from avepoint_simulator import Simulator

from .conftest import Loader, config_env
from .expected import assert_rows_equal
from .test_jobs_source import _root


def _configure(monkeypatch: pytest.MonkeyPatch, tenant: str, sim: Simulator) -> None:
    section = f"avepoint_dynamics_{tenant}"
    for name, value in config_env(sim, section, lookback_minutes="0", max_attempts="2").items():
        monkeypatch.setenv(name, value)


def _by_tenant(loader: Loader) -> dict[str, dict[str, dict[str, Any]]]:
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    with __import__("duckdb").connect(str(loader.duckdb_path), read_only=True) as con:
        cursor = con.execute("SELECT * FROM avepoint.jobs")
        names = [d[0] for d in cursor.description]
        for values in cursor.fetchall():
            row = dict(zip(names, values, strict=True))
            grouped.setdefault(row["tenant"], {})[row["job_id"]] = row
    return grouped


def _state(target: Target, tenant: str) -> dict[str, Any]:
    """The jobs state of a tenant's own pipeline, ``<pipeline>_<tenant>``."""
    pipeline = dlt.pipeline(
        pipeline_name=f"{target.pipeline_name}_{tenant}", pipelines_dir=target.pipelines_dir
    )
    assert read_state(pipeline).tenants == (tenant,)
    return dict(jobs_state(pipeline, tenant))


def test_tenants_load_side_by_side_and_one_failure_spares_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        Simulator(jobs=800, seed=101) as contoso,
        Simulator(jobs=500, seed=202) as fabrikam,
    ):
        _configure(monkeypatch, "contoso", contoso)
        _configure(monkeypatch, "fabrikam", fabrikam)
        loader = Loader(contoso, tmp_path)
        target: Target = loader.target()

        first = run_tenants(["contoso", "fabrikam"], target)

        assert [r.ok for r in first] == [True, True]
        rows = _by_tenant(loader)
        assert_rows_equal(rows["contoso"], contoso.world.ground_truth())
        assert_rows_equal(rows["fabrikam"], fabrikam.world.ground_truth())
        # each tenant keeps its own state, in a pipeline of its own, where `load --tenant` keeps it too
        contoso_state = _state(target, "contoso")
        fabrikam_state = _state(target, "fabrikam")
        assert set(contoso_state["open_jobs"]).isdisjoint(fabrikam_state["open_jobs"])
        assert contoso_state["open_jobs"] and fabrikam_state["open_jobs"]
        assert not (Path(target.pipelines_dir or "") / target.pipeline_name).exists()
        pipeline = dlt.pipeline(
            pipeline_name=f"{target.pipeline_name}_contoso", pipelines_dir=target.pipelines_dir
        )
        primary = [
            name
            for name, column in pipeline.default_schema.tables["jobs"]["columns"].items()
            if column.get("primary_key")
        ]
        assert sorted(primary) == ["job_id", "tenant"]

        contoso.world.add_jobs(7)
        fabrikam.world.add_jobs(5)
        fabrikam.set_faults(error_rate=1.0)

        second = run_tenants(["contoso", "fabrikam"], target)

        assert second[0].ok and not second[1].ok
        assert second[1].error is not None and isinstance(_root(second[1].error), ApiError)
        rows = _by_tenant(loader)
        assert_rows_equal(rows["contoso"], contoso.world.ground_truth())
        assert len(rows["fabrikam"]) == 500  # the earlier load is intact
        assert _state(target, "fabrikam") == fabrikam_state

        fabrikam.set_faults(error_rate=0.0)
        third = run_tenants(["contoso", "fabrikam"], target)
        assert all(r.ok for r in third)
        assert_rows_equal(_by_tenant(loader)["fabrikam"], fabrikam.world.ground_truth())


@pytest.mark.unit
def test_tenant_names_are_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as failure:
        run_tenants(["good", "Bad-Name"], Target(duckdb_path=str(tmp_path / "x.duckdb")))
    assert "Bad-Name" in str(failure.value)
    assert not (tmp_path / "x.duckdb").exists()
