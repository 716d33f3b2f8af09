"""Delta tables on the filesystem destination, on a local folder and on S3: one row per job, merged.

Each load goes through ``run_load`` with ``Target(destination="filesystem", table_format="delta")`` (what
``avepoint-dynamics load --destination filesystem --table-format delta`` runs), configured by dlt env vars
as a user would. S3 is a real S3 server on loopback (moto's, in a process of its own: delta-rs holds
the GIL while it waits for an answer, so a server thread in this process would never answer it).

The tables are read back with DuckDB's ``delta_scan``. Its extension comes as a wheel that pins DuckDB
1.5.5, older than the project's, so the reading runs in ``.venv/delta-reader`` (scripts/test makes it)
and hands the rows over as a Parquet file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from avepoint_dynamics import avepoint_dynamics
from avepoint_dynamics.state import read_state
from avepoint_pipelines.load.pipeline import Target, TargetError, run_load
from avepoint_simulator import Faults, Simulator

from .cli_runs import cli
from .conftest import config_env, credentials_for, free_port, unavailable
from .expected import api_time, assert_rows_equal
from .test_destinations import jobs_requests, source_for
from .waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
DATASET = "avepoint"

#: Runs in the reader venv: argv = table URI, Parquet file to write, and for S3 the endpoint host:port.
DELTA_SCAN = """
import glob, os, sys
import duckdb, duckdb_extension_delta, duckdb_extension_httpfs

def extension(module, name):
    folder = os.path.dirname(module.__file__)
    return glob.glob(os.path.join(folder, "extensions", "*", name + ".duckdb_extension"))[0]

uri, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("LOAD '" + extension(duckdb_extension_httpfs, "httpfs") + "'")
con.execute("LOAD '" + extension(duckdb_extension_delta, "delta") + "'")
if len(sys.argv) > 3:
    con.execute(
        "CREATE SECRET lake (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1', "
        "ENDPOINT '" + sys.argv[3] + "', URL_STYLE 'path', USE_SSL false)"
    )
con.execute("SET TimeZone = 'UTC'")
con.execute("COPY (SELECT * FROM delta_scan('" + uri + "')) TO '" + out + "' (FORMAT parquet)")
"""


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")


@pytest.fixture(scope="session")
def delta_reader() -> Path:
    """DuckDB 1.5.5 with its delta extension: ``AVEPOINT_DELTA_READER_PYTHON`` or .venv/delta-reader."""
    configured = os.environ.get("AVEPOINT_DELTA_READER_PYTHON")
    python = Path(configured) if configured else ROOT / ".venv" / "delta-reader" / "bin" / "python"
    if not python.exists():
        unavailable(
            f"no Delta reader at {python}: python3 -m venv .venv/delta-reader && "
            ".venv/delta-reader/bin/pip install duckdb==1.5.5 duckdb-extension-delta==1.5.5 "
            "duckdb-extension-httpfs==1.5.5 (scripts/test does it)"
        )
    return python


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local S3 server (moto's) on loopback, in a process of its own; its ``http://host:port``."""
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
    except ImportError:
        unavailable("moto is not installed: pip install -e '.[test]' (scripts/test installs it)")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            if server.poll() is not None:
                pytest.fail(f"the local S3 server did not start: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            except OSError:
                return False
            return True

        wait_until(answers, "the local S3 server to answer", interval_s=0.05)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@dataclass
class Lake:
    """A Delta dataset on the filesystem destination, and how to read a table of it with DuckDB."""

    target: Target
    table_uri: str  # the dataset's folder; a table is <table_uri>/<table>
    reader: Path
    workdir: Path
    endpoint: str | None = None

    def scan(self, table: str = "jobs") -> list[dict[str, Any]]:
        """Every row of ``table`` as DuckDB's ``delta_scan`` reads it."""
        out = self.workdir / f"scan-{uuid.uuid4().hex}.parquet"
        host = [self.endpoint.removeprefix("http://")] if self.endpoint else []
        done = subprocess.run(
            [str(self.reader), "-c", DELTA_SCAN, f"{self.table_uri}/{table}", str(out), *host],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"delta_scan failed: {done.stderr[-3000:]}"
        return list(pq.read_table(out).to_pylist())

    def jobs(self) -> dict[str, dict[str, Any]]:
        rows = self.scan()
        by_id = {row["job_id"]: row for row in rows}
        assert len(by_id) == len(rows), "one row per job"
        return by_id

    def history(self, table: str = "jobs") -> list[str]:
        """The Delta log's operations on ``table``, oldest first (read with the deltalake package)."""
        from deltalake import DeltaTable

        options = {}
        if self.endpoint:
            options = {
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
                "aws_endpoint_url": self.endpoint,
                "aws_region": "us-east-1",
                "aws_allow_http": "true",
            }
        log = DeltaTable(f"{self.table_uri}/{table}", storage_options=options).history()
        return [str(entry["operation"]) for entry in reversed(log)]


def lake_for(
    where: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Lake:
    pytest.importorskip("deltalake", reason="pip install -e '.[lakehouse]' (scripts/test does)")
    reader: Path = request.getfixturevalue("delta_reader")
    target = Target(
        destination="filesystem",
        dataset_name=DATASET,
        pipeline_name=f"avepoint_delta_{where}",
        pipelines_dir=str(tmp_path / "pipelines"),
        table_format="delta",
    )
    if where == "local":
        bucket = tmp_path / "lake"
        monkeypatch.setenv("DESTINATION__FILESYSTEM__BUCKET_URL", bucket.as_uri())
        return Lake(target, str(bucket / DATASET), reader, tmp_path)
    endpoint: str = request.getfixturevalue("s3_endpoint")
    import boto3

    bucket_name = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket_name)
    prefix = "DESTINATION__FILESYSTEM__"
    for name, value in {
        "BUCKET_URL": f"s3://{bucket_name}/history",
        "CREDENTIALS__ENDPOINT_URL": endpoint,
        "CREDENTIALS__AWS_ACCESS_KEY_ID": "testing",
        "CREDENTIALS__AWS_SECRET_ACCESS_KEY": "testing",
        "CREDENTIALS__REGION_NAME": "us-east-1",
    }.items():
        monkeypatch.setenv(prefix + name, value)
    return Lake(target, f"s3://{bucket_name}/history/{DATASET}", reader, tmp_path, endpoint)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_delta_table_holds_one_row_per_job_after_a_full_then_an_incremental_load(
    where: str,
    sim: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    lake = lake_for(where, tmp_path, monkeypatch, request)
    # One running job the API sends malformed: set aside in jobs_rejected, repaired before the rerun.
    running = sorted(j["jobId"] for j in sim.world.ground_truth() if j["status"] == 2)
    assert len(running) >= 2, "the simulator should start with jobs in progress"
    broken = running[0]
    repaired = sim.world.patch_job(broken, totalRecord="lots")["totalRecord"]
    assert repaired == "lots"

    run_load(source_for(sim), lake.target)

    full = jobs_requests(sim)
    rows = lake.jobs()
    truth = sim.world.ground_truth()
    assert_rows_equal(rows, [job for job in truth if job["jobId"] != broken])
    assert [row["job_id"] for row in lake.scan("jobs_rejected")] == [broken]

    sim.world.patch_job(broken, totalRecord=1234)
    sim.world.finish_running()
    new = sim.world.add_jobs(30, running=5)
    # A wiped worker: the state can only come back from the bucket.
    shutil.rmtree(tmp_path / "pipelines")
    sim.reset_stats()

    run_load(source_for(sim), lake.target)

    rows = lake.jobs()
    truth = sim.world.ground_truth()
    assert_rows_equal(rows, truth)
    assert len(rows) == len(truth) == 3_030
    assert {j["jobId"] for j in new} <= rows.keys()
    for job_id in running:
        assert rows[job_id]["status"] in (3, 4, 7) and rows[job_id]["finish_time"] is not None
    served = sim.world.get(broken)
    assert served is not None
    assert rows[broken]["total_record"] == served["totalRecord"] != "lots"
    # The repaired job left jobs_rejected: a hard delete (_avepoint_deleted) in the Delta merge.
    assert lake.scan("jobs_rejected") == []
    # Merged in place, not appended: the rerun read only what changed and wrote one MERGE.
    assert lake.history() == ["WRITE", "MERGE"]
    assert jobs_requests(sim) < full / 5


def test_a_job_read_twice_in_one_run_is_one_row_of_the_delta_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # New jobs arrive while the run pages (newest first): pages shift and windows are read again,
    # so the run yields some jobs twice; dlt's Delta merge would keep both.
    with Simulator(jobs=1_000, seed=4, faults=Faults(churn_per_page=3)) as sim:
        lake = lake_for("local", tmp_path, monkeypatch, request)
        source = avepoint_dynamics(
            credentials=credentials_for(sim),
            base_url=sim.base_url,
            ca_bundle=sim.ca_file,
            lookback_minutes=0,
            page_size=40,
            max_concurrency=4,
        )

        info = run_load(source, lake.target)

        rows = lake.jobs()  # one row per job
        truth = sim.world.ground_truth()
        cursor = api_time(read_state(info.pipeline).cursor)
        assert cursor is not None
        before_cursor = [j for j in truth if api_time(j["startTime"]) < cursor]  # type: ignore[operator]
        assert len(before_cursor) > 500
        assert_rows_equal({j["jobId"]: rows[j["jobId"]] for j in before_cursor}, before_cursor)
        held = {j["jobId"] for j in truth}
        oldest_held = min(api_time(j["startTime"]) for j in truth)  # type: ignore[type-var]
        for job_id, row in rows.items():
            if job_id not in held:
                assert row["start_time"] <= oldest_held, f"{job_id} is loaded but was never purged"


def test_a_table_format_on_another_destination_is_refused_in_one_line(sim: Simulator) -> None:
    target = Target(destination="duckdb", table_format="delta")
    with pytest.raises(TargetError) as refused:
        run_load(source_for(sim), target)
    assert str(refused.value) == (
        "table format delta is for the filesystem destination, not 'duckdb': use --destination "
        "filesystem (or drop the table format)"
    )
    unknown = Target(destination="filesystem", table_format="hudi")
    with pytest.raises(TargetError, match="'hudi' is not one this pipeline writes; use delta"):
        run_load(source_for(sim), unknown)
    assert jobs_requests(sim) == 0


def test_the_cli_loads_a_delta_table_on_s3_and_refuses_it_elsewhere_in_one_line(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    lake = lake_for("s3", tmp_path, monkeypatch, request)
    where = ["--pipelines-dir", str(tmp_path / "pipelines"), "--dataset", DATASET]
    delta = ["load", "--destination", "filesystem", "--table-format", "delta", *where]
    # the bucket and its keys lake_for set in this process, handed on as a user's env vars
    bucket = {k: v for k, v in os.environ.items() if k.startswith("DESTINATION__FILESYSTEM__")}

    loaded = cli(delta, sim, tmp_path, bucket, target=False)

    assert loaded.returncode == 0, loaded.stderr
    # No SQL on the filesystem destination: what the run handed to the merge, not counted there.
    assert (
        "read 3,000 jobs from 30 pages; loaded 3,000 jobs (rows not counted here) into "
        "filesystem:avepoint" in loaded.stdout
    )
    assert_rows_equal(lake.jobs(), sim.world.ground_truth())

    refused = cli(["load", "--table-format", "delta", *where], sim, tmp_path, bucket, target=False)

    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: table format delta is for the filesystem destination, not 'duckdb': use "
        "--destination filesystem (or drop the table format)"
    ]


@pytest.mark.unit
def test_first_of_each_key_per_table_per_run(tmp_path: Path) -> None:
    import dlt
    import pyarrow as pa
    from avepoint_pipelines.load.pipeline import FirstOfEachKey

    @dlt.resource(name="jobs", primary_key=["tenant", "job_id"])
    def jobs() -> Iterator[Any]:
        yield pa.table({"tenant": ["a", "a", "b"], "job_id": ["1", "2", "1"], "v": [1, 2, 3]})
        yield pa.table({"tenant": ["a", "b", "b"], "job_id": ["1", "2", "2"], "v": [4, 5, 6]})
        rejected = pa.table({"key": ["1", "1"], "v": [7, 8]})
        yield dlt.mark.with_table_name(rejected, "jobs_rejected")

    resource = jobs()
    resource.apply_hints(table_name="jobs_rejected", primary_key="key", create_table_variant=True)
    keep = FirstOfEachKey(resource)
    resource.add_map(keep)
    pipeline = dlt.pipeline("first_of_each_key", pipelines_dir=str(tmp_path))

    for _ in range(2):  # the same resource extracted again: a new run, nothing remembered
        pipeline.extract(resource)
        package = pipeline.get_load_package_info(pipeline.list_extracted_load_packages()[-1])
        files = [
            job.file_path for job in package.jobs["new_jobs"] if job.file_path.endswith(".parquet")
        ]
        tables = {Path(f).name.split(".")[0]: pq.read_table(f) for f in files}
        assert sorted(tables["jobs"].column("v").to_pylist()) == [1, 2, 3, 5]
        assert tables["jobs_rejected"].column("v").to_pylist() == [7]


def test_tenants_load_side_by_side_into_one_delta_table_keyed_by_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # What `load --tenants contoso,fabrikam --parallel 2 --destination filesystem --table-format delta` runs.
    from avepoint_pipelines.load.tenant_runs import run_tenants

    from .test_tenants import _configure

    with (
        Simulator(jobs=600, seed=301) as contoso,
        Simulator(jobs=400, seed=302) as fabrikam,
    ):
        _configure(monkeypatch, "contoso", contoso)
        _configure(monkeypatch, "fabrikam", fabrikam)
        lake = lake_for("local", tmp_path, monkeypatch, request)

        def by_tenant() -> dict[str, dict[str, dict[str, Any]]]:
            grouped: dict[str, dict[str, dict[str, Any]]] = {}
            rows = lake.scan()
            for row in rows:
                grouped.setdefault(row["tenant"], {})[row["job_id"]] = row
            assert sum(map(len, grouped.values())) == len(rows), "one row per tenant and job"
            return grouped

        first = run_tenants(["contoso", "fabrikam"], lake.target, parallel=2)

        assert [r.ok for r in first] == [True, True], [r.error for r in first]
        rows = by_tenant()
        assert_rows_equal(rows["contoso"], contoso.world.ground_truth())
        assert_rows_equal(rows["fabrikam"], fabrikam.world.ground_truth())

        contoso.world.finish_running()
        contoso.world.add_jobs(12, running=3)
        fabrikam.world.add_jobs(8)

        second = run_tenants(["contoso", "fabrikam"], lake.target, parallel=2)

        assert all(r.ok for r in second), [r.error for r in second]
        rows = by_tenant()
        assert_rows_equal(rows["contoso"], contoso.world.ground_truth())
        assert_rows_equal(rows["fabrikam"], fabrikam.world.ground_truth())
        assert "MERGE" in lake.history()


def test_the_delta_block_of_the_orchestrators_page_runs_as_written(
    sim: Simulator, tmp_path: Path, delta_reader: Path, s3_endpoint: str
) -> None:
    # docs/orchestrators.md, "Delta tables (lakehouse)": a folder, then S3 (here the local S3 server)
    import boto3

    from .test_readme import ORCHESTRATORS, as_run_here, bash, readme_blocks, user_env

    pytest.importorskip("deltalake", reason="pip install -e '.[lakehouse]' (scripts/test does)")
    (block,) = readme_blocks("### Delta tables (lakehouse)", page=ORCHESTRATORS)
    lines = as_run_here(block)
    split = next(i for i, line in enumerate(lines) if line.startswith("# S3"))
    folder = tmp_path / "data"
    env = user_env(tmp_path / "home", Path(sys.executable).parent, **config_env(sim))

    local = [line.replace("/data/avepoint", str(folder)) for line in lines[:split]]
    bash(local, tmp_path, env)

    on_disk = Lake(Target(), str(folder / "avepoint"), delta_reader, tmp_path)
    assert_rows_equal(on_disk.jobs(), sim.world.ground_truth())

    bucket = f"docs-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    remote = []
    for line in lines[split:]:
        line = line.replace("s3://my-bucket/history", f"s3://{bucket}/history")
        line = line.replace("=...", "=testing").replace("eu-west-1", "us-east-1")
        if line.startswith("# only for S3-compatible storage: "):
            line = line.removeprefix("# only for S3-compatible storage: ")
            line = line.replace("https://minio.example.com:9000", s3_endpoint)
        remote.append(line)
    bash(remote, tmp_path / "home", env)

    in_bucket = Lake(
        Target(), f"s3://{bucket}/history/avepoint", delta_reader, tmp_path, s3_endpoint
    )
    assert_rows_equal(in_bucket.jobs(), sim.world.ground_truth())
