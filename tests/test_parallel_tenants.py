"""Tenants loading at the same time into one table: PostgreSQL and DuckDB, each tenant its own simulator.

Every tenant has a pipeline of its own and a staging dataset of its own (``pipelines/load/shared_dataset.py``
says what dlt shares between pipelines merging into one dataset, and why). Each test ends with every
tenant's rows compared with its simulator's ground truth, field by field.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from avepoint_dynamics import ApiError
from avepoint_dynamics.state import jobs_state, read_state
from avepoint_pipelines.load import shared_dataset
from avepoint_pipelines.load.pipeline import Target
from avepoint_pipelines.load.tenant_runs import TenantResult, run_tenants
from avepoint_simulator import Simulator
from dlt.destinations.job_client_impl import SqlJobClientBase
from dlt.pipeline.pipeline import Pipeline

from .cli_runs import cli, cli_command, tenants_env
from .conftest import PostgresServer, config_env
from .expected import assert_rows_equal
from .test_jobs_source import _root

SIX = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


@dataclass
class Tenants:
    """Simulators by tenant name, each configured in its own section ``[sources.avepoint_dynamics_<t>]``."""

    sims: dict[str, Simulator]
    target: Target

    def rows(self, read: Callable[[str], list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
        """Each tenant's rows by job id."""
        grouped: dict[str, dict[str, Any]] = {tenant: {} for tenant in self.sims}
        for row in read(f"SELECT * FROM {self.target.dataset_name}.jobs"):
            grouped.setdefault(row["tenant"], {})[row["job_id"]] = row
        return grouped

    def state(self, tenant: str) -> dict[str, Any]:
        """The local state of the tenant's own pipeline (only its own tenant in it)."""
        pipeline = dlt.pipeline(
            pipeline_name=f"{self.target.pipeline_name}_{tenant}",
            pipelines_dir=self.target.pipelines_dir,
        )
        assert read_state(pipeline).tenants == (tenant,)
        return dict(jobs_state(pipeline, tenant))

    def night(self) -> None:
        """Every running job finishes, new ones arrive (some running)."""
        for sim in self.sims.values():
            sim.world.finish_running()
            sim.world.add_jobs(60, running=4)
            sim.reset_stats()


@contextmanager
def tenants_of(
    names: list[str], target: Target, monkeypatch: pytest.MonkeyPatch, **sim_args: Any
) -> Iterator[Tenants]:
    with ExitStack() as stack:
        sims: dict[str, Simulator] = {}
        for number, tenant in enumerate(names):
            sim = stack.enter_context(
                Simulator(jobs=400 + 100 * number, seed=500 + number, **sim_args)
            )
            section = f"avepoint_dynamics_{tenant}"
            for name, value in config_env(
                sim, section, lookback_minutes="0", max_attempts="2"
            ).items():
                monkeypatch.setenv(name, value)
            sims[tenant] = sim
        yield Tenants(sims, target)


@dataclass
class Steps:
    """When each pipeline's extract and load ran (monotonic start, end), recorded around dlt's own."""

    extract: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    load: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def overlapping(self, step: str) -> bool:
        spans = sorted(span for spans in getattr(self, step).values() for span in spans)
        ends = [end for _, end in spans]
        return any(start < max(ends[:i]) for i, (start, _) in enumerate(spans) if i)


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Steps:
    recorded = Steps()
    for step in ("extract", "load"):
        original = getattr(Pipeline, step)

        def timed(
            self: Pipeline, *args: Any, __step: str = step, __run: Any = original, **kwargs: Any
        ) -> Any:
            started = time.monotonic()
            try:
                return __run(self, *args, **kwargs)
            finally:
                spans = getattr(recorded, __step).setdefault(self.pipeline_name, [])
                spans.append((started, time.monotonic()))

        monkeypatch.setattr(Pipeline, step, timed)
    return recorded


def _jobs_requests(sim: Simulator) -> int:
    return int(sim.stats()["jobs_requests"])


# ---------------------------------------------------------------------------------------- PostgreSQL
def _postgres(
    server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], list[dict[str, Any]]]:
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", server.url)
    import psycopg2

    def read(sql: str) -> list[dict[str, Any]]:
        with psycopg2.connect(server.url) as con, con.cursor() as cur:
            cur.execute(sql)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    return read


def test_six_tenants_three_at_a_time_into_one_postgres_table(
    postgres_server: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = _postgres(postgres_server, monkeypatch)
    target = Target(
        destination="postgres",
        dataset_name="six_tenants",
        pipeline_name="avepoint_six",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    running: list[int] = [0, 0]  # now, most at once
    guard = threading.Lock()

    class Count:
        def __init__(self, tenant: str) -> None:
            with guard:
                running[0] += 1
                running[1] = max(running)

        def __call__(self, page: Any) -> None:
            pass

        def done(self, result: TenantResult) -> None:
            with guard:
                running[0] -= 1

    with tenants_of(SIX, target, monkeypatch, latency_ms=5) as tenants:
        first = run_tenants(SIX, target, parallel=3, watch=Count)

        assert [r.tenant for r in first] == SIX and all(r.ok for r in first), first
        assert running[1] == 3  # three at a time, never more
        rows = tenants.rows(read)
        for tenant, sim in tenants.sims.items():
            assert_rows_equal(rows[tenant], sim.world.ground_truth())
        full = {tenant: _jobs_requests(sim) for tenant, sim in tenants.sims.items()}
        failing = "delta"
        before = rows[failing]
        state_before = tenants.state(failing)
        assert state_before["open_jobs"]
        tenants.night()
        tenants.sims[failing].set_faults(error_rate=1.0)

        second = run_tenants(SIX, target, parallel=3)

        outcome = {r.tenant: r for r in second}
        assert [t for t, r in outcome.items() if not r.ok] == [failing]
        assert isinstance(_root(outcome[failing].error), ApiError)
        rows = tenants.rows(read)
        for tenant, sim in tenants.sims.items():
            if tenant == failing:
                continue
            assert_rows_equal(rows[tenant], sim.world.ground_truth())
            # incremental from its own state: the new jobs and the open ones, not the history
            assert _jobs_requests(sim) < full[tenant] / 2
        assert rows[failing] == before  # untouched: the same rows, loads and all
        assert tenants.state(failing) == state_before
        counts = read(
            "SELECT count(*) AS n, count(DISTINCT (tenant, job_id)) AS d FROM six_tenants.jobs"
        )[0]
        assert counts["n"] == counts["d"]  # no row twice

        tenants.sims[failing].set_faults(error_rate=0.0)
        again = run_tenants([failing], target)

        assert again[0].ok
        assert_rows_equal(tenants.rows(read)[failing], tenants.sims[failing].world.ground_truth())

    # each tenant staged in a dataset of its own, and keeps its state under its own pipeline's name
    schemas = {
        r["schema_name"] for r in read("SELECT schema_name FROM information_schema.schemata")
    }
    assert {f"six_tenants_staging_{t}" for t in SIX} <= schemas
    assert "six_tenants_staging" not in schemas
    states = read("SELECT DISTINCT pipeline_name FROM six_tenants._dlt_pipeline_state")
    assert sorted(r["pipeline_name"] for r in states) == [f"avepoint_six_{t}" for t in SIX]


def test_first_loads_that_race_to_create_the_tables_all_land(
    postgres_server: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three first loads into a dataset with no tables, each having found none: all three create them."""
    read = _postgres(postgres_server, monkeypatch)
    names = SIX[:3]
    target = Target(
        destination="postgres",
        dataset_name="racing",
        pipeline_name="avepoint_race",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    # dlt builds the CREATE TABLEs from what the dataset holds, then runs them: each pipeline waits,
    # between the two, for the others to have built theirs (its first migration: the dataset's).
    built = threading.Barrier(len(names), timeout=120)
    waited: set[int] = set()
    build = SqlJobClientBase._build_schema_update_sql

    def build_together(self: SqlJobClientBase, *args: Any, **kwargs: Any) -> Any:
        sql = build(self, *args, **kwargs)
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            built.wait()
        return sql

    monkeypatch.setattr(SqlJobClientBase, "_build_schema_update_sql", build_together)
    lost: list[BaseException] = []  # the migrations that met another pipeline's, as they failed
    tell = shared_dataset.lost_schema_race

    def told(error: BaseException) -> bool:
        if tell(error):
            lost.append(error)
            return True
        return False

    monkeypatch.setattr(shared_dataset, "lost_schema_race", told)
    with tenants_of(names, target, monkeypatch) as tenants:
        results = run_tenants(names, target, parallel=3)

        assert all(r.ok for r in results), [(r.tenant, r.error) for r in results]
        rows = tenants.rows(read)
        for tenant, sim in tenants.sims.items():
            assert_rows_equal(rows[tenant], sim.world.ground_truth())
    # two of them found the tables made by the first as they made theirs, and loaded again
    assert len(lost) >= 2, lost


# ---------------------------------------------------------------------------------------- DuckDB
def test_duckdb_tenants_read_side_by_side_and_write_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: Steps
) -> None:
    names = SIX[:3]
    path = tmp_path / "jobs.duckdb"
    target = Target(
        duckdb_path=str(path), pipeline_name="avepoint_duck", pipelines_dir=str(tmp_path / "p")
    )

    def read(sql: str) -> list[dict[str, Any]]:
        with duckdb.connect(str(path), read_only=True) as con:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    # pages slow enough that reading takes a while: the tenants' reads overlap
    with tenants_of(names, target, monkeypatch, latency_ms=40) as tenants:
        first = run_tenants(names, target, parallel=3, page_size=50)

        assert all(r.ok for r in first), [(r.tenant, r.error) for r in first]
        for tenant, sim in tenants.sims.items():
            assert_rows_equal(tenants.rows(read)[tenant], sim.world.ground_truth())
        failing = names[1]
        before, state_before = tenants.rows(read)[failing], tenants.state(failing)
        tenants.night()
        tenants.sims[failing].set_faults(error_rate=1.0)

        second = run_tenants(names, target, parallel=3, page_size=50)

        assert [r.tenant for r in second if not r.ok] == [failing]
        rows = tenants.rows(read)
        for tenant, sim in tenants.sims.items():
            if tenant != failing:
                assert_rows_equal(rows[tenant], sim.world.ground_truth())
        assert rows[failing] == before
        assert tenants.state(failing) == state_before

        tenants.sims[failing].set_faults(error_rate=0.0)
        assert run_tenants([failing], target)[0].ok
        assert_rows_equal(tenants.rows(read)[failing], tenants.sims[failing].world.ground_truth())

    # read side by side, written one at a time
    assert steps.overlapping("extract")
    assert not steps.overlapping("load")


# ---------------------------------------------------------------------------------------- command line
def _on_a_terminal(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run ``command`` with stderr on a pseudo-terminal: exit code, stdout, what the terminal got."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    code = process.wait(timeout=300)
    os.close(leader)
    assert process.stdout is not None
    return code, process.stdout.read().decode(), screen.decode(errors="replace")


def test_cli_parallel_shows_a_line_per_tenant_and_exits_with_the_worst(tmp_path: Path) -> None:
    names = ["alpha", "bravo", "charlie"]
    with ExitStack() as stack:
        sims = {
            t: stack.enter_context(Simulator(jobs=2_000, seed=600 + n, latency_ms=20))
            for n, t in enumerate(names)
        }
        sims["bravo"].set_faults(error_rate=1.0)
        env = tenants_env(sims, max_attempts="2")
        # a fourth tenant with no section at all: its own one-line config error (exit 2)
        command = cli_command(
            "load", "--tenants", "alpha,bravo,charlie,delta", "--parallel", "3",
            "--page-size", "20", "--max-concurrency", "2",
            "--duckdb-path", str(tmp_path / "jobs.duckdb"),
        )  # fmt: skip

        code, out, screen = _on_a_terminal(command, env, tmp_path)

        assert code == 4, screen[-2000:]  # the worst: bravo's service (4), over delta's config (2)
        truths = {t: sims[t].world.ground_truth() for t in ("alpha", "charlie")}
    # one live line per running tenant, redrawn in place; each settles into a line of its own
    assert re.search(r"alpha: pages \d+ · jobs [\d,]+ / 2,000", screen)
    assert re.search(r"\w+: pages [^\r\n]* ETA [^\r\n]*\r\n\w+: pages ", screen)  # two at once
    for tenant in ("alpha", "charlie"):
        assert re.search(
            rf"\x1b\[K{tenant}: done in [\d.]+ s · pages 100 · jobs 2,000 / 2,000", screen
        )
    # the connector's own log lines name their tenant
    assert re.search(r"INFO avepoint_dynamics: tenant alpha: read 2,000 jobs in 100 pages", screen)
    errors = [line for line in screen.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and errors[0].startswith("error: tenant bravo: gave up on page 1")
    assert errors[1].startswith(
        "error: tenant delta: config error in sources.avepoint_dynamics_delta: tenant 'delta' has "
        "no section of its own: add [sources.avepoint_dynamics_delta]"
    )
    assert re.findall(
        r"^tenant (\w+): read 2,000 jobs from 100 pages; loaded 2,000 jobs \(2,000 new, 0 updated, "
        r"0 deleted\) into duckdb:avepoint",
        out,
        re.M,
    ) == [
        "alpha",
        "charlie",
    ]
    for tenant, truth in truths.items():
        rows = Tenants({}, Target(duckdb_path=str(tmp_path / "jobs.duckdb"))).rows(
            lambda sql: _duckdb_rows(tmp_path / "jobs.duckdb", sql)
        )
        assert_rows_equal(rows[tenant], truth)


def _duckdb_rows(path: Path, sql: str) -> list[dict[str, Any]]:
    with duckdb.connect(str(path), read_only=True) as con:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tenants", "a,b", "--parallel", "0"], "error: --parallel 0: give 1 or more tenants at once"),
        (["--parallel", "2"], "error: --parallel 2 runs several tenants at once: name them with --tenants a,b,c"),
        (["--tenant", "a", "--tenants", "a,b"], "error: --tenant and --tenants both given: --tenant NAME for one, --tenants a,b for several"),
        (["--tenants", " , "], "error: --tenants ' , ' names no tenant; give them like --tenants a,b"),
    ],
    ids=["zero", "without_tenants", "both", "empty"],
)  # fmt: skip
def test_cli_tenant_flags_that_do_not_fit_get_one_line(
    args: list[str], says: str, tmp_path: Path
) -> None:
    done = cli(["load", *args, "--duckdb-path", str(tmp_path / "j.duckdb")], None, tmp_path)
    assert (done.returncode, done.stderr.splitlines()) == (2, [says])
    assert not (tmp_path / "j.duckdb").exists()


def test_two_processes_loading_tenants_into_one_duckdb_file_take_turns(tmp_path: Path) -> None:
    """Two schedulers' tasks at once (Dagster partitions, Airflow tasks): DuckDB lets one process write."""
    names = ["alpha", "bravo"]
    with ExitStack() as stack:
        sims = {
            t: stack.enter_context(Simulator(jobs=6_000, seed=700 + n)) for n, t in enumerate(names)
        }
        env = tenants_env(sims, max_attempts="2")
        path = tmp_path / "jobs.duckdb"
        processes = [
            subprocess.Popen(
                cli_command("load", "--tenant", tenant, "--duckdb-path", str(path), "-q"),
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for tenant in names
        ]
        outcomes = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in processes]

        assert outcomes == [(0, ""), (0, "")], outcomes
        rows = Tenants({}, Target(duckdb_path=str(path))).rows(lambda sql: _duckdb_rows(path, sql))
        for tenant, sim in sims.items():
            assert_rows_equal(rows[tenant], sim.world.ground_truth())
