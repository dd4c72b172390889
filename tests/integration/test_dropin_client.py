"""The drop-in shadowing clients as an application uses them, on the real Milvus server and PostgreSQL.

The application swaps ``MilvusClient`` for ``ShadowMilvusClient`` and keeps writing: a seeded mixed
workload of 10,000 row writes (insert, upsert, delete by ids and by filter, writes Milvus refuses and
writes the shadow refuses) from four threads sharing one client, then the comparison helpers must find
no difference; divergences injected behind the client's back must be found and attributed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import numpy as np
import pytest
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from task_components.errors import TransactionError
from task_components.shadow.compare import compare_primary_keys, compare_query, compare_search, validate
from task_components.shadow.dropin import AsyncShadowMilvusClient, ShadowMilvusClient
from task_components.shadow.tracker import DELETED, EXISTS, KeyStateTracker
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration

DIM = 16
TAGS = ["red", "green", "blue", "cyan"]
HOT = range(900_000, 900_050)  # keys every thread upserts: the lock must give both stores the same winner


def schema() -> Any:
    s = MilvusClient.create_schema(enable_dynamic_field=True)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("name", DataType.VARCHAR, max_length=24)
    s.add_field("score", DataType.DOUBLE)
    s.add_field("tag", DataType.VARCHAR, max_length=8)
    s.add_field("meta", DataType.JSON)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    return s


def index() -> Any:
    params = MilvusClient.prepare_index_params()
    params.add_index("vec", index_type="FLAT", metric_type="L2")
    return params


def row(rng: np.random.Generator, key: int, dim: int = DIM, name: str = "") -> dict[str, Any]:
    r = {
        "id": key,
        "name": name or f"n{key}",
        "score": float(rng.random()),
        "tag": TAGS[key % 4],
        "meta": {"k": int(key % 10), "w": [int(key % 3)]},
        "vec": rng.random(dim, dtype=np.float32).tolist(),
    }
    if key % 5 == 0:
        r["extra"] = int(key % 7)  # a dynamic field
    return r


@dataclass
class Tally:
    writes: int = 0
    refused_milvus: int = 0
    refused_shadow: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    hot: set[int] = field(default_factory=set)

    def add(self, op: str, n: int) -> None:
        self.writes += n
        self.by_op[op] = self.by_op.get(op, 0) + n


def workload(client: Any, name: str, seed: int, base: int, quota: int, alive: set[int], tally: Tally) -> None:
    """One thread's share: keys base.. are its own (so the model of what exists stays exact)."""
    rng = np.random.default_rng(seed)
    next_key = base
    done = 0
    while done < quota:
        roll = rng.random()
        k = int(rng.integers(1, 24))
        if roll < 0.35 or len(alive) < 30:
            rows = [row(rng, next_key + i) for i in range(k)]
            next_key += k
            client.insert(name, rows if k > 1 else rows[0])  # MilvusClient takes one dict too
            alive.update(r["id"] for r in rows)
            op = "insert"
        elif roll < 0.55:
            mine = sorted(alive)
            keys = [mine[int(i)] for i in rng.choice(len(mine), size=min(k, len(mine)), replace=False)]
            keys += [next_key] if rng.random() < 0.3 else []  # an upsert may also create
            next_key += 1
            client.upsert(name, [row(rng, key, name=f"up{key}") for key in keys])
            alive.update(keys)
            k, op = len(keys), "upsert"
        elif roll < 0.63:
            key = int(HOT[int(rng.integers(0, len(HOT)))])
            client.upsert(name, row(rng, key, name=f"hot{seed}"))
            tally.hot.add(key)
            k, op = 1, "upsert hot"
        elif roll < 0.78:
            mine = sorted(alive)
            keys = [mine[int(i)] for i in rng.choice(len(mine), size=min(k, len(mine)), replace=False)]
            client.delete(name, ids=[*keys, base - 1])  # plus a key that does not exist
            alive.difference_update(keys)
            k, op = len(keys), "delete ids"
        elif roll < 0.88:
            lo, hi = base + int(rng.integers(0, max(next_key - base, 1))), 0
            hi = lo + 40
            expr = f'id >= {lo} and id < {hi} and (tag in ["red", "blue"] or meta["k"] > 6)'
            gone = {key for key in alive if lo <= key < hi and (key % 4 in (0, 2) or key % 10 > 6)}
            client.delete(name, filter=expr)
            alive.difference_update(gone)
            k, op = max(len(gone), 1), "delete filter"
        elif roll < 0.94:
            with pytest.raises(MilvusException):  # a 7-d vector: Milvus refuses, the shadow rolls back
                client.insert(name, [row(rng, next_key + i, dim=DIM - 1) for i in range(k)])
            next_key += k
            tally.refused_milvus += 1
            op = "refused by milvus"
        else:
            key = sorted(alive)[0]
            with pytest.raises(TransactionError, match="already in"):  # Milvus would keep two rows
                client.insert(name, [row(rng, next_key), row(rng, key)])
            next_key += 1
            k, op = 2, "refused by shadow"
            tally.refused_shadow += 1
        done += k
        tally.add(op, k)


def both_counts(milvus: MilvusClient, name: str, dsn: str) -> tuple[int, int]:
    n_milvus = milvus.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"]

    async def pg() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(f'SELECT count(*) FROM "shadow_{name}"'))
        finally:
            await conn.close()

    return n_milvus, anyio.run(pg)


def test_application_swaps_the_import_and_both_sides_agree(tmp_path: Path) -> None:
    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "dropin_app"
    client = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
    assert isinstance(client, MilvusClient)
    if client.has_collection(name):
        client.drop_collection(name)
    client.create_collection(name, schema=schema(), index_params=index())
    tally, threads, models = Tally(), [], [set[int]() for _ in range(4)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            workload(client, name, seed=100 + i, base=(i + 1) * 100_000, quota=2_500, alive=models[i], tally=tally)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    for i in range(4):
        threads.append(threading.Thread(target=run, args=(i,)))
        threads[-1].start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert tally.writes >= 10_000 and tally.refused_milvus > 0 and tally.refused_shadow > 0, tally
    assert {"insert", "upsert", "upsert hot", "delete ids", "delete filter"} <= set(tally.by_op), tally
    expected = sum(len(m) for m in models) + len(tally.hot)
    assert both_counts(client, name, dsn) == (expected, expected)
    key = sorted(models[0])[0]
    assert client.tracker is not None and client.tracker.state(key, name) == EXISTS
    plain = MilvusClient(uri=uri)

    async def compare(tracker: KeyStateTracker | None) -> list[Any]:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            return [
                await validate(client, pool, name, tracker=tracker),
                await compare_primary_keys(client, pool, name, tracker=tracker),
                await compare_query(client, pool, name, 'tag == "green" and score > 0.5', tracker=tracker),
                await compare_query(client, pool, name, 'meta["k"] in [1, 2] or extra == 3', ignore_vectors=True),
                await compare_search(client, pool, name, np.random.default_rng(1).random((5, DIM)).tolist(), limit=5),
            ]
        finally:
            await pool.close()

    try:
        for result in anyio.run(compare, client.tracker):
            assert result.ok, str(result)
        # divergences behind the client's back: one per side and kind, each found and attributed
        deleted_in_milvus, changed_in_pg, deleted_in_pg = sorted(models[1])[:3]
        plain.delete(name, ids=[deleted_in_milvus])

        async def tamper() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f"UPDATE \"shadow_{name}\" SET name = 'tampered' WHERE id = {changed_in_pg}")
                await conn.execute(f'DELETE FROM "shadow_{name}" WHERE id = {deleted_in_pg}')
            finally:
                await conn.close()

        anyio.run(tamper)
        found = anyio.run(compare, client.tracker)[0]
        got = {(d.key, d.field, d.kind, d.side) for d in found.differences}
        assert got == {
            (deleted_in_milvus, None, "missing", "milvus"),  # the tracker says it should exist
            (changed_in_pg, "name", "changed", "postgres"),
            (deleted_in_pg, None, "missing", "postgres"),
        }, str(found)
    finally:
        client.drop_collection(name)
        plain.close()
    assert both_counts_gone(dsn, name) and client.tracker.state(key, name) is None  # dropped with the collection
    client.close()


def both_counts_gone(dsn: str, name: str) -> bool:
    async def gone() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT to_regclass($1)", f'"shadow_{name}"') is None
        finally:
            await conn.close()

    return anyio.run(gone)


def test_async_client_mirrors_concurrent_tasks(tmp_path: Path) -> None:
    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "dropin_async"

    async def scenario() -> None:
        client = AsyncShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
        assert isinstance(client, __import__("pymilvus").AsyncMilvusClient)
        if await client.has_collection(name):
            await client.drop_collection(name)
        await client.create_collection(name, schema=schema(), index_params=index())
        rng = np.random.default_rng(7)

        async def writer(i: int) -> None:
            base = (i + 1) * 10_000
            await client.insert(name, [row(rng, base + j) for j in range(200)])
            await client.upsert(name, [row(rng, base + j, name="up") for j in range(0, 200, 2)])
            await client.upsert(name, [row(rng, k, name=f"hot{i}") for k in HOT])
            await client.delete(name, ids=[base + j for j in range(0, 40)])
            await client.delete(name, filter=f"id >= {base + 150} and id < {base + 170}")
            with pytest.raises(MilvusException):
                await client.insert(name, [row(rng, base + 500, dim=DIM + 1)])

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(writer, i)
        assert client.tracker is not None
        assert client.tracker.state(10_000, name) == DELETED and client.tracker.state(10_100, name) == EXISTS
        assert client.tracker.state(10_500, name) is None  # refused: never recorded
        plain = MilvusClient(uri=uri)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            result = await validate(plain, pool, name, tracker=client.tracker)
            assert result.ok and result.milvus_count == 4 * 140 + len(HOT), str(result)
        finally:
            await pool.close()
            plain.close()
            await client.drop_collection(name)
            await client.close()

    anyio.run(scenario)


def test_partitions_repeated_create_and_shared_tracker(tmp_path: Path) -> None:
    """A delete scoped to a partition touches only that partition's rows on both sides; a second
    create_collection of an existing collection keeps its shadow; two clients share one tracker."""
    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "dropin_parts"
    client = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
    second = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")  # same LMDB directory
    rng = np.random.default_rng(3)
    try:
        if client.has_collection(name):
            client.drop_collection(name)
        client.create_collection(name, schema=schema(), index_params=index())
        client.create_partition(name, "p1")
        client.insert(name, [row(rng, k) for k in range(0, 20)])  # _default
        client.insert(name, [row(rng, k) for k in range(100, 120)], partition_name="p1")
        # matches rows only in _default: scoped to p1 it deletes nothing, on either side
        assert client.delete(name, filter="id < 10", partition_name="p1")["delete_count"] == 0
        assert client.delete(name, ids=[1, 2, 3], partition_name="p1")["delete_count"] == 0
        client.delete(name, filter="id >= 110", partition_name="p1")
        assert both_counts(client, name, dsn) == (30, 30)
        with pytest.raises(MilvusException, match="different parameters"):  # it has a partition now
            client.create_collection(name, schema=schema(), index_params=index())
        assert both_counts(client, name, dsn) == (30, 30)  # neither side dropped
        quick = f"{name}_quick"
        client.create_collection(quick, dimension=8)
        client.insert(quick, [{"id": 1, "vector": [0.5] * 8}])
        client.create_collection(quick, dimension=8)  # Milvus accepts the same create again
        assert both_counts(client, quick, dsn) == (1, 1)  # the shadow was kept, not emptied
        client.drop_collection(quick)
        second.insert(name, [row(rng, 500)])
        assert client.tracker is not None and client.tracker.state(500, name) == EXISTS
        assert client.tracker.state(115, name) == DELETED

        async def check() -> Any:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
            try:
                return await validate(client, pool, name, tracker=client.tracker)
            finally:
                await pool.close()

        result = anyio.run(check)
        assert result.ok and result.milvus_count == 31, str(result)
    finally:
        client.drop_collection(name)
        second.close()
        client.close()


def test_string_keys_with_quotes_and_backslashes_delete_on_both_sides(tmp_path: Path) -> None:
    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "dropin_strkeys"
    client = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
    try:
        if client.has_collection(name):
            client.drop_collection(name)
        client.create_collection(name, dimension=2, id_type="string", max_length=16)
        keys = ["e\\f", "c'd", "plain", "e\\g"]
        client.insert(name, [{"id": k, "vector": [0.5, 0.5]} for k in keys])
        client.delete(name, filter='id like "e%"')  # both backslash keys, found by Milvus itself
        client.delete(name, ids=["c'd"])
        assert both_counts(client, name, dsn) == (1, 1)
        left = client.query(name, filter="", output_fields=["id"], limit=10, consistency_level="Strong")
        assert [r["id"] for r in left] == ["plain"]
    finally:
        client.drop_collection(name)
        client.close()


def test_rename_waits_for_an_auto_id_write_in_flight(tmp_path: Path) -> None:
    """An AUTO_ID insert reaches Milvus first, then its COPY: a rename between the two took the rows to the
    new name in Milvus while the COPY (old table) and the undo (old collection) both failed. The insert
    here is held between its Milvus write and its COPY; the rename must wait for it."""
    from pymilvus import AsyncMilvusClient

    uri, dsn = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN")
    old, new = "dropin_rename_race", "dropin_rename_race_new"
    s = MilvusClient.create_schema(auto_id=True)
    s.add_field("id", DataType.INT64, is_primary=True, auto_id=True)
    s.add_field("n", DataType.INT64)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=2)
    data = [{"n": i, "vec": [0.1, float(i)]} for i in range(20)]

    async def race() -> tuple[bool, Any]:
        client = AsyncShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys")
        try:
            for n in (old, new):
                if await client.has_collection(n):
                    await client.drop_collection(n)
            await client.create_collection(old, schema=s, index_params=index())
            sh = await client._shadowed(old)
            in_milvus, go, renamed = anyio.Event(), anyio.Event(), anyio.Event()

            async def held_insert(rows: list[dict[str, Any]]) -> Any:  # the real insert, then a pause
                result = await AsyncMilvusClient.insert(client, old, rows)
                in_milvus.set()
                await go.wait()
                return result

            async def undo(ids: list[Any]) -> Any:
                return await AsyncMilvusClient.delete(client, old, ids=ids)

            async def rename() -> None:
                await client.rename_collection(old, new)
                renamed.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(client.shadow.write, sh, data, held_insert, "insert", undo)
                await in_milvus.wait()
                tg.start_soon(rename)
                with anyio.move_on_after(1.5):
                    await renamed.wait()
                waited = not renamed.is_set()
                go.set()
            plain = MilvusClient(uri=uri)  # the comparison helpers read through a sync client
            try:
                async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
                    return waited, await validate(plain, pool, new, tracker=client.tracker)
            finally:
                plain.close()
        finally:
            for n in (old, new):
                if await client.has_collection(n):
                    await client.drop_collection(n)
            await client.close()

    waited, result = anyio.run(race)
    assert waited, "the rename ran while an AUTO_ID insert was between its Milvus write and its COPY"
    assert result.ok and result.milvus_count == result.postgres_count == len(data), str(result)
