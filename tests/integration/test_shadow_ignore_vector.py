"""``ignore_vector=True`` on the drop-in clients, on the real Milvus server and PostgreSQL.

Why: a long-running correctness check of Milvus spends most of its shadow cost on vectors; with
``ignore_vector`` the shadow table is created without vector columns and writes carry no vector data,
while every scalar is still shadowed and compared. A table that does not match the flag must be a
clear error, and comparisons against a vector-less table skip vectors and say so (not as differences).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from task_components.errors import ShadowSchemaError, ShadowValidationError
from task_components.shadow.compare import compare_entities, compare_query, compare_search, validate
from task_components.shadow.dropin import AsyncShadowMilvusClient, ShadowMilvusClient
from tests.integration.conftest import service_uri
from tests.integration.helpers import cli

pytestmark = pytest.mark.integration

DIM = 8


def schema() -> Any:
    s = MilvusClient.create_schema(enable_dynamic_field=True)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("name", DataType.VARCHAR, max_length=24)
    s.add_field("score", DataType.DOUBLE)
    s.add_field("meta", DataType.JSON)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    return s


def index() -> Any:
    params = MilvusClient.prepare_index_params()
    params.add_index("vec", index_type="FLAT", metric_type="L2")
    return params


def rows(keys: range, rng: np.random.Generator, prefix: str = "n") -> list[dict[str, Any]]:
    out = []
    for k in keys:
        r: dict[str, Any] = {
            "id": k,
            "name": f"{prefix}{k}",
            "score": k / 7,
            "meta": {"k": k % 5},
            "vec": rng.random(DIM, dtype=np.float32).tolist(),
        }
        if k % 3 == 0:
            r["extra"] = k  # a dynamic field: must land in $meta, not be confused with the left-out vector
        out.append(r)
    return out


async def table_columns(dsn: str, table: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            f'"{table}"',
        )
        return [r["attname"] for r in rows]
    finally:
        await conn.close()


async def fetch_all(dsn: str, sql: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def test_ignore_vector_shadows_every_scalar_and_no_vector(tmp_path: Path) -> None:
    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "ignvec_sync"
    client = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "keys", ignore_vector=True)
    assert client.ignore_vector is True
    rng = np.random.default_rng(3)
    try:
        if client.has_collection(name):
            client.drop_collection(name)
        client.create_collection(name, schema=schema(), index_params=index())
        assert anyio.run(table_columns, dsn, f"shadow_{name}") == ["id", "name", "score", "meta", "$meta"]
        client.insert(name, rows(range(0, 40), rng))
        client.upsert(name, rows(range(30, 50), rng, prefix="up"))
        client.delete(name, ids=[1, 2])
        client.delete(name, filter="id >= 45")
        stored = anyio.run(fetch_all, dsn, f'SELECT * FROM "shadow_{name}" ORDER BY id')
        expected = {r["id"]: r for r in [*rows(range(0, 30), rng), *rows(range(30, 45), rng, prefix="up")]}
        for k in (1, 2):
            expected.pop(k)
        assert [r["id"] for r in stored] == sorted(expected)
        for r in stored:  # every scalar and dynamic field is there
            want = expected[r["id"]]
            assert (r["name"], r["score"]) == (want["name"], want["score"])
            assert '"k"' in r["meta"] and ("extra" in (r["$meta"] or "")) == ("extra" in want)

        async def compare() -> list[Any]:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
            try:
                return [
                    await validate(client, pool, name, tracker=client.tracker),
                    await compare_entities(client, pool, name, [0, 3, 44]),
                    await compare_query(client, pool, name, "score > 2", output_fields=["name", "vec"]),
                ]
            finally:
                await pool.close()

        for result in anyio.run(compare):
            assert result.ok, str(result)
            assert any("no vector columns" in n and "vec" in n for n in result.notes), result.notes
        conn = ["--uri", uri, "--pg-dsn", dsn]
        ok = subprocess.run(cli("shadow", "validate", name, *conn), capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0 and "no differences" in ok.stdout and "no vector columns" in ok.stdout, ok.stdout + ok.stderr
        out = str(tmp_path / "x.parquet")
        refused = subprocess.run(cli("shadow", "export", name, "--out", out, *conn), capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "no vector columns" in refused.stderr, refused.stdout + refused.stderr

        async def diverge_and_validate() -> Any:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f"UPDATE \"shadow_{name}\" SET name = 'wrong' WHERE id = 7")
            finally:
                await conn.close()
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
            try:
                found = await validate(client, pool, name)
                with pytest.raises(ShadowValidationError, match="no vector columns"):
                    await compare_search(client, pool, name, [[0.0] * DIM])
                return found
            finally:
                await pool.close()

        found = anyio.run(diverge_and_validate)
        assert [(d.key, d.field, d.kind, d.side) for d in found.differences] == [(7, "name", "changed", "postgres")]
    finally:
        client.drop_collection(name)
        client.close()


def test_a_table_not_matching_the_flag_is_a_clear_error(tmp_path: Path) -> None:
    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "ignvec_mismatch"
    full = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path="")
    scalars = ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path="", ignore_vector=True)
    rng = np.random.default_rng(4)
    try:
        if full.has_collection(name):
            full.drop_collection(name)
        full.create_collection(name, schema=schema(), index_params=index())
        with pytest.raises(ShadowSchemaError, match=rf"shadow_{name}.*has vector columns.*ignore_vector=False"):
            scalars.insert(name, rows(range(0, 3), rng))
        with pytest.raises(ShadowSchemaError, match=rf"shadow_{name}.*has vector columns"):
            scalars.create_collection(name, schema=schema(), index_params=index())  # existed: kept, checked
        assert full.query(name, filter="id >= 0", output_fields=["id"], consistency_level="Strong") == []
        scalars.drop_collection(name)
        scalars.create_collection(name, schema=schema(), index_params=index())
        with pytest.raises(ShadowSchemaError, match="dropped and re-created by another client"):
            full.insert(name, rows(range(0, 3), rng))  # ``full`` still held the old collection's schema
        with pytest.raises(ShadowSchemaError, match=rf"shadow_{name}.*has no vector columns.*ignore_vector=True"):
            full.insert(name, rows(range(0, 3), rng))
        with pytest.raises(TypeError, match="ignore_vector"):
            ShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path="", ignore_vector="false")  # type: ignore[arg-type]
    finally:
        full.drop_collection(name)
        full.close()
        scalars.close()


def test_async_client_ignore_vector(tmp_path: Path) -> None:
    uri, dsn, name = service_uri("TEST_MILVUS_URI"), service_uri("TEST_POSTGRES_DSN"), "ignvec_async"

    async def run() -> tuple[list[str], list[dict[str, Any]]]:
        client = AsyncShadowMilvusClient(uri=uri, pg_dsn=dsn, tracker_path=tmp_path / "k", ignore_vector=True)
        try:
            await client.drop_collection(name)
            await client.create_collection(name, schema=schema(), index_params=index())
            await client.insert(name, rows(range(0, 5), np.random.default_rng(5)))
            return await table_columns(dsn, f"shadow_{name}"), await fetch_all(dsn, f'SELECT id, name FROM "shadow_{name}" ORDER BY id')
        finally:
            await client.drop_collection(name)
            await client.close()

    cols, stored = anyio.run(run)
    assert "vec" not in cols and "name" in cols
    assert stored == [{"id": k, "name": f"n{k}"} for k in range(5)]
