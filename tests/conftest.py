"""Shared fixtures: a simulator over real HTTPS on loopback, and a pipeline into a real DuckDB file."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import duckdb
import pytest
from avepoint_dynamics import AvePointCredentials, avepoint_dynamics
from avepoint_pipelines.load.pipeline import Target, run_load
from avepoint_simulator import Simulator

# dlt reads .dlt/ of the working directory and these env vars: keep tests independent of the developer's.
for _name in list(os.environ):
    if _name.startswith("SOURCES__AVEPOINT_DYNAMICS__"):
        del os.environ[_name]

# The simulator's fixtures (avepoint_simulator, avepoint_simulator_factory) are opt-in: tests/simulator uses them.
pytest_plugins = ["avepoint_simulator.testing"]


def credentials_for(sim: Simulator, **overrides: Any) -> AvePointCredentials:
    """The simulator's default app as connector credentials (client secret unless overridden)."""
    values: dict[str, Any] = {
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "identity_url": sim.identity_url,
    }
    values.update(overrides)
    credentials = AvePointCredentials()
    for key, value in values.items():
        setattr(credentials, key, value)
    return credentials


def config_env(sim: Simulator, section: str = "avepoint_dynamics", **keys: str) -> dict[str, str]:
    """dlt env vars pointing a source section at the simulator (``SOURCES__<SECTION>__<KEY>``)."""
    prefix = f"SOURCES__{section.upper()}__"
    values = {
        "BASE_URL": sim.base_url,
        "CA_BUNDLE": str(sim.ca_file),
        "CREDENTIALS__CLIENT_ID": sim.client_id,
        "CREDENTIALS__CLIENT_SECRET": sim.client_secret,
        "CREDENTIALS__IDENTITY_URL": sim.identity_url,
        **{key.upper(): value for key, value in keys.items()},
    }
    return {prefix + key: value for key, value in values.items()}


@dataclass
class Loader:
    """Runs the real pipeline against a simulator into a DuckDB file of its own."""

    sim: Simulator
    workdir: Path
    pipeline_name: str = "avepoint_test"
    dataset: str = "avepoint"
    source_args: dict[str, Any] = field(default_factory=dict)

    @property
    def duckdb_path(self) -> Path:
        return self.workdir / "jobs.duckdb"

    def target(self) -> Target:
        return Target(
            destination="duckdb",
            dataset_name=self.dataset,
            pipeline_name=self.pipeline_name,
            duckdb_path=str(self.duckdb_path),
            pipelines_dir=str(self.workdir / "pipelines"),
        )

    def source(self, **args: Any) -> Any:
        merged: dict[str, Any] = {
            "credentials": credentials_for(self.sim),
            "base_url": self.sim.base_url,
            "ca_bundle": self.sim.ca_file,
            "lookback_minutes": 0,
            **self.source_args,
            **args,
        }
        return avepoint_dynamics(**merged)

    def load(self, **args: Any) -> Any:
        return run_load(self.source(**args), self.target())

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.duckdb_path), read_only=True) as con:
            con.execute(f"SET search_path = '{self.dataset}'")
            return con.execute(sql, list(params)).fetchall()

    def rows(self) -> dict[str, dict[str, Any]]:
        """Every loaded job by id, as column → value."""
        with duckdb.connect(str(self.duckdb_path), read_only=True) as con:
            cursor = con.execute(f"SELECT * FROM {self.dataset}.jobs")
            names = [d[0] for d in cursor.description]
            return {
                row[names.index("job_id")]: dict(zip(names, row, strict=True))
                for row in cursor.fetchall()
            }

    def state(self) -> dict[str, Any]:
        import dlt

        pipeline = dlt.pipeline(
            pipeline_name=self.pipeline_name, pipelines_dir=str(self.workdir / "pipelines")
        )
        from avepoint_dynamics.state import jobs_state

        return dict(jobs_state(pipeline))


# ---------------------------------------------------------------------- the unit tier's guard
_NETWORK_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class UnitTierBreach(BaseException):
    """A unit-marked test reached for the network or a database.

    A ``BaseException``, not an ``OSError``: the code under test must not take it for a connection
    failure and retry it, or turn it into one of its own errors.
    """


@pytest.fixture(autouse=True)
def _unit_tier_opens_no_socket_and_no_database(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A test marked ``unit`` fails if it connects or listens on a network socket, starts a process or
    opens a DuckDB file.

    The unit tier is what runs in seconds without a simulator, a subprocess or a database file
    (``scripts/test -m unit``); a test that needs one belongs to the integration tier: remove its
    ``unit`` mark. DuckDB in memory is a library call and allowed. A breach is raised where it happens
    and, in case something swallowed it (a worker thread), again at teardown.
    """
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    breaches: list[str] = []

    def refuse(what: str) -> UnitTierBreach:
        message = (
            f"{request.node.nodeid} is marked unit but {what}; the unit tier runs without sockets, "
            "processes and database files: use the in-process stand-ins (tests/inprocess.py) or "
            "drop the unit mark"
        )
        breaches.append(message)
        return UnitTierBreach(message)

    def guarded(name: str) -> Any:
        original = getattr(socket.socket, name)

        def call(self: socket.socket, address: Any, *args: Any) -> Any:
            if self.family in _NETWORK_FAMILIES:
                verb = "listened on" if name == "bind" else "connected to"
                raise refuse(f"{verb} {address!r} (socket.{name})")
            return original(self, address, *args)

        return call

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, guarded(name))

    def no_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        raise refuse(f"connected to {address!r} (socket.create_connection)")

    in_memory = duckdb.connect

    def no_database_file(database: Any = ":memory:", *args: Any, **kwargs: Any) -> Any:
        if str(kwargs.get("database", database)).startswith(":memory:"):
            return in_memory(database, *args, **kwargs)
        raise refuse(f"opened the DuckDB file {str(database)!r} (duckdb.connect)")

    class NoProcess(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, args: Any, *more: Any, **kwargs: Any) -> None:
            raise refuse(f"started a process {args!r} (subprocess.Popen)")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    monkeypatch.setattr(duckdb, "connect", no_database_file)
    monkeypatch.setattr(subprocess, "Popen", NoProcess)
    yield
    if breaches:
        pytest.fail(breaches[0], pytrace=False)


# ---------------------------------------------------------------------- the integration tier's parts
def unavailable(reason: str) -> NoReturn:
    """Skip when an optional part is missing here; fail in CI, which installs every one of them."""
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"{reason}; CI installs it, so its install step is broken", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class PostgresServer:
    url: str  # postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres


def _postgres_bin() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on loopback (Debian's package), password auth, gone afterwards.

    One for the whole session: every test that needs PostgreSQL takes this fixture (never a copy
    imported into its module, which pytest would start once per module), and keeps to its own dataset.
    """
    bin_dir = _postgres_bin()
    if bin_dir is None:
        unavailable(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: "
            "apt-get install postgresql (scripts/test installs it)"
        )
    folder = Path(tempfile.mkdtemp(prefix="avepoint-pg-"))
    # initdb refuses to run as root: the cluster belongs to the postgres user then.
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    password = secrets.token_urlsafe(16)
    password_file = folder / "password"
    password_file.write_text(password)
    if as_owner:
        shutil.chown(password_file, "postgres")
    data, port = folder / "data", free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_owner, *command], check=True, capture_output=True, timeout=120)

    run(
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "--auth=scram-sha-256",
        f"--pwfile={password_file}",
        "-E",
        "UTF8",
    )
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(folder / "server.log"),
        "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
        "-w",
        "-t",
        "60",
        "start",
    )
    try:
        yield PostgresServer(f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres")
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(jobs=3_000, seed=11) as simulator:
        yield simulator


@pytest.fixture
def loader(sim: Simulator, tmp_path: Path) -> Loader:
    return Loader(sim, tmp_path)
