"""Datasets cross between milvus-ingest and us, against the real Milvus 2.3 and S3 servers.

The milvus-ingest datasets are the committed fixture it wrote (tests/fixtures/milvus_ingest). Every
connection is given by milvus-ingest's flags, not MILVUS__/S3__ settings (removed from the env), so the
flags are what is tested. The reverse direction (milvus-ingest loading a directory we wrote) needs
milvus-ingest itself: it runs when bench/.venvs/milvus-ingest has it (bench/generation.py installs it)
or MILVUS_INGEST_BIN names its executable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import service_uri
from tests.integration.helpers import ROOT, cli

pytestmark = pytest.mark.integration

FIXTURE = ROOT / "tests" / "fixtures" / "milvus_ingest"
MILVUS_INGEST = Path(os.environ.get("MILVUS_INGEST_BIN") or ROOT / "bench" / ".venvs" / "milvus-ingest" / "bin" / "milvus-ingest")


def bare_env() -> dict[str, str]:
    """No MILVUS__/S3__ settings: the command must get everything from its flags."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS__", "S3__"))}
    return {**env, "LOGGING__FORMAT": "json"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), env=bare_env(), capture_output=True, text=True, timeout=900, check=False)


def report(proc: subprocess.CompletedProcess[str]) -> dict:
    found = re.search(r"^report: (.+)$", proc.stdout, re.MULTILINE)
    assert found, proc.stdout + proc.stderr
    return json.loads(Path(found.group(1).strip()).read_text())


def milvus_client():
    from pymilvus import MilvusClient

    return MilvusClient(uri=service_uri("TEST_MILVUS_URI"))


@pytest.fixture
def collection() -> Iterator[str]:
    name = f"miload_it_{uuid.uuid4().hex[:8]}"
    yield name
    client = milvus_client()
    try:
        if client.has_collection(name):
            client.drop_collection(name)
    finally:
        client.close()


def milvus_flags(name: str) -> list[str]:
    return ["--uri", service_uri("TEST_MILVUS_URI"), "--collection-name", name]


def s3_flags() -> list[str]:
    return [
        "--s3-path",
        f"s3://{service_uri('TEST_S3_BUCKET')}/miload-it/{uuid.uuid4().hex}",
        "--endpoint-url",
        service_uri("TEST_S3_ENDPOINT"),
        "--access-key-id",
        service_uri("TEST_S3_ACCESS_KEY"),
        "--secret-access-key",
        service_uri("TEST_S3_SECRET_KEY"),
        "--region",
        "us-east-1",
    ]


def verified(data: Path, name: str, tmp_path: Path) -> dict:
    proc = run("to-milvus", "verify", str(data), *milvus_flags(name), "--run-dir", str(tmp_path / "verify"))
    summary = report(proc)["summary"].get("verify", {})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary["result"] == "passed", summary
    return summary


def test_milvus_ingest_parquet_inserts_verifies_and_a_deleted_row_is_named(collection: str, tmp_path: Path) -> None:
    data = FIXTURE / "parquet"
    proc = run(
        "to-milvus", "insert", str(data), *milvus_flags(collection), "--drop", "--batch-size", "100", "--run-dir", str(tmp_path / "insert")
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report(proc)["summary"]["insert"]["rows in milvus"] == 300
    summary = verified(data, collection, tmp_path)
    assert summary["sample"].startswith("300 keys, 8 fields compared, 100.0% match fully")
    assert summary["search"].startswith("recall@10 1.000")

    victim = pq.read_table(data / "data.parquet", columns=["id"]).column("id")[123].as_py()
    client = milvus_client()
    try:
        client.delete(collection, filter=f"id in [{int(victim)}]")
    finally:
        client.close()
    proc = run("to-milvus", "verify", str(data), *milvus_flags(collection), "--run-dir", str(tmp_path / "again"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    error = report(proc)["tasks"]["verify"]["error"]
    assert "count: milvus 299 rows, source 300 rows" in error
    assert f"id={victim}: missing in Milvus" in error  # the sample (all 300 keys here)
    assert f"keys: 1 of 300 source keys missing in Milvus: id={victim}" in error  # every key, looked up


def test_milvus_ingest_json_inserts_and_verifies(collection: str, tmp_path: Path) -> None:
    data = FIXTURE / "json"
    proc = run("to-milvus", "insert", str(data), *milvus_flags(collection), "--drop", "--run-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verified(data, collection, tmp_path)["sample"].startswith("150 keys, 8 fields compared, 100.0%")


@pytest.mark.parametrize(("fmt", "rows"), [("parquet", 300), ("json", 150)])
def test_milvus_ingest_datasets_bulk_import_from_s3_and_verify(fmt: str, rows: int, collection: str, tmp_path: Path) -> None:
    data = FIXTURE / fmt
    proc = run(
        "to-milvus",
        "import",
        str(data),
        *milvus_flags(collection),
        *s3_flags(),
        "--drop",
        "--timeout",
        "600",
        "--run-dir",
        str(tmp_path / "import"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = report(proc)["summary"]
    assert summary["import"]["method"] == "bulk_import" and summary["import"]["rows in milvus"] == rows
    assert summary["upload"]["store"] == "s3"
    if fmt == "parquet":  # its large_string columns are rewritten first: Milvus 2.3 rejects them
        assert "importing a converted copy" in " ".join(proc.stderr.split())
    verified(data, collection, tmp_path)


def test_no_index_inserts_without_loading(collection: str, tmp_path: Path) -> None:
    proc = run("to-milvus", "insert", str(FIXTURE / "json"), *milvus_flags(collection), "--drop", "--no-index", "--run-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = milvus_client()
    try:
        assert client.list_indexes(collection) == []
        assert int(client.get_collection_stats(collection)["row_count"]) == 150
    finally:
        client.close()


@pytest.mark.skipif(
    not MILVUS_INGEST.exists(),
    reason=f"milvus-ingest is not installed at {MILVUS_INGEST} (python bench/generation.py installs it; needs PyPI)",
)
@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_milvus_ingest_loader_reads_a_directory_we_wrote(fmt: str, collection: str, tmp_path: Path) -> None:
    data = tmp_path / "ours"
    made = run(
        "generate",
        "--schema",
        str(FIXTURE / "schema.json"),
        "--total-rows",
        "300",
        "--format",
        fmt,
        "--out",
        str(data),
        "--run-dir",
        str(tmp_path / "gen"),
        "--no-progress",
    )
    assert made.returncode == 0, made.stdout + made.stderr
    args = [
        "to-milvus",
        "insert",
        str(data),
        "--uri",
        service_uri("TEST_MILVUS_URI"),
        "--collection-name",
        collection,
        "--drop-if-exists",
        "--no-progress",
    ]
    proc = subprocess.run([str(MILVUS_INGEST), *args], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and "Successfully inserted 300 rows" in proc.stdout, proc.stdout + proc.stderr
    verified(data, collection, tmp_path)  # what milvus-ingest loaded is what our files hold, field by field
