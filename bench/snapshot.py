"""Which code the benchmark measured: a snapshot of the packages the children import, the git commit,
and the install the contenders ran in.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The repository's root (the parent of ``bench/``).
REPO = Path(__file__).resolve().parent.parent
#: The project's packages: (folder in the repository, import name).
PACKAGES = (
    ("sources/avepoint_dynamics", "avepoint_dynamics"),
    ("simulator/avepoint_simulator", "avepoint_simulator"),
    ("pipelines", "avepoint_pipelines"),
)
#: Where the snapshot of the project's packages is (children import it, not the live working tree).
SNAPSHOT: list[Path] = []


def describe_environment() -> str:
    """Which install the contenders ran in: extras change what dlt imports (sqlalchemy) and so RSS."""
    from importlib.util import find_spec

    extras = [name for name in ("sqlalchemy", "dagster", "psycopg2", "pytest") if find_spec(name)]
    kind = "base install" if not extras else "with " + ", ".join(extras)
    return f"interpreter {sys.prefix} ({kind})"


def snapshot_code(root: Path) -> dict[str, Any]:
    """Copy the connector, the simulator and the pipelines into ``root/code``, imported by every child.

    Other people edit the working tree while a 30-minute benchmark runs; without a snapshot, later
    scenarios would measure another version of the connector than earlier ones.
    """
    code = root / "code"
    digest = hashlib.sha256()
    for folder, name in PACKAGES:
        shutil.copytree(REPO / folder, code / name, ignore=shutil.ignore_patterns("__pycache__"))
        for path in sorted((code / name).rglob("*.py")):
            digest.update(str(path.relative_to(code)).encode())
            digest.update(path.read_bytes())
    SNAPSHOT.append(code)
    dirty = git("status", "--porcelain", "--", *(folder for folder, _ in PACKAGES))
    return {"code_sha256": digest.hexdigest()[:16], "code_uncommitted_changes": bool(dirty)}


def git(*args: str) -> str:
    """``git ARGS`` in the repository, its output stripped; empty when git is missing or fails."""
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        return out.stdout.strip()
    except Exception:
        return ""


def git_commit() -> str:
    """The short commit of the repository's HEAD, or ``unknown``."""
    return git("rev-parse", "--short", "HEAD") or "unknown"
