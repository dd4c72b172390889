"""pymilvus-pg's own usage, with only the import line changed, on the real Milvus server and PostgreSQL.

Why: pymilvus-pg's users switch by changing one import; their checkers must keep working. The calls
below are those of pymilvus-pg's public README example and of its tests/test_demo_operations.py, in
their order (written here from scratch; their ``time.sleep`` waits are left out: our comparisons read
Milvus with Strong consistency). Then what the switch must not hide: keywords we do not honour are
refused by name, ``ignore_vector`` really leaves vectors out, ``sample_vector`` compares sampled
dimensions, and divergences behind the client's back are found with key, field and side.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import asyncpg
import pytest
from pymilvus import DataType, MilvusClient
from pymilvus.milvus_client import IndexParams

from task_components.schema.models import FieldSchema, FieldType
from task_components.shadow.diff import sample_dims
from task_components.shadow.pgclient import MilvusPGClient
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration

PG_LOG = "task_components.shadow.pgclient"


def _env() -> tuple[str, str]:
    return service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN")


@pytest.fixture
def milvus_client(tmp_path: Any) -> Iterator[MilvusPGClient]:
    """Their fixture: MilvusPGClient(uri=..., pg_conn_str=...) (lmdb_path under the test's directory)."""
    uri, dsn = _env()
    client = MilvusPGClient(uri=uri, pg_conn_str=dsn, lmdb_path=str(tmp_path / "lmdb"))
    yield client
    client.close()


@pytest.fixture
def collection_name() -> Iterator[str]:
    name = f"test_compat_{uuid.uuid4().hex[:10]}"
    yield name
    plain = MilvusClient(uri=_env()[0])
    if plain.has_collection(name):
        plain.drop_collection(name)
    plain.close()

    async def drop() -> None:
        conn = await asyncpg.connect(_env()[1])
        try:
            await conn.execute(f'DROP TABLE IF EXISTS "shadow_{name}"')
        finally:
            await conn.close()

    anyio.run(drop)


def their_schema(client: MilvusPGClient, dim: int = 8) -> Any:
    schema = client.create_schema()
    schema.add_field("id", DataType.INT64, is_primary=True, auto_id=False)
    schema.add_field("name", DataType.VARCHAR, max_length=100)
    schema.add_field("age", DataType.INT64)
    schema.add_field("json_field", DataType.JSON)
    schema.add_field("array_field", DataType.ARRAY, element_type=DataType.INT64, max_capacity=10)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def their_rows(keys: range, offset: int = 0, dim: int = 8) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "name": f"test_{i + offset}",
            "age": i + offset,
            "json_field": {"a": i + offset, "b": i + offset + 1},
            "array_field": [i + offset, i + offset + 1, i + offset + 2],
            "embedding": [random.random() for _ in range(dim)],
        }
        for i in keys
    ]


def setup(client: MilvusPGClient, name: str, dim: int = 8) -> None:
    """Their setup, call for call: create_collection(name, schema) positional, an index, load."""
    client.create_collection(name, their_schema(client, dim))
    index_params = IndexParams()
    index_params.add_index("embedding", metric_type="L2", index_type="IVF_FLAT", params={"nlist": 128})
    client.create_index(name, index_params)
    client.load_collection(name)


def test_their_demo_operations_in_order(milvus_client: MilvusPGClient, collection_name: str, caplog: Any) -> None:
    """tests/test_demo_operations.py's calls in order: insert, delete, upsert, query, export, count,
    entity_compare, generate_milvus_filter + query_result_compare of every filter."""
    setup(milvus_client, collection_name)
    milvus_client.insert(collection_name, their_rows(range(10)))
    milvus_client.delete(collection_name, ids=[1, 2, 3])
    milvus_client.upsert(collection_name, their_rows(range(4, 8), offset=100))

    milvus_df, pg_df = milvus_client.query(collection_name, "age > 0")
    assert list(milvus_df.index) == list(pg_df.index) == [4, 5, 6, 7, 8, 9]  # id 0 has age 0
    assert milvus_df.loc[:, ["name", "age", "json_field", "array_field"]].equals(pg_df.loc[:, ["name", "age", "json_field", "array_field"]])
    assert milvus_df.loc[5, "name"] == "test_105" and pg_df.loc[5, "json_field"] == {"a": 105, "b": 106}

    exported = milvus_client.export(collection_name)
    assert sorted(exported["id"]) == [0, 4, 5, 6, 7, 8, 9] and "embedding" in exported.columns
    assert milvus_client.count(collection_name) == {"milvus_count": 7, "pg_count": 7}

    caplog.set_level(logging.INFO, logger=PG_LOG)
    assert milvus_client.entity_compare(collection_name) is True
    assert milvus_client.entity_compare(collection_name, batch_size=3, retry=1, full_scan=True) is True

    filters = milvus_client.generate_milvus_filter(collection_name, num_samples=2)
    assert filters and any(f.startswith("age ") for f in filters) and any("name like" in f for f in filters)
    for f in filters:
        res = milvus_client.query_result_compare(collection_name, f)
        assert not res, (f, [str(d) for d in res])
    assert len(milvus_client.sample_data(collection_name, num_samples=3)) == 3


def test_their_readme_example(milvus_client: MilvusPGClient, collection_name: str) -> None:
    """The README's steps: create, index, load, insert, query(filter_expression=...), delete, upsert, export."""
    setup(milvus_client, collection_name)
    data = [
        {
            "id": i,
            "name": f"item_{i}",
            "age": 20 + i,
            "json_field": {"category": f"cat_{i % 3}", "value": i * 10},
            "array_field": [i, i + 1, i + 2],
            "embedding": [random.random() for _ in range(8)],
        }
        for i in range(10)
    ]
    milvus_client.insert(collection_name, data)
    query_res = milvus_client.query(collection_name, filter_expression="age > 25")
    milvus_df, pg_df = query_res
    assert list(milvus_df.index) == list(pg_df.index) == [6, 7, 8, 9]
    with pytest.raises(ValueError, match="not both"):
        milvus_client.query(collection_name, "age > 1", filter_expression="age > 25")
    milvus_client.delete(collection_name, ids=[0, 1, 2])
    milvus_client.upsert(collection_name, [{**r, "name": f"updated_item_{r['id']}", "age": 30 + r["id"]} for r in data[3:7]])
    exported = milvus_client.export(collection_name)
    assert list(exported["id"]) == list(range(3, 10))
    assert list(exported["name"][:4]) == [f"updated_item_{i}" for i in range(3, 7)]
    assert milvus_client.compare_primary_keys(collection_name) == {
        "milvus_count": 7,
        "pg_count": 7,
        "common_count": 7,
        "only_in_milvus": [],
        "only_in_pg": [],
        "has_differences": False,
        "differences": [],
    }


def test_unhonoured_keywords_are_refused_by_name() -> None:
    """Before any connection: a keyword we cannot honour is an error naming it, never swallowed."""
    for bad in ({"vector_comparison_significant_digits": 1}, {"use_high_performance_comparator": False}):
        with pytest.raises(TypeError, match=next(iter(bad))):
            MilvusPGClient(uri="http://127.0.0.1:1", pg_conn_str="postgresql://x@127.0.0.1:1/x", **bad)
    for ours, theirs in (("pg_dsn", "pg_conn_str"), ("tracker_path", "lmdb_path")):
        with pytest.raises(TypeError, match=f"{theirs}=, not {ours}="):
            MilvusPGClient(uri="http://127.0.0.1:1", pg_conn_str="postgresql://x@127.0.0.1:1/x", **{ours: "x"})
    for wrong in ({"vector_sample_size": 0}, {"vector_precision_decimals": -1}):
        with pytest.raises(ValueError, match=next(iter(wrong))):
            MilvusPGClient(uri="http://127.0.0.1:1", pg_conn_str="postgresql://x@127.0.0.1:1/x", **wrong)
    uri, dsn = _env()
    client = MilvusPGClient(uri=uri, pg_conn_str=dsn, enable_lmdb=False, use_high_performance_comparator=True)
    try:
        with pytest.raises(TypeError, match="limit"):
            client.query("anything", "id > 0", limit=3)
        with pytest.raises(ValueError, match="LMDB is not enabled"):
            client.three_way_pk_validation("anything")
    finally:
        client.close()


def test_ignore_vector_and_divergences_named(collection_name: str, tmp_path: Any, caplog: Any) -> None:
    """ignore_vector=True: no vector column in the shadow, comparisons pass and say vectors were skipped;
    a row deleted in Milvus behind the client's back and a changed scalar are found, keyed and sided."""
    uri, dsn = _env()
    with MilvusPGClient(uri=uri, pg_conn_str=dsn, ignore_vector=True, lmdb_path=str(tmp_path / "l")) as client:
        assert client.ignore_vector is True
        setup(client, collection_name)
        client.insert(collection_name, their_rows(range(20)))
        exported = client.export(collection_name)
        assert "embedding" not in exported.columns and len(exported) == 20
        caplog.set_level(logging.INFO, logger=PG_LOG)
        assert client.entity_compare(collection_name, full_scan=True, retry=1)
        assert client.last_comparison is not None
        assert any("no vector columns" in n for n in client.last_comparison.notes)

        MilvusClient(uri=uri).delete(collection_name, ids=[5])

        async def change() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'UPDATE "shadow_{collection_name}" SET age = -1 WHERE id = 9')
            finally:
                await conn.close()

        anyio.run(change)
        keys = client.compare_primary_keys(collection_name)
        assert (keys["only_in_pg"], keys["only_in_milvus"], keys["has_differences"]) == ([5], [], True)
        assert keys["differences"][0]["side"] == "milvus"  # the tracker says the row should exist
        votes = client.three_way_pk_validation(collection_name)
        assert (votes["milvus_errors"], votes["pg_errors"], votes["inconsistent_pks"]) == ([5], [], 1)
        sampled = client.three_way_pk_validation(collection_name, sample_size=5, seed=1)
        assert sampled["total_pks"] == 5 and sampled == client.three_way_pk_validation(collection_name, sample_size=5, seed=1)
        caplog.clear()
        assert client.entity_compare(collection_name, full_scan=True, retry=1) is False
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "key 5: row missing in milvus" in logged and "key 9: field 'age' changed in postgres" in logged


def test_sample_vector_compares_the_sampled_dimensions(collection_name: str, tmp_path: Any) -> None:
    """sample_vector=True, vector_sample_size=4 on 32-d vectors: a change in a dimension not sampled
    passes (and the note says 4 of 32 were compared); one in a sampled dimension is found."""
    uri, dsn = _env()
    dim = 32
    picked = sample_dims(their_schema_fields(dim), 4)["embedding"]
    unpicked = next(d for d in range(dim) if d not in picked)
    with MilvusPGClient(uri=uri, pg_conn_str=dsn, sample_vector=True, vector_sample_size=4, lmdb_path=str(tmp_path / "l")) as client:
        setup(client, collection_name, dim)
        client.insert(collection_name, their_rows(range(10), dim=dim))

        async def bump(dimension: int) -> None:
            conn = await asyncpg.connect(dsn)
            try:
                sql = f'UPDATE "shadow_{collection_name}" SET embedding[{dimension + 1}] = embedding[{dimension + 1}] + 0.5 WHERE id = 3'
                await conn.execute(sql)
            finally:
                await conn.close()

        anyio.run(bump, unpicked)
        assert client.entity_compare(collection_name, full_scan=True, retry=1)
        assert client.last_comparison is not None and any("4 of 32 dimensions" in n for n in client.last_comparison.notes)
        anyio.run(bump, int(picked[0]))
        assert client.entity_compare(collection_name, full_scan=True, retry=1) is False
        diffs = client.last_comparison.differences
        assert [(d.key, d.field, d.side) for d in diffs] == [(3, "embedding", "postgres")]


def their_schema_fields(dim: int) -> list[FieldSchema]:
    """The vector field as our schema model sees it: the comparison draws its sampled dimensions from it."""
    return [FieldSchema(name="embedding", type=FieldType.FLOAT_VECTOR, dim=dim)]
