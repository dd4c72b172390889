"""Shadow comparison helpers and the ``shadow`` CLI on the real Milvus server and PostgreSQL.

Each test builds a collection and its shadow table with identical rows (pymilvus insert, asyncpg),
checks every helper finds nothing, then injects one divergence of each kind and checks each is found
with the right key, field and side. Filters sent to Milvus are well-formed (a malformed one can crash
the local 2.3 server).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import numpy as np
import pyarrow.parquet as pq
import pytest
from pymilvus import MilvusClient

from task_components.errors import CollectionNotFoundError, FilterConversionError
from task_components.schema import parse_schema
from task_components.schema.arrow import schema_of
from task_components.schema.milvus import index_params, to_milvus_schema
from task_components.schema.postgres import columns, create_table_sql, quote, row_record, table_name
from task_components.shadow.compare import (
    compare_entities,
    compare_primary_keys,
    compare_query,
    compare_search,
    export,
    validate,
)
from task_components.shadow.tracker import KeyStateTracker
from tests.integration.conftest import service_uri
from tests.integration.helpers import cli, with_pool

pytestmark = pytest.mark.integration

NAME = "compare_it"
DIM = 8
SCHEMA = parse_schema(
    {
        "collection_name": NAME,
        "enable_dynamic_field": True,
        "fields": [
            {"name": "id", "type": "Int64", "is_primary": True},
            {"name": "name", "type": "VarChar", "max_length": 32},
            {"name": "score", "type": "Float"},
            {"name": "meta", "type": "JSON"},
            {"name": "emb", "type": "FloatVector", "dim": DIM},
        ],
    }
)
TABLE = quote(table_name(SCHEMA))


def rows(ids: range | list[int]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    vectors = rng.random((max(ids) + 1, DIM), dtype=np.float32)
    return [
        {"id": i, "name": f"n{i}", "score": i / 4, "meta": {"k": i, "tag": ["a", "b"][i % 2]}, "emb": vectors[i].tolist(), "extra": i % 3}
        for i in ids
    ]


@dataclass
class Env:
    milvus: MilvusClient
    dsn: str
    tracker: KeyStateTracker


async def pg_execute(dsn: str, sql: str, *args: Any, many: bool = False) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await (conn.executemany(sql, args[0]) if many else conn.execute(sql, *args))
    finally:
        await conn.close()


def pg_insert(dsn: str, data: list[dict[str, Any]]) -> None:
    cols = columns(SCHEMA)
    params = ", ".join(f"${i + 1}" for i in range(len(cols)))
    sql = f"INSERT INTO {TABLE} ({', '.join(quote(c) for c in cols)}) VALUES ({params})"
    anyio.run(lambda: pg_execute(dsn, sql, [row_record(r, SCHEMA) for r in data], many=True))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    milvus = MilvusClient(uri=service_uri("TEST_MILVUS_URI"))
    dsn = service_uri("TEST_POSTGRES_DSN")
    if milvus.has_collection(NAME):
        milvus.drop_collection(NAME)
    milvus.create_collection(NAME, schema=to_milvus_schema(SCHEMA))
    milvus.create_index(NAME, index_params(SCHEMA, False, {"emb": {"index_type": "FLAT", "metric_type": "L2"}})[0])
    milvus.load_collection(NAME)
    anyio.run(pg_execute, dsn, f"DROP TABLE IF EXISTS {TABLE}")
    anyio.run(pg_execute, dsn, create_table_sql(SCHEMA))
    data = rows(range(200))
    milvus.insert(NAME, data)
    pg_insert(dsn, data)
    tracker = KeyStateTracker(tmp_path / "keys.lmdb")
    tracker.record(range(200), "insert", NAME)
    try:
        yield Env(milvus, dsn, tracker)
    finally:
        tracker.close()
        milvus.drop_collection(NAME)
        milvus.close()
        anyio.run(pg_execute, dsn, f"DROP TABLE IF EXISTS {TABLE}")


def found(result: Any) -> set[tuple[Any, str | None, str, str]]:
    return {(d.key, d.field, d.kind, d.side) for d in result.differences}


def test_identical_sides_have_no_differences_and_export_round_trips(env: Env, tmp_path: Path) -> None:
    m, t = env.milvus, env.tracker

    async def scenario(pool: asyncpg.Pool) -> None:
        q = await compare_query(m, pool, NAME, 'id >= 50 and name like "n1%"', tracker=t)
        assert q.ok, str(q)
        assert q.compared == 100 and q.milvus_count == q.postgres_count == 100  # n100..n199
        everything = await validate(m, pool, NAME, tracker=t, batch_size=64)
        assert everything.ok and everything.compared == 200, str(everything)
        keys = await compare_primary_keys(m, pool, NAME, tracker=t)
        assert keys.ok and keys.milvus_count == keys.postgres_count == 200
        ent = await compare_entities(m, pool, NAME, [1, 2, 3, 999_999], tracker=t)
        assert ent.ok and ent.milvus_count == ent.postgres_count == 3
        queries = np.random.default_rng(1).random((5, DIM), dtype=np.float32)
        search = await compare_search(m, pool, NAME, queries, limit=10)
        assert search.ok and search.recalls == [1.0] * 5 and search.metric == "L2"
        filtered = await compare_search(m, pool, NAME, queries, limit=5, filter="id < 40", metric_type="L2")
        assert filtered.mean_recall == 1.0
        full_form = await compare_search(m, pool, NAME, queries[:1], search_params={"metric_type": "L2", "params": {}})
        assert full_form.ok and full_form.metric == "L2"
        with pytest.raises(FilterConversionError):
            await compare_query(m, pool, NAME, "id ~ 3")  # refused before Milvus sees it
        with pytest.raises(CollectionNotFoundError, match="compare_nope"):
            await validate(m, pool, "compare_nope")
        with pytest.raises(CollectionNotFoundError, match="shadow table 'compare_missing_table'"):
            await validate(m, pool, NAME, table="compare_missing_table")
        assert await export(pool, SCHEMA, tmp_path / "pg.parquet", side="postgres", batch_size=64) == 200
        assert await export(m, NAME, tmp_path / "milvus.parquet", side="milvus", batch_size=64) == 200

    anyio.run(with_pool, env.dsn, scenario)
    pg, mv = pq.read_table(tmp_path / "pg.parquet"), pq.read_table(tmp_path / "milvus.parquet")
    assert schema_of(pg.schema).collection_name == NAME
    want = rows(range(200))
    assert pg.column("id").to_pylist() == mv.column("id").to_pylist() == list(range(200))
    assert pg.column("name").to_pylist() == mv.column("name").to_pylist() == [r["name"] for r in want]
    assert np.array_equal(np.stack(pg.column("emb").to_numpy(zero_copy_only=False)), np.asarray([r["emb"] for r in want], np.float32))
    assert np.array_equal(
        np.stack(mv.column("emb").to_numpy(zero_copy_only=False)), np.stack(pg.column("emb").to_numpy(zero_copy_only=False))
    )
    assert [json.loads(v) for v in pg.column("meta").to_pylist()] == [r["meta"] for r in want]
    assert [json.loads(v) for v in mv.column("$meta").to_pylist()] == [{"extra": r["extra"]} for r in want]
    assert pg.column("$meta").to_pylist() == mv.column("$meta").to_pylist()


def inject_divergences(env: Env) -> None:
    """One of each: missing in Milvus, extra in PostgreSQL, extra in Milvus, a changed scalar, a changed vector."""
    env.milvus.delete(NAME, ids=[10])  # the tracker says 10 exists: Milvus lost it
    pg_insert(env.dsn, rows([5000]))  # never recorded: PostgreSQL holds a row it should not
    env.milvus.insert(NAME, rows([6000]))
    env.tracker.record([6000], "delete", NAME)  # recorded deleted: Milvus kept a row it should not
    anyio.run(pg_execute, env.dsn, f"UPDATE {TABLE} SET name = 'changed' WHERE id = 20")
    anyio.run(pg_execute, env.dsn, f"UPDATE {TABLE} SET emb[1] = emb[1] + 0.01 WHERE id = 30")


def test_each_divergence_is_found_with_key_field_and_side(env: Env) -> None:
    inject_divergences(env)
    m, t = env.milvus, env.tracker
    expected = {
        (10, None, "missing", "milvus"),
        (5000, None, "extra", "postgres"),
        (6000, None, "extra", "milvus"),
        (20, "name", "changed", "postgres"),
        (30, "emb", "changed", "postgres"),
    }

    async def scenario(pool: asyncpg.Pool) -> None:
        everything = await validate(m, pool, NAME, tracker=t, batch_size=64)
        assert found(everything) == expected, str(everything)
        assert (everything.milvus_count, everything.postgres_count) == (200, 201) and not everything.ok
        keys = await compare_primary_keys(m, pool, NAME, tracker=t)
        assert found(keys) == {d for d in expected if d[1] is None}
        q = await compare_query(m, pool, NAME, "id < 25", tracker=t)
        assert found(q) == {(10, None, "missing", "milvus"), (20, "name", "changed", "postgres")}
        loose = await compare_query(m, pool, NAME, "id >= 25 and id < 40", tolerance=0.1)
        assert loose.ok, str(loose)  # 0.01 is within 0.1
        no_vec = await compare_query(m, pool, NAME, "id >= 25 and id < 40", ignore_vectors=True)
        assert no_vec.ok
        scalar_only = await compare_query(m, pool, NAME, "id < 40", output_fields=["name"], tracker=t)
        assert found(scalar_only) == {(10, None, "missing", "milvus"), (20, "name", "changed", "postgres")}
        ent = await compare_entities(m, pool, NAME, [10, 20, 30, 31, 5000, 6000], tracker=t)
        assert found(ent) == expected
        search = await compare_search(m, pool, NAME, [rows([10])[0]["emb"]], limit=3)
        assert not search.ok and search.recalls[0] < 1 and (10, "emb", "missing", "milvus") in found(search)
        untracked = await compare_entities(m, pool, NAME, [10, 6000])  # no tracker: Milvus is the reference
        assert found(untracked) == {(10, None, "extra", "postgres"), (6000, None, "missing", "postgres")}

    anyio.run(with_pool, env.dsn, scenario)


def test_cli_exit_codes(env: Env, tmp_path: Path) -> None:
    conn = ["--uri", service_uri("TEST_MILVUS_URI"), "--pg-dsn", env.dsn]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli("shadow", *args), capture_output=True, text=True, timeout=120)

    ok = run("validate", NAME, *conn)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "no differences" in ok.stdout
    exported = run("export", NAME, "--out", str(tmp_path / "x.parquet"), "--side", "milvus", *conn)
    assert exported.returncode == 0 and pq.read_metadata(tmp_path / "x.parquet").num_rows == 200

    inject_divergences(env)
    env.tracker.close()
    differs = run("validate", NAME, "--json", "--tracker", str(tmp_path / "keys.lmdb"), *conn)
    assert differs.returncode == 1, differs.stderr
    report = json.loads(differs.stdout)
    assert report["total"] == 5 and {(d["key"], d["side"]) for d in report["differences"]} >= {(10, "milvus")}
    by_ids = run("compare", NAME, "--ids", "20,21", *conn)
    assert by_ids.returncode == 1 and "changed" in by_ids.stdout

    for args, message in [
        (("validate", "compare_nope", *conn), "collection 'compare_nope' does not exist in Milvus"),
        (("compare", NAME, "--filter", "id ~ 3", *conn), "unsupported character"),
        (("compare", NAME, "--ids", "a,b", *conn), "has Int64 keys"),
    ]:
        bad = run(*args)
        assert bad.returncode == 2, bad.stdout + bad.stderr
        assert message in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def other_schema(auto_id: bool) -> Any:
    pk = (
        {"name": "pk", "type": "Int64", "is_primary": True, "auto_id": True}
        if auto_id
        else {"name": "pk", "type": "VarChar", "max_length": 16, "is_primary": True}
    )
    name = "compare_it_auto" if auto_id else "compare_it_text"
    fields = [pk, {"name": "name", "type": "VarChar", "max_length": 32}, {"name": "v", "type": "FloatVector", "dim": 4}]
    return parse_schema({"collection_name": name, "fields": fields})


@pytest.mark.parametrize("auto_id", [True, False], ids=["auto_id", "varchar_pk"])
def test_auto_id_and_text_keys(auto_id: bool, tmp_path: Path) -> None:
    """AUTO_ID: the table's ``_row`` holds the id Milvus assigned; VarChar keys go to Milvus as quoted literals."""
    schema = other_schema(auto_id)
    name, table = schema.collection_name, quote(table_name(schema))
    milvus = MilvusClient(uri=service_uri("TEST_MILVUS_URI"))
    dsn = service_uri("TEST_POSTGRES_DSN")
    if milvus.has_collection(name):
        milvus.drop_collection(name)
    milvus.create_collection(name, schema=to_milvus_schema(schema))
    milvus.create_index(name, index_params(schema, False, {"v": {"index_type": "FLAT", "metric_type": "COSINE"}})[0])
    milvus.load_collection(name)
    anyio.run(pg_execute, dsn, f"DROP TABLE IF EXISTS {table}")
    anyio.run(pg_execute, dsn, create_table_sql(schema))
    vectors = np.random.default_rng(5).random((60, 4), dtype=np.float32)
    data = [{"name": f"n{i}", "v": vectors[i].tolist()} for i in range(60)]
    if not auto_id:
        data = [{"pk": f"k{i:03d}", **r} for i, r in enumerate(data)]
    ids = list(milvus.insert(name, data)["ids"])
    records = [(k, *row_record(r, schema)) if auto_id else row_record(r, schema) for k, r in zip(ids, data, strict=True)]
    cols = ", ".join(quote(c) for c in columns(schema))
    sql = f"INSERT INTO {table} ({cols}) VALUES ({', '.join(f'${i + 1}' for i in range(len(columns(schema))))})"
    anyio.run(lambda: pg_execute(dsn, sql, records, many=True))

    async def scenario(pool: asyncpg.Pool) -> None:
        same = await validate(milvus, pool, name, batch_size=16)
        assert same.ok and same.compared == 60, str(same)
        search = await compare_search(milvus, pool, name, vectors[:3] + 0.01, limit=5)
        assert search.recalls == [1.0] * 3 and search.metric == "COSINE"
        assert (await compare_entities(milvus, pool, name, [ids[1], ids[2]])).ok
        await pool.execute(f"UPDATE {table} SET name = 'changed' WHERE {quote(key)} = $1", ids[7])
        await anyio.to_thread.run_sync(lambda: milvus.delete(name, ids=[ids[9]]))
        after = await validate(milvus, pool, name)
        assert found(after) == {(ids[7], "name", "changed", "postgres"), (ids[9], None, "extra", "postgres")}
        assert found(await compare_entities(milvus, pool, name, [str(ids[7]), ids[8]])) == {(ids[7], "name", "changed", "postgres")}
        assert await export(pool, schema, tmp_path / "pg.parquet", batch_size=16) == 60

    key = "_row" if auto_id else "pk"
    try:
        anyio.run(with_pool, dsn, scenario)
        exported = pq.read_table(tmp_path / "pg.parquet")  # key order: both kinds of keys grow with the rows
        assert exported.column("name").to_pylist() == [f"n{i}" if i != 7 else "changed" for i in range(60)]
    finally:
        milvus.drop_collection(name)
        milvus.close()
        anyio.run(pg_execute, dsn, f"DROP TABLE IF EXISTS {table}")


def test_milvus_reads_are_fresh_on_a_bounded_collection_and_take_the_lowest_key(tmp_path: Path) -> None:
    """Review findings: pages carrying pymilvus' iterator flag go with the collection's default consistency
    (MilvusClient's default, Bounded), so a walk or a Milvus-side export right after a write missed its
    rows; the key -2**63 made the walk send ``id > -9223372036854775808`` and ``id in [...]`` lookups
    fail, both refused by the parser."""
    from pymilvus import DataType

    from task_components.keyexpr import INT64_MIN, walk
    from task_components.shadow.dropin import ShadowMilvusClient

    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "compare_bounded"
    client = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
    s = MilvusClient.create_schema(enable_dynamic_field=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("n", DataType.INT64)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=2)
    index = MilvusClient.prepare_index_params()
    index.add_index("vec", index_type="FLAT", metric_type="L2")
    first, then = [INT64_MIN, INT64_MIN + 1, -3, 0, 11], [5, 6, 7]
    try:
        if client.has_collection(name):
            client.drop_collection(name)
        client.create_collection(name, schema=s, index_params=index, consistency_level="Bounded")
        assert client.describe_collection(name)["consistency_level"] == 2  # Bounded: the case that bit
        client.insert(name, [{"id": k, "n": i, "vec": [0.1, 0.2]} for i, k in enumerate(first)])
        pages = walk(client, name, "id", True, "", ["id"], 1)  # pages of one: the second starts after -2**63
        assert [r["id"] for page in pages for r in page] == first and pages.count == len(first)
        client.insert(name, [{"id": k, "n": k, "vec": [0.3, 0.4]} for k in then])

        async def check(pool: asyncpg.Pool) -> list[Any]:
            exported = await export(client, name, tmp_path / "m.parquet", side="milvus", batch_size=1)
            return [
                exported,
                await compare_entities(client, pool, name, [INT64_MIN, 0, 6]),
                await validate(client, pool, name, batch_size=2),
            ]

        exported, entities, everything = anyio.run(with_pool, dsn, check)
        assert exported == len(first) + len(then)  # the rows inserted just before the export are in it
        assert pq.read_table(tmp_path / "m.parquet").column("id").to_pylist() == sorted(first + then)
        assert entities.ok and entities.milvus_count == entities.postgres_count == 3, str(entities)
        assert everything.ok and everything.compared == len(first) + len(then), str(everything)
        client.delete(name, ids=[INT64_MIN, 11])  # by `id < -9223372036854775807 or id in [11]`
        left = client.query(name, filter="n >= 0", output_fields=["id"], consistency_level="Strong")
        assert sorted(r["id"] for r in left) == sorted(k for k in first + then if k not in (INT64_MIN, 11))
        assert anyio.run(with_pool, dsn, lambda pool: validate(client, pool, name)).ok
    finally:
        if client.has_collection(name):
            client.drop_collection(name)
        client.close()
