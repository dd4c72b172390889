"""One shadowed-write workload, run in its own process by bench/dropin.py (see there).

Stand-alone on purpose: pymilvus-pg lives in a virtualenv of its own (its pymilvus and psycopg pins
differ from ours), so this file needs only pymilvus and numpy, and imports our client only when asked
to time it. Prints one JSON line: seconds per phase and the rows written.

    python bench/dropin_workload.py --client bare|ours|ours-novec|pymilvus-pg|pymilvus-pg-novec \
        --uri URI --dsn DSN [--inserts 50000 --upserts 10000 --deletes 10000 --dim 128 --batch 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient


def client_for(kind: str, uri: str, dsn: str, tracker: str) -> Any:
    if kind == "bare":
        return MilvusClient(uri=uri)
    if kind.startswith("ours"):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from task_components.shadow.dropin import ShadowMilvusClient

        return ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tracker, ignore_vector=kind.endswith("novec"))
    from pymilvus_pg import MilvusPGClient  # type: ignore[import-not-found]  # only in pymilvus-pg's venv

    return MilvusPGClient(uri=uri, pg_conn_str=dsn, ignore_vector=kind.endswith("novec"), lmdb_path=tracker)


def rows(ids: np.ndarray, dim: int, rng: np.random.Generator, tag: str) -> list[dict[str, Any]]:
    vectors = rng.random((len(ids), dim), dtype=np.float32)
    scores = rng.random(len(ids))
    return [
        {"id": int(k), "name": f"{tag}_{k}", "score": float(s), "vec": v.tolist()}
        for k, s, v in zip(ids.tolist(), scores.tolist(), vectors, strict=True)
    ]


def pg_load(dsn: str, a: argparse.Namespace, vectors: bool) -> None:
    """The floor's other half: PostgreSQL ingesting the same rows by raw COPY, in its own process, while a
    bare MilvusClient writes: what a shadowed write costs this machine's two cores at least."""
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        table = f"bench_floor_{uuid.uuid4().hex[:8]}"
        vec = ", vec real[]" if vectors else ""
        await conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, score float8{vec})")
        rng = np.random.default_rng(7)
        try:
            for start in range(0, a.inserts + a.upserts, a.batch):
                ids = np.arange(start, min(start + a.batch, a.inserts + a.upserts))
                got = rows(ids, a.dim, rng, "f")
                cols = ["id", "name", "score", "vec"] if vectors else ["id", "name", "score"]
                records = [tuple(r[c] for c in cols) for r in got]
                async with conn.transaction():
                    await conn.copy_records_to_table(table, records=records, columns=cols)
        finally:
            await conn.execute(f"DROP TABLE {table}")
            await conn.close()

    asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True)
    ap.add_argument("--uri", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--tracker", required=True)
    ap.add_argument("--inserts", type=int, default=110_000)
    ap.add_argument("--upserts", type=int, default=10_000)
    ap.add_argument("--deletes", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--validate", action="store_true", help="time a full comparison afterwards (shadowing clients)")
    a = ap.parse_args()
    if a.client.startswith("pg-load"):
        pg_load(a.dsn, a, vectors=not a.client.endswith("novec"))
        print(json.dumps({"client": a.client}))
        return
    client = client_for(a.client, a.uri, a.dsn, a.tracker)
    name = f"bench_dropin_{uuid.uuid4().hex[:8]}"
    schema = MilvusClient.create_schema(enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("name", DataType.VARCHAR, max_length=64)
    schema.add_field("score", DataType.DOUBLE)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=a.dim)
    index = client.prepare_index_params()
    index.add_index(field_name="vec", index_type="FLAT", metric_type="L2")
    client.create_collection(name, schema=schema, index_params=index)
    rng = np.random.default_rng(7)
    seconds: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        for start in range(0, a.inserts, a.batch):
            client.insert(name, rows(np.arange(start, min(start + a.batch, a.inserts)), a.dim, rng, "i"))
        seconds["insert"] = time.perf_counter() - t0
        keys = rng.permutation(a.inserts)
        t0 = time.perf_counter()
        for start in range(0, a.upserts, a.batch):
            client.upsert(name, rows(np.sort(keys[start : min(start + a.batch, a.upserts)]), a.dim, rng, "u"))
        seconds["upsert"] = time.perf_counter() - t0
        gone = keys[a.upserts : a.upserts + a.deletes]
        t0 = time.perf_counter()
        for start in range(0, len(gone), a.batch):
            client.delete(name, ids=[int(k) for k in gone[start : start + a.batch]])
        seconds["delete"] = time.perf_counter() - t0
        if a.validate and a.client != "bare":
            t0 = time.perf_counter()
            same = _validate(client, a.client, name)
            seconds["validate"] = time.perf_counter() - t0
            if not same:
                raise SystemExit(f"{a.client}: the comparison found differences on an untouched collection")
    finally:
        client.drop_collection(name)
        client.close()
    print(json.dumps({"client": a.client, "seconds": seconds, "rows": a.inserts + a.upserts + a.deletes}))


def _validate(client: Any, kind: str, name: str) -> bool:
    if kind.startswith("pymilvus-pg"):
        return bool(client.entity_compare(name, full_scan=True))
    return _ours_validate(client, name)


def _ours_validate(client: Any, name: str) -> bool:
    import anyio

    from task_components.clients import pg_pool
    from task_components.shadow.compare import validate

    async def run() -> bool:
        pool = await pg_pool(client.shadow.dsn, min_size=1, max_size=2)
        try:
            result = await validate(client, pool, name, tracker=client.tracker, batch_size=10_000)
        finally:
            await pool.close()
        return result.ok

    return anyio.run(run)


if __name__ == "__main__":
    main()
