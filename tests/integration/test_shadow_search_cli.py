"""``run-pipeline shadow search`` on the real Milvus and PostgreSQL: Milvus' top-k against the exact
top-k over the shadow's vectors; rows lost behind the client's back lower the recall and fail it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from pipeline.checker import rows
from task_components.shadow.dropin import ShadowMilvusClient
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent / "run-pipeline"


@pytest.fixture
def shadowed(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    uri, dsn = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN")
    name = f"srch_{uuid.uuid4().hex[:8]}"
    client = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "tracker")
    try:
        rows.create(client, name, 16)
        client.insert(name, rows.make_rows(list(range(400)), 0, 16))
        client.load_collection(name)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS", "POSTGRES"))}
        env.update(MILVUS__URI=uri, POSTGRES__DSN=dsn, XDG_CACHE_HOME=str(tmp_path / "cache"))
        yield name, env
    finally:
        client.drop_collection(name)
        client.close()


def search(name: str, env: dict[str, str], *more: str) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN), "shadow", "search", name, "--queries", "40", "--limit", "10", "--json", *more]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def test_search_agrees_then_finds_rows_milvus_lost(shadowed: tuple[str, dict[str, str]]) -> None:
    name, env = shadowed
    done = search(name, env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["mean_recall"] == 1.0 and len(result["recalls"]) == 40

    bare = MilvusClient(env["MILVUS__URI"])
    bare.delete(name, filter="id < 200")  # half the rows gone from Milvus only
    bare.close()
    done = search(name, env)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["mean_recall"] < 0.9
    assert result["differences"] and all(d["key"] < 200 and d["side"] == "milvus" for d in result["differences"])


def test_search_on_a_shadow_without_vectors_is_refused_by_name(tmp_path: Path) -> None:
    uri, dsn = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN")
    name = f"srch_{uuid.uuid4().hex[:8]}"
    client = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "tracker", ignore_vector=True)
    try:
        rows.create(client, name, 8)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS", "POSTGRES"))}
        env.update(MILVUS__URI=uri, POSTGRES__DSN=dsn, XDG_CACHE_HOME=str(tmp_path / "cache"))
        done = search(name, env)
    finally:
        client.drop_collection(name)
        client.close()
    assert done.returncode == 2
    assert "no vector columns" in done.stderr and "Traceback" not in done.stderr
