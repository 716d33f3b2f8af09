"""The connector's wheel, built as pip builds it: the connector and the pipelines, no simulator, no plugin."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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
    assert "avepoint_pipelines/templates/report.html" in names  # the report's page, as package data
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "avepoint-dynamics = avepoint_pipelines.cli:main" in text
    assert "pytest11" not in text and "avepoint-simulator" not in text
