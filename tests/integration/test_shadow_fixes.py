"""Shadow fixes of issue 22, each where it can bite, on the real Milvus 2.3.5 server and PostgreSQL.

Keys pymilvus cannot page over (a VarChar key holding ``"``; the Int64 key 2**63-1, which Milvus 2.3
counts but returns from no query) must not make a comparison fail or report a false difference; the
drop-in client mirrors ``rename_collection``, names a collection another client re-created, and writes
to a Lite file under the same per-file lock as the pipeline's Lite client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from pymilvus import DataType, MilvusClient

from task_components.keyexpr import INT64_MAX
from task_components.shadow.compare import compare_entities, compare_primary_keys, compare_query, validate
from task_components.shadow.dropin import AsyncShadowMilvusClient, ShadowMilvusClient
from tests.integration.conftest import service_uri
from tests.integration.helpers import with_pool

pytestmark = pytest.mark.integration


def vec_schema(id_type: DataType) -> Any:
    s = MilvusClient.create_schema(enable_dynamic_field=False)
    s.add_field("id", id_type, is_primary=True, **({"max_length": 32} if id_type == DataType.VARCHAR else {}))
    s.add_field("n", DataType.INT64)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=2)
    return s


def index() -> Any:
    params = MilvusClient.prepare_index_params()
    params.add_index("vec", index_type="FLAT", metric_type="L2")
    return params


def fresh(client: Any, name: str, id_type: DataType) -> None:
    if client.has_collection(name):
        client.drop_collection(name)
    client.create_collection(name, schema=vec_schema(id_type), index_params=index())


def test_compare_pages_over_varchar_keys_with_quotes(tmp_path: Path) -> None:
    """pymilvus' query_iterator built ``id > "a"b"`` for its next page and Milvus refused it."""
    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "fix_quoted_keys"
    client = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
    keys = ['a"b', 'a"c', "b\\d", 'q"', "plain", "z'x", *(f"k{i:03d}" for i in range(40))]
    try:
        fresh(client, name, DataType.VARCHAR)
        client.insert(name, [{"id": k, "n": i, "vec": [0.1, 0.2]} for i, k in enumerate(keys)])

        async def check(pool: asyncpg.Pool) -> list[Any]:
            # batch sizes of 2 and 3: the walk's next page starts after a key holding a quote
            return [
                await validate(client, pool, name, tracker=client.tracker, batch_size=3),
                await compare_primary_keys(client, pool, name, tracker=client.tracker),
                await compare_query(client, pool, name, 'id like "a%"', batch_size=2),
                await compare_entities(client, pool, name, ['a"b', "b\\d", 'missing"x']),
            ]

        everything, pks, query, entities = anyio.run(with_pool, dsn, check)
        assert everything.ok and everything.compared == len(keys), str(everything)
        assert pks.ok and pks.milvus_count == pks.postgres_count == len(keys), str(pks)
        assert query.ok and query.compared == 2, str(query)
        assert entities.ok and entities.milvus_count == 2, str(entities)
    finally:
        client.drop_collection(name)
        client.close()


def test_compare_counts_the_key_milvus_cannot_return(tmp_path: Path) -> None:
    """A row keyed 2**63-1 is in Milvus (count(*) says so) but no query returns it: not a difference."""
    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "fix_max_key"
    client = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
    keys = [-(2**63) + 1, -5, 0, 7, INT64_MAX - 1, INT64_MAX]
    try:
        fresh(client, name, DataType.INT64)
        client.insert(name, [{"id": k, "n": i, "vec": [0.1, 0.2]} for i, k in enumerate(keys)])
        assert [r["id"] for r in client.query(name, filter="n >= 0", limit=10, consistency_level="Strong")] == keys[
            :-1
        ]  # the server quirk this guards against: the row is stored but never returned

        async def check(pool: asyncpg.Pool) -> list[Any]:
            return [
                await validate(client, pool, name, tracker=client.tracker, batch_size=2),
                await compare_primary_keys(client, pool, name, tracker=client.tracker),
                await compare_entities(client, pool, name, [INT64_MAX, 7]),
            ]

        everything, pks, entities = anyio.run(with_pool, dsn, check)
        assert everything.ok and everything.compared == len(keys), str(everything)
        assert any("2**63-1" in n for n in everything.notes), everything.notes
        assert pks.ok and pks.milvus_count == pks.postgres_count == len(keys), str(pks)
        assert entities.ok and entities.milvus_count == entities.postgres_count == 2, str(entities)
        client.delete(name, ids=[INT64_MAX])  # really gone from Milvus now: a difference if the shadow kept it

        async def shadow_kept_it(pool: asyncpg.Pool) -> Any:
            await pool.execute('INSERT INTO "shadow_fix_max_key" (id, n, vec) VALUES ($1, 1, $2)', INT64_MAX, [0.1, 0.2])
            return await compare_primary_keys(client, pool, name)

        after = anyio.run(with_pool, dsn, shadow_kept_it)
        assert {(d.key, d.side) for d in after.differences} == {(INT64_MAX, "postgres")}, str(after)
    finally:
        client.drop_collection(name)
        client.close()


def pg_tables(dsn: str, *names: str) -> list[bool]:
    async def look() -> list[bool]:
        conn = await asyncpg.connect(dsn)
        try:
            return [await conn.fetchval("SELECT to_regclass($1)", f'"{n}"') is not None for n in names]
        finally:
            await conn.close()

    return anyio.run(look)


def test_rename_collection_renames_the_shadow_and_the_tracker_keys(tmp_path: Path) -> None:
    uri, dsn = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN")
    old, new, taken = "fix_rename_old", "fix_rename_new", "fix_rename_taken"
    client = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
    try:
        for n in (new, taken):
            if client.has_collection(n):
                client.drop_collection(n)
        fresh(client, old, DataType.INT64)
        fresh(client, taken, DataType.INT64)
        client.insert(old, [{"id": k, "n": k, "vec": [0.1, 0.2]} for k in range(5)])
        with pytest.raises(Exception, match=taken):  # Milvus refuses: both sides stay as they were
            client.rename_collection(old, taken)
        assert pg_tables(dsn, f"shadow_{old}", f"shadow_{taken}") == [True, True]
        client.rename_collection(old, new)
        assert pg_tables(dsn, f"shadow_{old}", f"shadow_{new}") == [False, True]
        assert client.tracker is not None
        assert client.tracker.state(3, new) == "EXISTS" and client.tracker.state(3, old) is None
        client.insert(new, [{"id": 9, "n": 9, "vec": [0.1, 0.2]}])  # writes reach the renamed table
        client.delete(new, ids=[0])

        async def check(pool: asyncpg.Pool) -> Any:
            return await validate(client, pool, new, tracker=client.tracker)

        result = anyio.run(with_pool, dsn, check)
        assert result.ok and result.milvus_count == result.postgres_count == 5, str(result)
    finally:
        for n in (old, new, taken):
            if client.has_collection(n):
                client.drop_collection(n)
        client.close()


def test_collection_recreated_by_another_client_is_named(tmp_path: Path) -> None:
    """Client A cached the schema; client B re-creates the collection with another field: A's next write
    used to fail with 'column "x" ... does not exist' for rows that have no x."""
    from task_components.errors import ShadowSchemaError

    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "fix_recreated"
    a = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
    b = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
    try:
        fresh(a, name, DataType.INT64)
        a.insert(name, [{"id": 1, "n": 1, "vec": [0.1, 0.2]}])
        b.drop_collection(name)
        other = MilvusClient.create_schema()
        other.add_field("id", DataType.INT64, is_primary=True)
        other.add_field("m", DataType.VARCHAR, max_length=8)
        other.add_field("vec", DataType.FLOAT_VECTOR, dim=2)
        b.create_collection(name, schema=other, index_params=index())
        row = {"id": 2, "m": "x", "vec": [0.1, 0.2]}
        with pytest.raises(ShadowSchemaError, match=f"{name}.*re-created by another client.*retry"):
            a.insert(name, [row])
        a.insert(name, [row])  # the schema was re-read: the retry lands on both sides
        a.delete(name, ids=[2])
        assert a.query(name, filter="id >= 0", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"] == 0
        # a client that does not shadow re-creates it: the shadow table is the old collection's
        plain = MilvusClient(uri=uri)
        plain.drop_collection(name)
        plain.create_collection(name, schema=vec_schema(DataType.INT64), index_params=index())
        plain.close()
        row = {"id": 3, "n": 3, "vec": [0.1, 0.2]}
        with pytest.raises(ShadowSchemaError, match="re-created by another client"):
            a.insert(name, [row])
        with pytest.raises(ShadowSchemaError, match=f"shadow table 'shadow_{name}' lacks column.*n of collection"):
            a.insert(name, [row])
    finally:
        if a.has_collection(name):
            a.drop_collection(name)
        b.close()
        a.close()


def test_shadow_client_on_a_lite_file_writes_under_the_lite_lock(tmp_path: Path) -> None:
    """Two clients of one Lite file must never write at once (Lite interleaves its WAL): the shadow client
    waits for the lock the pipeline's LiteClient holds."""
    import threading

    from task_components.lite_client import LiteClient, write_lock

    dsn, db = service_uri("TEST_POSTGRES_DSN"), str(tmp_path / "lite.db")
    shadowing = ShadowMilvusClient(uri=db, pg_dsn=dsn, tracker_path=tmp_path / "keys")
    plain = LiteClient(db)
    try:
        fresh(shadowing, "fix_lite", DataType.INT64)
        done = threading.Event()

        def write() -> None:
            shadowing.insert("fix_lite", [{"id": 1, "n": 1, "vec": [0.1, 0.2]}])
            done.set()

        with write_lock(db):  # as a LiteClient write in progress holds it
            worker = threading.Thread(target=write)
            worker.start()
            assert not done.wait(1.5), "the shadow client wrote to the Lite file while its write lock was held"
        worker.join(30)
        assert done.is_set()
        plain.insert("fix_lite", [{"id": 2, "n": 2, "vec": [0.1, 0.2]}])
        assert plain.query("fix_lite", filter="id >= 0", output_fields=["count(*)"])[0]["count(*)"] == 2
        done.clear()

        async def write_async() -> None:  # the async client waits too, without blocking its event loop
            client = AsyncShadowMilvusClient(uri=db, pg_dsn=dsn, tracker_path=tmp_path / "keys")
            try:
                ticks = 0

                async def tick() -> None:
                    nonlocal ticks
                    while not done.is_set():
                        ticks += 1
                        await anyio.sleep(0.05)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(tick)
                    await client.insert("fix_lite", [{"id": 3, "n": 3, "vec": [0.1, 0.2]}])
                    done.set()
                assert ticks >= 10  # the loop kept running while the insert waited for the lock
            finally:
                await client.close()

        with write_lock(db):
            worker = threading.Thread(target=anyio.run, args=(write_async,))
            worker.start()
            assert not done.wait(1.5), "the async shadow client wrote while the Lite write lock was held"
        worker.join(30)
        assert done.is_set()
        assert plain.query("fix_lite", filter="id >= 0", output_fields=["count(*)"])[0]["count(*)"] == 3

        async def flush_async() -> None:  # a flush swaps the WAL a write may be appending to: it waits too
            client = AsyncShadowMilvusClient(uri=db, pg_dsn=dsn, tracker_path=tmp_path / "keys")
            try:
                await client.flush("fix_lite")
                flushed.set()
            finally:
                await client.close()

        flushed = threading.Event()
        with write_lock(db):
            worker = threading.Thread(target=anyio.run, args=(flush_async,))
            worker.start()
            assert not flushed.wait(1.5), "the async shadow client flushed while the Lite write lock was held"
        worker.join(30)
        assert flushed.is_set()
    finally:
        shadowing.drop_collection("fix_lite")
        plain.close()
        shadowing.close()


def test_shadow_table_follows_the_collection_not_the_schema(tmp_path: Path) -> None:
    """Two pipelines loading collections a and b from one schema used to share table shadow_simple."""
    from pipeline.registry import build_dag
    from pipeline.spec import SpecError, spec_from_raw
    from task_components.schema.library import resolve_schema

    def shadow_table(collections: list[str | None], **shadow: Any) -> str:
        tasks: dict[str, Any] = {
            "generate": {"uses": "generate", "with": {"schema": "simple", "total_rows": 10}},
            "shadow": {"uses": "shadow.sync", "needs": ["generate"], "with": shadow},
        }
        for i, c in enumerate(collections):
            tasks[f"c{i}"] = {"uses": "milvus.create_collection", "with": {"schema": "simple", "collection": c}}
        file = tmp_path / "p.yaml"
        dag = build_dag(spec_from_raw({"name": "t", "tasks": tasks}, file), file)
        task = next(t for t in dag if t.name == "shadow")
        return task._table(resolve_schema("simple"))

    assert shadow_table(["coll_a"]) == "shadow_coll_a"
    assert shadow_table(["coll_b"]) == "shadow_coll_b"
    assert shadow_table([None]) == shadow_table([]) == "shadow_simple"  # the schema's name, as the collection's
    assert shadow_table(["coll_a", "coll_b"], collection="coll_b") == "shadow_coll_b"
    assert shadow_table(["coll_a"], table="mine") == "mine"
    with pytest.raises(SpecError, match=r"several collections.*coll_a.*coll_b.*set collection"):
        shadow_table(["coll_a", "coll_b"])


def imported_from(tmp_path: Path, name: str, key_type: str, keys: list[Any]) -> Any:
    """A collection holding ``keys`` and the ImportResult verification reads (source file, manifest)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from task_components.contracts import CollectionInfo, ImportResult
    from task_components.manifest import FileEntry, Manifest
    from task_components.schema import parse_schema
    from task_components.schema.arrow import arrow_schema
    from task_components.schema.milvus import index_params, to_milvus_schema

    schema = parse_schema(
        {
            "collection_name": name,
            "fields": [
                {"name": "id", "type": key_type, "is_primary": True, **({"max_length": 32} if key_type == "VarChar" else {})},
                {"name": "n", "type": "Int64"},
                {"name": "vec", "type": "FloatVector", "dim": 2},
            ],
        }
    )
    data = [{"id": k, "n": i, "vec": [0.25, float(i)]} for i, k in enumerate(keys)]
    uri = service_uri("TEST_MILVUS_URI")
    client = MilvusClient(uri=uri)
    if client.has_collection(name):
        client.drop_collection(name)
    client.create_collection(name, schema=to_milvus_schema(schema))
    client.create_index(name, index_params(schema, False, {"vec": {"index_type": "FLAT", "metric_type": "L2"}})[0])
    client.load_collection(name)
    client.insert(name, data)
    client.close()
    pq.write_table(pa.Table.from_pylist(data, schema=arrow_schema(schema)), tmp_path / "part-0.parquet")
    manifest = Manifest(
        format="parquet",
        schema=schema,
        root=str(tmp_path),
        files=[FileEntry(path="part-0.parquet", rows=len(keys), bytes=1, sha256="0" * 64)],
    )
    info = CollectionInfo(name=name, target={"uri": uri, "token": None, "db_name": "", "lite": False}, collection_schema=schema, indexes={})
    return ImportResult(
        collection=name,
        method="insert",
        rows_in_milvus=len(keys),
        rows_expected=len(keys),
        files=1,
        seconds=0.0,
        info=info,
        manifest=manifest,
    )


def test_verification_looks_up_quoted_and_max_keys(tmp_path: Path) -> None:
    """verify's sample and missing-key lookups wrote ``id in ["a"b"]`` (refused by Milvus, or keys skipped as
    unchecked) and reported a row keyed 2**63-1 missing from Milvus."""
    from task_components.verification.keys import missing_keys
    from task_components.verification.task import compare_sample

    (tmp_path / "q").mkdir()
    (tmp_path / "m").mkdir()
    quoted = imported_from(tmp_path / "q", "fix_verify_quoted", "VarChar", ['a"b', "c\\d", 'e"', "plain"])
    maxed = imported_from(tmp_path / "m", "fix_verify_max", "Int64", [1, 2, INT64_MAX - 1, INT64_MAX])
    try:
        for imported in (quoted, maxed):
            sample = compare_sample(imported, 1e-6, 10)
            assert sample.passed and "4 keys, 2 fields compared, 100.0% match fully" in sample.detail, sample.detail
            keys = missing_keys(imported)
            assert keys.detail == "all 4 source keys are in Milvus exactly once (extra rows not from the source?)"
        assert "2**63-1" in compare_sample(maxed, 1e-6, 10).detail  # said, not hidden
    finally:
        client = MilvusClient(uri=service_uri("TEST_MILVUS_URI"))
        for name in ("fix_verify_quoted", "fix_verify_max"):
            client.drop_collection(name)
        client.close()


def test_verify_task_three_way_and_full_scan_over_quoted_and_max_keys(tmp_path: Path) -> None:
    """The verify task end to end (sample three-way, full scan) with the shadow: no false finding."""
    from dag_orchestrator import PipelineContext, RunServices
    from task_components.contracts import ShadowResult
    from task_components.schema.postgres import columns, create_table_sql, quote, row_record
    from task_components.verification import Verify, VerifyParams
    from tests.integration.test_shadow import settings_with_pg

    dsn, settings = service_uri("TEST_POSTGRES_DSN"), settings_with_pg()
    cases = {"fix_vt_quoted": ("VarChar", ['a"b', "c\\d", 'e"', "plain"]), "fix_vt_max": ("Int64", [1, 2, INT64_MAX - 1, INT64_MAX])}
    try:
        for name, (key_type, keys) in cases.items():
            (tmp_path / name).mkdir()
            imported = imported_from(tmp_path / name, name, key_type, keys)
            schema = imported.info.collection_schema
            table = f"shadow_{name}"
            rows = [{"id": k, "n": i, "vec": [0.25, float(i)]} for i, k in enumerate(keys)]

            async def load(pool: asyncpg.Pool, t: str = table, s: Any = schema, r: list[Any] = rows) -> None:
                await pool.execute(f"DROP TABLE IF EXISTS {quote(t)}")
                await pool.execute(create_table_sql(s, t))
                await pool.copy_records_to_table(t, records=[row_record(x, s) for x in r], columns=columns(s))

            anyio.run(with_pool, dsn, load)
            shadow = ShadowResult(table=table, key="id", rows=len(keys), embedded=False, seconds=0.0, collection_schema=schema)
            for level in ("sample", "full"):
                verify = Verify("verify", VerifyParams(level=level, search=0), needs=["import", "shadow"])
                ctx = PipelineContext(run_dir=tmp_path / name, services=RunServices(settings))
                ctx.results.update({"import": imported, "shadow": shadow})
                report = anyio.run(verify.run, ctx)
                assert report.passed and not report.findings, (name, level, report.checks)
                if key_type == "Int64":
                    assert any("2**63-1" in c.detail for c in report.checks[1:]), report.checks
    finally:
        client = MilvusClient(uri=service_uri("TEST_MILVUS_URI"))
        for name in cases:
            client.drop_collection(name)
        client.close()
        for name in cases:
            anyio.run(with_pool, dsn, lambda p, n=name: p.execute(f'DROP TABLE IF EXISTS "shadow_{n}"'))
