"""The connector's wheel, built as pip and ``python -m build`` build it: the connector and the pipelines, no
simulator, no plugin; metadata that passes ``twine check``; installed from the wheel into a fresh venv, the
CLI and a user's own pipeline script work, and the Dagster and Airflow modules load."""

from __future__ import annotations

import email
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import duckdb
import pytest
from avepoint_simulator import Simulator

from .conftest import config_env

ROOT = Path(__file__).resolve().parents[1]


def test_the_connectors_wheel_holds_the_connector_and_the_pipelines_and_no_simulator(
    tmp_path: Path,
) -> None:
    # A copy: pip builds a local folder in place, and the build must not leave files in the repository.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    for folder in ("sources", "pipelines", "simulator"):
        shutil.copytree(
            ROOT / folder,
            source / folder,
            ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"),
        )
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("wheel") else []
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation]
    built = subprocess.run(
        [*command, "--wheel-dir", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]

    (wheel,) = tmp_path.glob("avepoint_dynamics_dlt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if "/" in name and ".dist-info" not in name}
    assert packages == {"avepoint_dynamics", "avepoint_pipelines"}
    assert (
        "avepoint_pipelines/analytics/templates/report.html" in names
    )  # the report's page, as package data
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "avepoint-dynamics = avepoint_pipelines.cli:main" in text
    assert "pytest11" not in text and "avepoint-simulator" not in text


# ------------------------------------------------------------------ the distributions as PyPI gets them
def _copy_tree(tmp_path: Path) -> Path:
    """The repository's buildable files, copied: a build must not leave files in the repository."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("sources", "pipelines", "simulator"):
        shutil.copytree(
            ROOT / folder,
            source / folder,
            ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"),
        )
    return source


def _run(*command: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=900, **kwargs
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` of the connector and of the simulator (wheel + sdist each), checked by twine."""
    tmp_path = tmp_path_factory.mktemp("dist")
    source = _copy_tree(tmp_path)
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "-q", "-o", dist, source)
    _run(sys.executable, "-m", "build", "-q", "-o", dist, source / "simulator")
    checked = _run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert checked.stdout.count("PASSED") == 4, checked.stdout
    return dist


def test_both_wheels_carry_what_pypi_shows(distributions: Path) -> None:
    for name, package in (
        ("avepoint_dynamics_dlt", "avepoint_dynamics"),
        ("avepoint_simulator", ""),
    ):
        (wheel,) = distributions.glob(f"{name}-*.whl")
        files = zipfile.ZipFile(wheel).namelist()
        (metadata_name,) = [f for f in files if f.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(zipfile.ZipFile(wheel).read(metadata_name))
        assert f"{package or 'avepoint_simulator'}/py.typed" in files
        assert metadata["Version"] and metadata["Summary"]
        assert metadata["License-Expression"] == "Apache-2.0"
        assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files)
        assert metadata["Description-Content-Type"] == "text/markdown"
        assert len(metadata.get_payload()) > 1000  # the README, as the project's page
        assert "Typing :: Typed" in metadata.get_all("Classifier", [])
        assert all(
            url.split(", ", 1)[1].startswith("https://")
            for url in metadata.get_all("Project-URL", [])
        )
        if package:
            assert {"dagster", "airflow", "postgres", "lakehouse", "s3"} <= set(
                metadata.get_all("Provides-Extra", [])
            )


USERS_PIPELINE = """
import dlt
import avepoint_dynamics
from avepoint_dynamics import avepoint_dynamics as source

pipeline = dlt.pipeline("my_jobs", destination=dlt.destinations.duckdb("my_jobs.duckdb"), dataset_name="raw")
pipeline.run(source(), loader_file_format="parquet")
print(avepoint_dynamics.__file__)
"""


def test_the_wheel_in_a_fresh_venv_runs_the_cli_and_a_users_own_pipeline(
    distributions: Path, sim: Simulator, tmp_path: Path
) -> None:
    (wheel,) = distributions.glob("avepoint_dynamics_dlt-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)  # not editable: the wheel

    version = _run(venv / "bin" / "avepoint-dynamics", "--version")
    assert version.stdout.startswith("avepoint-dynamics 0.1.0 (dlt ")

    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
    env.update(config_env(sim), RUNTIME__DLTHUB_TELEMETRY="false")
    env.update(HOME=str(tmp_path), DLT_DATA_DIR=str(tmp_path / ".dlt"))  # dlt's global folder: ours
    (tmp_path / "my_pipeline.py").write_text(USERS_PIPELINE, encoding="utf-8")
    ran = _run(venv / "bin" / "python", "my_pipeline.py", cwd=tmp_path, env=env)
    assert ran.stdout.strip().splitlines()[-1].startswith(str(venv / "lib"))  # the installed copy
    with duckdb.connect(str(tmp_path / "my_jobs.duckdb"), read_only=True) as con:
        count, ids = con.execute("SELECT count(*), count(DISTINCT job_id) FROM raw.jobs").fetchone()  # type: ignore[misc]
    assert count == ids == len(sim.world.ground_truth())


ORCHESTRATOR_MODULES = """
import sys
import avepoint_pipelines.{module} as module
assert module.__file__.startswith(sys.argv[1]), module.__file__
print({probe})
"""


@pytest.mark.parametrize(
    ("module", "python", "probe"),
    [
        (
            "orchestrators.dagster_defs",
            ".venv/bin/python",
            "sorted(str(k) for k in module.defs().resolve_all_asset_keys())",
        ),
        ("orchestrators.airflow_dag", ".venv/airflow/bin/python", "module.dag.dag_id"),
    ],
)
def test_the_wheels_orchestrator_modules_load_in_their_environments(
    distributions: Path, sim: Simulator, tmp_path: Path, module: str, python: str, probe: str
) -> None:
    # Dagster and Airflow are installed in the suite's environments already: the wheel's files are put
    # first on their path (pip install --target), rather than installing either again.
    interpreter = ROOT / python
    if not interpreter.exists():
        pytest.skip(f"{interpreter} is missing: scripts/test makes it")
    (wheel,) = distributions.glob("avepoint_dynamics_dlt-*.whl")
    files = tmp_path / "wheel"
    _run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", files, wheel)

    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
    env.update(config_env(sim), PYTHONPATH=str(files), RUNTIME__DLTHUB_TELEMETRY="false")
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"), AVEPOINT_DUCKDB_PATH=str(tmp_path / "j.duckdb")
    )
    env.update(HOME=str(tmp_path), DLT_DATA_DIR=str(tmp_path / ".dlt"))  # dlt's global folder: ours
    code = ORCHESTRATOR_MODULES.format(module=module, probe=probe)
    loaded = _run(interpreter, "-c", code, str(files), cwd=tmp_path, env=env)
    assert (
        "dlt_avepoint_dynamics_jobs" if module == "dagster_defs" else "avepoint_dynamics_jobs"
    ) in loaded.stdout


def test_the_simulators_wheel_in_a_fresh_venv_serves_its_world(
    distributions: Path, tmp_path: Path
) -> None:
    (wheel,) = distributions.glob("avepoint_simulator-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)

    assert "usage: avepoint-simulator" in _run(venv / "bin" / "avepoint-simulator", "--help").stdout
    code = (
        "import avepoint_simulator\n"
        "from avepoint_simulator import Simulator\n"
        "with Simulator(jobs=50, seed=3) as sim:\n"
        "    print(len(sim.world.ground_truth()), avepoint_simulator.__file__)\n"
    )
    count, where = _run(venv / "bin" / "python", "-c", code, cwd=tmp_path).stdout.split()
    assert count == "50" and where.startswith(str(venv / "lib"))
    # the connector is not part of the simulator's distribution
    missing = subprocess.run(
        [venv / "bin" / "python", "-c", "import avepoint_dynamics"], cwd=tmp_path
    )
    assert missing.returncode == 1
