"""The shadow's statement runs beside Milvus' call: its failure paths, on the real Milvus and PostgreSQL.

An insert the shadow refuses after Milvus took it is taken back from Milvus; two clients (no shared
in-process lock) inserting one key leave one row on each side; an entity_compare on a sample still
fails on a key only Milvus holds.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymilvus import DataType, MilvusClient

from task_components.errors import TransactionError
from task_components.shadow.dropin import ShadowMilvusClient
from task_components.shadow.pgclient import MilvusPGClient
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration


@pytest.fixture
def services() -> dict[str, str]:
    return {"uri": service_uri("TEST_MILVUS_URI"), "dsn": service_uri("TEST_POSTGRES_DSN")}


@pytest.fixture
def collection(services: dict[str, str], tmp_path: Path) -> Iterator[str]:
    name = f"ovl_{uuid.uuid4().hex[:8]}"
    client = ShadowMilvusClient(uri=services["uri"], pg_dsn=services["dsn"], tracker_path=tmp_path / "t0")
    schema = MilvusClient.create_schema()
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("name", DataType.VARCHAR, max_length=64)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=4)
    index = client.prepare_index_params()
    index.add_index(field_name="vec", index_type="FLAT", metric_type="L2")
    client.create_collection(name, schema=schema, index_params=index)
    yield name
    client.drop_collection(name)
    client.close()


def rows(keys: range, name: str = "n") -> list[dict[str, Any]]:
    return [{"id": k, "name": f"{name}{k}", "vec": [0.1, 0.2, 0.3, float(k)]} for k in keys]


def milvus_keys(uri: str, collection: str) -> list[int]:
    bare = MilvusClient(uri)
    try:
        got = bare.query(collection, filter="id >= 0", output_fields=["id"], consistency_level="Strong")
    finally:
        bare.close()
    return sorted(r["id"] for r in got)


def test_an_insert_the_shadow_refuses_is_taken_back_from_milvus(services: dict[str, str], collection: str, tmp_path: Path) -> None:
    client = ShadowMilvusClient(uri=services["uri"], pg_dsn=services["dsn"], tracker_path=tmp_path / "t1")
    try:
        client.insert(collection, rows(range(3)))
        bad = rows(range(10, 13))
        bad[1]["name"] = "nul\x00inside"  # Milvus takes a NUL character; PostgreSQL's text refuses it
        with pytest.raises(TransactionError, match="nothing written"):
            client.insert(collection, bad)
        assert milvus_keys(services["uri"], collection) == [0, 1, 2]
    finally:
        client.close()
    checker = MilvusPGClient(uri=services["uri"], pg_conn_str=services["dsn"], lmdb_path=str(tmp_path / "t1"))
    try:
        assert checker.count(collection) == {"milvus_count": 3, "pg_count": 3}
        assert checker.entity_compare(collection, full_scan=True)
    finally:
        checker.close()


def test_two_clients_inserting_one_key_leave_one_row_on_each_side(services: dict[str, str], collection: str, tmp_path: Path) -> None:
    clients = [ShadowMilvusClient(uri=services["uri"], pg_dsn=services["dsn"], tracker_path=tmp_path / f"c{i}") for i in range(2)]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def write(i: int) -> None:
        barrier.wait()
        try:
            clients[i].insert(collection, rows(range(100, 150), name=f"client{i}_"))
            outcomes.append("inserted")
        except TransactionError as exc:
            outcomes.append(f"refused: {exc}")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sorted(o.split(":")[0] for o in outcomes) == ["inserted", "refused"], outcomes
        assert milvus_keys(services["uri"], collection) == list(range(100, 150))  # once each, not twice or none
        checker = MilvusPGClient(uri=services["uri"], pg_conn_str=services["dsn"], lmdb_path=str(tmp_path / "t2"))
        try:
            assert checker.entity_compare(collection, full_scan=True)
        finally:
            checker.close()
    finally:
        for c in clients:
            c.close()


def test_a_sampled_entity_compare_still_fails_on_a_key_only_milvus_holds(services: dict[str, str], collection: str, tmp_path: Path) -> None:
    client = MilvusPGClient(uri=services["uri"], pg_conn_str=services["dsn"], lmdb_path=str(tmp_path / "t3"))
    try:
        client.insert(collection, rows(range(200)))
        bare = MilvusClient(services["uri"])
        bare.insert(collection, rows(range(500, 501)))  # behind the client's back: Milvus only
        bare.close()
        assert not client.entity_compare(collection, full_scan=True, sample_percentage=50, retry=1, retry_interval=0)
    finally:
        client.close()
