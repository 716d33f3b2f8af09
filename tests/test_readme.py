"""The docs' command sequences, run as written in a fresh folder, so the docs cannot drift.

Each test reads its block from README.md or a page of docs/ (by the heading of its section) and runs it with
bash (or Python) in a temporary folder. Substituted, and nothing else:

- ``python3 -m venv ...`` and ``pip install ...`` steps are skipped: the test venvs already hold the project
  and its extras (``.venv``: test, dagster, postgres; ``.venv/airflow``: Airflow, made by ``scripts/test``).
  The commands come from those venvs instead: their ``bin`` folder goes first on ``PATH``, and the Quick
  start's ``.venv`` is a link to the repository's.
- ``HOME`` is a folder of the test, so ``~/airflow`` and ``~/dagster_home`` land there, and so does dlt's
  global folder (``DLT_DATA_DIR``; dlt's own default is ``~/.dlt``, or ``/var/dlt`` when run as root).
- The source's settings: ``SOURCES__AVEPOINT_DYNAMICS__*`` env vars pointing at the simulator, where a
  reader has a real tenant in ``.dlt/secrets.toml``.
- ``dagster dev`` is a server: it runs in the background with ``--port <a free port>`` added, until its
  GraphQL API lists the asset, and is then stopped.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests
from avepoint_simulator import Simulator

from .conftest import config_env
from .expected import assert_rows_equal
from .test_orchestrators import (
    airflow_python,  # noqa: F401  (the fixture)
    dagster_installed,  # noqa: F401  (the fixture)
)
from .waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ORCHESTRATORS = ROOT / "docs" / "orchestrators.md"
ANALYSTS = ROOT / "docs" / "analysts.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
OPERATIONS = ROOT / "docs" / "operations.md"
VENV_BIN = Path(sys.executable).parent
#: Steps the test venvs have already done (see the module docstring).
SKIPPED = re.compile(r"^(python3 -m venv \S+|(\S*/)?pip install .*)$")


def readme_blocks(heading: str, language: str = "sh", page: Path = README) -> list[str]:
    """The fenced ``language`` blocks of the section of ``page`` that starts with ``heading`` (``## ...``)."""
    text = page.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else None]
    return re.findall(rf"^```{language}\n(.*?)^```", section, re.DOTALL | re.MULTILINE)


def as_run_here(block: str) -> list[str]:
    """The block's command lines without the install steps (parts of ``a && b`` lines too)."""
    lines = []
    for line in block.splitlines():
        kept = [part.strip() for part in line.split("&&") if not SKIPPED.match(part.strip())]
        if kept and any(kept):
            lines.append(" && ".join(kept))
    return lines


def user_env(home: Path, bin_dir: Path, **settings: str) -> dict[str, str]:
    """A user's shell: no dlt or orchestrator settings of the developer's, ``~`` in ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("SOURCES__", "DESTINATION__", "RUNTIME__", "AIRFLOW", "DAGSTER", "AVEPOINT_")
        )
    }
    return {
        **clean,
        "HOME": str(home),
        "DLT_DATA_DIR": str(home / ".dlt"),
        "PATH": f"{bin_dir}{os.pathsep}{clean.get('PATH', '')}",
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        **settings,
    }


def bash(lines: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    done = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{script}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def duckdb_rows(path: Path, dataset: str = "avepoint") -> dict[str, dict[str, Any]]:
    with duckdb.connect(str(path), read_only=True) as con:
        cursor = con.execute(f"SELECT * FROM {dataset}.jobs")
        names = [d[0] for d in cursor.description]
        return {
            row[names.index("job_id")]: dict(zip(names, row, strict=True))
            for row in cursor.fetchall()
        }


# --------------------------------------------------------------------------- the blocks
def test_quick_start_first_command(tmp_path: Path) -> None:
    first = readme_blocks("## Quick start")[0].splitlines()[0]
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")

    done = bash(as_run_here(first), tmp_path, user_env(tmp_path / "home", VENV_BIN))

    assert "jobs loaded: 20,120 (the API holds 20,120: equal)" in done.stdout
    assert (tmp_path / "avepoint_demo.duckdb").is_file()
    assert (tmp_path / "avepoint_demo_report.html").is_file()


def test_the_python_lines_load_the_source_into_a_dlt_pipeline(
    sim: Simulator, tmp_path: Path
) -> None:
    (code,) = readme_blocks("## Point it at your tenant", "python")
    assert len(code.strip().splitlines()) == 3
    env = user_env(tmp_path / "home", VENV_BIN, **config_env(sim))

    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert_rows_equal(duckdb_rows(tmp_path / "avepoint_dynamics.duckdb"), sim.world.ground_truth())


def test_pointing_it_at_a_tenant(sim: Simulator, tmp_path: Path) -> None:
    """The README's first-run sequence (check, check --deep, load, state), a tenant's config in env vars."""
    (block,) = readme_blocks("## Point it at your tenant")
    lines = as_run_here(block)
    assert [line.split()[1] for line in lines] == ["check", "check", "load", "state"]
    env = user_env(tmp_path / "home", VENV_BIN, **config_env(sim))

    done = bash(lines, tmp_path, env)

    assert "ok: token from" in done.stdout and "time window selects:" in done.stdout
    assert_rows_equal(duckdb_rows(tmp_path / "avepoint_dynamics.duckdb"), sim.world.ground_truth())
    assert '"cursor": "' in done.stdout and '"window_selects": "start"' in done.stdout


def test_the_first_run_and_tenant_blocks_of_the_configuration_page(
    sim: Simulator, tmp_path: Path
) -> None:
    env = user_env(tmp_path / "home", VENV_BIN, **config_env(sim))
    (first_run,) = readme_blocks("## First run against a new tenant", page=CONFIGURATION)
    bash(as_run_here(first_run), tmp_path, env)
    assert_rows_equal(duckdb_rows(tmp_path / "avepoint_dynamics.duckdb"), sim.world.ground_truth())

    with Simulator(jobs=400, seed=9) as other:
        sections = {
            **config_env(sim, section="avepoint_dynamics_contoso"),
            **config_env(other, section="avepoint_dynamics_fabrikam"),
        }
        (tenants,) = readme_blocks("## Several tenants", page=CONFIGURATION)
        folder = tmp_path / "tenants"
        folder.mkdir()
        bash(as_run_here(tenants), folder, {**env, **sections})
        rows = duckdb_rows(folder / "avepoint_dynamics.duckdb")
    assert {row["tenant"] for row in rows.values()} == {"contoso", "fabrikam"}


@pytest.mark.usefixtures("dagster_installed")
def test_the_dagster_block(sim: Simulator, tmp_path: Path) -> None:
    block = readme_blocks("## Dagster", page=ORCHESTRATORS)[0]
    lines = as_run_here(block)
    server = [i for i, line in enumerate(lines) if line.startswith("dagster dev ")]
    assert len(server) == 1, lines
    port = _free_port()
    dev = re.sub(r"\s+#.*$", "", lines[server[0]]) + f" --port {port}"
    home = tmp_path / "home"
    env = user_env(home, VENV_BIN, **config_env(sim))
    script = "set -euo pipefail\n" + "\n".join([*lines[: server[0]], f"exec {dev}"]) + "\n"
    log = (tmp_path / "dagster.log").open("w")
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # dagster dev starts a webserver, a daemon and a code server
    )
    try:
        assets = _wait_for_dagster_assets(port, process, tmp_path / "dagster.log")
    finally:
        _stop_group(process)
        log.close()
    console = (tmp_path / "dagster.log").read_text()

    assert ["dlt_avepoint_dynamics_jobs"] in assets
    # `dagster asset materialize` loaded the API's jobs into the working folder's DuckDB file ...
    assert_rows_equal(duckdb_rows(tmp_path / "avepoint_dynamics.duckdb"), sim.world.ground_truth())
    # ... and the connector's own log line is in the run's log, on the console and in DAGSTER_HOME
    assert "avepoint_dynamics: read 3,000 jobs in 30 pages" in console
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    (run,) = instance.get_runs()
    messages = [entry.user_message for entry in instance.all_logs(run.run_id)]
    assert any("read 3,000 jobs in 30 pages" in message for message in messages)


def test_the_airflow_block(sim: Simulator, tmp_path: Path, airflow_python: Path) -> None:  # noqa: F811
    block = readme_blocks("## Airflow", page=ORCHESTRATORS)[0]
    lines = as_run_here(block)
    assert not any(line.startswith("pip ") for line in lines)
    home = tmp_path / "home"
    env = user_env(home, airflow_python.parent, **config_env(sim))
    # The DAG ends with the stale-backup task: in this world every organization backed up just now.
    for organization in sim.world.organizations:
        (job,) = sim.world.add_jobs(1, organization_id=organization["id"])
        sim.world.patch_job(job["jobId"], type=1, status=3)

    bash(lines, tmp_path, env)

    assert (home / "airflow" / "dags" / "avepoint_dynamics_dag.py").is_file()
    assert_rows_equal(duckdb_rows(tmp_path / "avepoint_dynamics.duckdb"), sim.world.ground_truth())


def test_the_analysts_one_liner_and_example_queries(sim: Simulator, tmp_path: Path) -> None:
    """No ``duckdb`` command comes with the install: the README's Python one-liner runs its queries."""
    env = user_env(tmp_path / "home", VENV_BIN, **config_env(sim))
    bash(["avepoint-dynamics load -q"], tmp_path, env)
    (one_liner,) = readme_blocks("## Example queries", page=ANALYSTS)

    shown = bash(as_run_here(one_liner), tmp_path, env)

    assert "organization_name" in shown.stdout and "contoso-prod" in shown.stdout
    (examples,) = readme_blocks("## Example queries", "sql", page=ANALYSTS)
    statements = [part for part in examples.split(";") if part.strip()]
    assert len(statements) == 6
    with duckdb.connect(str(tmp_path / "avepoint_dynamics.duckdb"), read_only=True) as con:
        for statement in statements:
            con.execute(statement).fetchall()  # runs as written


def test_the_operations_page_blocks_and_the_run_log_query(sim: Simulator, tmp_path: Path) -> None:
    """Who holds a lease, a run's counts as JSON, the run log's example query: as written."""
    env = user_env(tmp_path / "home", VENV_BIN, **config_env(sim))
    bash(["avepoint-dynamics load -q"], tmp_path, env)
    (lease,) = readme_blocks("## A lock: one writer per dataset and tenant", page=OPERATIONS)
    shown = bash(as_run_here(lease), tmp_path, env)
    assert "lease_key" in shown.stdout and "0 rows" in shown.stdout  # nobody writes now
    (counts,) = readme_blocks("## A count", page=OPERATIONS)
    sim.world.add_jobs(4)
    counted = bash(as_run_here(counts), tmp_path, env)
    assert counted.stdout.split() == ["ok", "4", "0"]
    (query,) = readme_blocks("## The run log", "sql", page=ANALYSTS)
    with duckdb.connect(str(tmp_path / "avepoint_dynamics.duckdb"), read_only=True) as con:
        rows = con.execute(query).fetchall()
    assert [row[3] for row in rows] == [4, len(sim.world.ground_truth()) - 4]


# --------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_dagster_assets(
    port: int, process: subprocess.Popen[str], log: Path, timeout_s: float = 420
) -> list[list[str]]:
    """Poll the webserver's GraphQL API until it lists assets (bounded); their keys."""
    query = {"query": "{ assetNodes { assetKey { path } } }"}
    session = requests.Session()
    session.trust_env = False  # loopback: no proxy

    def asset_nodes() -> list[Any]:
        assert process.poll() is None, f"the Dagster block ended early:\n{log.read_text()[-5000:]}"
        try:
            answer = session.post(f"http://127.0.0.1:{port}/graphql", json=query, timeout=5)
            nodes: list[Any] = answer.json().get("data", {}).get("assetNodes") or []
        except (requests.RequestException, ValueError):
            nodes = []
        return nodes

    try:
        nodes = wait_until(asset_nodes, "dagster dev to list assets", timeout_s, interval_s=0.5)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}:\n{log.read_text()[-5000:]}") from None
    return [node["assetKey"]["path"] for node in nodes]


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Stop what the block started (its own process group), politely first."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
