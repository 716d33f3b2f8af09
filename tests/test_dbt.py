"""The dbt package (dbt/avepoint_dynamics) as an analytics team uses it: a project of theirs installs it with
``dbt deps`` from a local path, the CLI loads the simulator's jobs, then ``dbt build`` and
``dbt source freshness`` run with dbt-duckdb and with dbt-postgres, and the marts match the API's truth.

dbt lives in ``.venv/dbt`` (scripts/test installs it): dbt-duckdb pins DuckDB releases of its own and
dbt-core pins libraries that Dagster pins otherwise, so it gets an environment of its own, as Airflow does.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest
from avepoint_simulator import Simulator

from .cli_runs import cli, cli_env
from .conftest import PostgresServer, config_env
from .expected import api_time

ROOT = Path(__file__).resolve().parents[1]
DBT = ROOT / ".venv" / "dbt" / "bin" / "dbt"
PACKAGE = ROOT / "dbt" / "avepoint_dynamics"
DATASET = "avepoint"

pytestmark = pytest.mark.skipif(
    not DBT.exists(), reason=f"dbt not installed in {DBT.parent.parent}: scripts/test installs it"
)


def _env(sim: Simulator, **extra: str) -> dict[str, str]:
    return {
        **cli_env(sim),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        **extra,
    }


def _load(sim: Simulator, cwd: Path, *where: str, **env: str) -> None:
    done = cli(["load", "--dataset", DATASET, *where], None, cwd, _env(sim, **env), target=False)
    assert done.returncode == 0, done.stderr


def _project(folder: Path, profile: dict[str, str]) -> Path:
    """An analytics team's dbt project that installs the package from its local path."""
    folder.mkdir()
    (folder / "dbt_project.yml").write_text(
        "name: analytics\nversion: '1.0.0'\nconfig-version: 2\nprofile: analytics\n"
        f"vars:\n  avepoint_dynamics_schema: {DATASET}\n",
        encoding="utf-8",
    )
    (folder / "packages.yml").write_text(f"packages:\n  - local: {PACKAGE}\n", encoding="utf-8")
    output = "".join(f"      {key}: {value}\n" for key, value in profile.items())
    (folder / "profiles.yml").write_text(
        f"analytics:\n  target: dev\n  outputs:\n    dev:\n{output}", encoding="utf-8"
    )
    return folder


def _dbt(project: Path, sim: Simulator, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DBT), *args, "--profiles-dir", str(project), "--project-dir", str(project)],
        env=_env(sim),
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _build(project: Path, sim: Simulator) -> None:
    for command in (["deps"], ["build"], ["source", "freshness"]):
        done = _dbt(project, sim, *command)
        assert done.returncode == 0, f"dbt {' '.join(command)}:\n{done.stdout[-4000:]}"


def _truth_success_rates(sim: Simulator) -> dict[tuple[str, str, int], tuple[int, int]]:
    """(UTC day, organization, type) → (finished, completed), from the API's own jobs."""
    counts: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for job in sim.world.ground_truth():
        start = api_time(job["startTime"])
        assert start is not None
        key = (start.date().isoformat(), job["organizationId"], job["type"])
        counts[key][0] += job["status"] == 3
        counts[key][1] += job["status"] in (3, 4, 7)
    return {key: (finished, completed) for key, (finished, completed) in counts.items()}


def _truth_last_backups(sim: Simulator) -> dict[str, Any]:
    """Organization → newest finish of a backup that finished or finished with exception (or None)."""
    newest: dict[str, Any] = {}
    for job in sim.world.ground_truth():
        newest.setdefault(job["organizationId"], None)
        if job["type"] == 1 and job["status"] in (3, 7):
            finish = api_time(job["finishTime"])
            current = newest[job["organizationId"]]
            newest[job["organizationId"]] = finish if current is None else max(current, finish)
    return newest


def _assert_marts_match_the_api(sim: Simulator, rows: Any) -> None:
    rates = rows(
        "SELECT CAST(day AS VARCHAR), organization_id, type_code, finished, completed, success_rate "
        "FROM analytics.avepoint_daily_success_rate"
    )
    truth = _truth_success_rates(sim)
    got = {
        (str(day), org, kind): (finished, completed)
        for day, org, kind, finished, completed, _ in rates
    }
    assert got == truth
    for day, org, kind, finished, completed, rate in rates:
        expected = finished / completed if completed else None
        assert rate == pytest.approx(expected), (day, org, kind)

    last = rows(
        "SELECT organization_id, last_successful_backup_at, is_stale "
        "FROM analytics.avepoint_last_successful_backup"
    )
    assert {org: at for org, at, _ in last} == _truth_last_backups(sim)


def test_dbt_builds_the_package_over_duckdb_and_the_marts_match_the_api(
    sim: Simulator, tmp_path: Path
) -> None:
    database = tmp_path / "avepoint_dynamics.duckdb"
    _load(sim, tmp_path, "--duckdb-path", str(database), "--pipelines-dir", str(tmp_path / "p"))
    project = _project(
        tmp_path / "analytics", {"type": "duckdb", "path": str(database), "schema": "analytics"}
    )

    _build(project, sim)

    def rows(sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(database), read_only=True) as con:
            return con.execute(sql).fetchall()

    _assert_marts_match_the_api(sim, rows)

    # The stale-loader alarm: the last completed load and run three days ago make freshness an error,
    # for the jobs (through _dlt_loads) and for the run log alike.
    with duckdb.connect(str(database)) as con:
        con.execute(f"UPDATE {DATASET}._dlt_loads SET inserted_at = now() - INTERVAL 3 DAY")
        con.execute(
            f"UPDATE {DATASET}._avepoint_runs SET finished_at = finished_at - INTERVAL 3 DAY"
        )
    stale = _dbt(project, sim, "source", "freshness")
    assert stale.returncode == 1, stale.stdout[-3000:]
    assert "ERROR STALE freshness of avepoint_dynamics.jobs" in stale.stdout
    assert "ERROR STALE freshness of avepoint_dynamics._avepoint_runs" in stale.stdout

    # The loader runs again and finds nothing new: it still completes a load (its state), the alarm clears.
    _load(sim, tmp_path, "--duckdb-path", str(database), "--pipelines-dir", str(tmp_path / "p"))
    fresh = _dbt(project, sim, "source", "freshness")
    assert fresh.returncode == 0, fresh.stdout[-3000:]
    assert "PASS freshness of avepoint_dynamics.jobs" in fresh.stdout
    assert "PASS freshness of avepoint_dynamics._avepoint_runs" in fresh.stdout


def test_dbt_builds_the_package_over_postgres_and_the_marts_match_the_api(
    sim: Simulator, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import psycopg2

    server: PostgresServer = request.getfixturevalue("postgres_server")
    _load(
        sim,
        tmp_path,
        "--destination",
        "postgres",
        "--pipelines-dir",
        str(tmp_path / "p"),
        DESTINATION__POSTGRES__CREDENTIALS=server.url,
    )
    url = urlsplit(server.url)
    project = _project(
        tmp_path / "analytics",
        {
            "type": "postgres",
            "host": str(url.hostname),
            "port": str(url.port),
            "user": str(url.username),
            "password": str(url.password),
            "dbname": url.path.lstrip("/"),
            "schema": "analytics",
        },
    )

    _build(project, sim)

    def rows(sql: str) -> list[tuple[Any, ...]]:
        with psycopg2.connect(server.url) as con, con.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())

    _assert_marts_match_the_api(sim, rows)


def test_dbt_keeps_tenants_apart_and_narrows_to_the_listed_ones(
    sim: Simulator, tmp_path: Path
) -> None:
    with Simulator(jobs=400, seed=9) as other:
        sections = {
            **config_env(sim, section="avepoint_dynamics_contoso", lookback_minutes="0"),
            **config_env(other, section="avepoint_dynamics_fabrikam", lookback_minutes="0"),
        }
        database = tmp_path / "avepoint_dynamics.duckdb"
        where = ["--tenants", "contoso,fabrikam", "--duckdb-path", str(database)]
        _load(sim, tmp_path, *where, "--pipelines-dir", str(tmp_path / "p"), **sections)
        fabrikam = len(other.world.ground_truth())
    contoso = len(sim.world.ground_truth())
    project = _project(
        tmp_path / "analytics", {"type": "duckdb", "path": str(database), "schema": "analytics"}
    )

    def totals() -> dict[str, int]:
        with duckdb.connect(str(database), read_only=True) as con:
            found = con.execute(
                "SELECT tenant, sum(total) FROM analytics.avepoint_daily_success_rate GROUP BY tenant"
            ).fetchall()
        return {tenant: int(total) for tenant, total in found}

    _build(project, sim)  # unique job_key over both tenants: tenant/job_id
    assert totals() == {"contoso": contoso, "fabrikam": fabrikam}

    only = _dbt(project, sim, "build", "--vars", "{avepoint_dynamics_tenants: [fabrikam]}")
    assert only.returncode == 0, only.stdout[-3000:]
    assert totals() == {"fabrikam": fabrikam}


def test_dbt_deps_installs_the_package_from_git_with_its_subdirectory(
    sim: Simulator, tmp_path: Path
) -> None:
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    project = _project(
        tmp_path / "analytics", {"type": "duckdb", "path": str(tmp_path / "x.duckdb")}
    )
    (project / "packages.yml").write_text(
        f"packages:\n  - git: 'file://{ROOT}'\n    subdirectory: dbt/avepoint_dynamics\n"
        f"    revision: {revision}\n",
        encoding="utf-8",
    )

    assert _dbt(project, sim, "deps").returncode == 0
    listed = _dbt(project, sim, "ls", "--resource-type", "model", "--output", "name")
    assert listed.returncode == 0, listed.stdout[-3000:]
    assert {
        "stg_avepoint_dynamics__jobs",
        "avepoint_daily_success_rate",
        "avepoint_last_successful_backup",
        "avepoint_job_trends",
        "avepoint_failed_jobs",
    } <= set(listed.stdout.split())
