"""ShadowedMilvusClient on the real Milvus server and PostgreSQL: mirrored writes, rollback, tiebreaks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import asyncpg
import numpy as np
import pytest
from pymilvus import MilvusClient

from task_components.errors import TransactionError
from task_components.milvus.schema_map import index_params, to_milvus_schema
from task_components.schema import parse_schema
from task_components.schema.postgres import quote, table_name
from task_components.shadow.client import ShadowedMilvusClient
from task_components.shadow.tracker import DELETED, EXISTS, KeyStateTracker, judge
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration

SCHEMA = parse_schema({
    "collection_name": "it_mirror", "enable_dynamic_field": True,
    "fields": [{"name": "id", "type": "Int64", "is_primary": True},
               {"name": "name", "type": "VarChar", "max_length": 32},
               {"name": "meta", "type": "JSON"},
               {"name": "embedding", "type": "FloatVector", "dim": 8}],
})  # fmt: skip


def rows(ids: range, dim: int = 8, name: str = "n") -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [{"id": i, "name": f"{name}{i}", "meta": {"k": i}, "embedding": rng.random(dim).tolist(), "extra": i % 3}
            for i in ids]  # fmt: skip


def test_mirrored_writes_rollback_and_tiebreak(tmp_path: Path) -> None:
    milvus = MilvusClient(uri=service_uri("TEST_MILVUS_URI"))
    if milvus.has_collection("it_mirror"):
        milvus.drop_collection("it_mirror")
    milvus.create_collection("it_mirror", schema=to_milvus_schema(SCHEMA))
    milvus.create_index("it_mirror", index_params(SCHEMA, False, {"embedding": {"index_type": "FLAT"}})[0])
    milvus.load_collection("it_mirror")
    tracker = KeyStateTracker(tmp_path / "keys.lmdb")

    def milvus_count() -> int:
        return milvus.query("it_mirror", filter="", output_fields=["count(*)"], consistency_level="Strong")[0][
            "count(*)"
        ]

    async def scenario() -> None:
        pool = await asyncpg.create_pool(service_uri("TEST_POSTGRES_DSN"), min_size=2, max_size=4)
        client = ShadowedMilvusClient(milvus, pool, SCHEMA, tracker)
        await client.create_shadow(drop=True)
        table = quote(table_name(SCHEMA))

        async def pg(sql: str) -> Any:
            async with pool.acquire() as conn:
                return await conn.fetchval(sql)

        await client.insert("it_mirror", rows(range(100)))
        await client.upsert("it_mirror", rows(range(5, 6), name="renamed"))
        await client.delete("it_mirror", ids=[1, 2])
        await client.delete("it_mirror", filter="id in [7, 8]")
        assert await pg(f"SELECT count(*) FROM {table}") == 96 and milvus_count() == 96
        assert await pg(f"SELECT name FROM {table} WHERE id = 5") == "renamed5"
        assert milvus.get("it_mirror", ids=[5], output_fields=["name"])[0]["name"] == "renamed5"
        assert await pg(f"SELECT \"$meta\" ->> 'extra' FROM {table} WHERE id = 10") == "1"
        assert tracker.state(1) == DELETED and tracker.state(7) == DELETED and tracker.state(5) == EXISTS

        with pytest.raises(TransactionError, match="insert rolled back in PostgreSQL"):
            await client.insert("it_mirror", rows(range(200, 210), dim=7))  # Milvus refuses a 7-d vector
        assert await pg(f"SELECT count(*) FROM {table} WHERE id >= 200") == 0
        assert await pg(f"SELECT count(*) FROM {table}") == 96 and tracker.state(200) is None

        milvus.delete("it_mirror", ids=[3])  # behind the wrapper's back: Milvus only
        async with pool.acquire() as conn:
            await conn.execute(f"DELETE FROM {table} WHERE id = 4")  # PostgreSQL only
        assert judge(3, in_milvus=False, in_postgres=True, tracker=tracker) == "milvus"
        assert judge(4, in_milvus=True, in_postgres=False, tracker=tracker) == "postgres"
        assert judge(9, in_milvus=True, in_postgres=True, tracker=tracker) is None
        await pool.close()

    try:
        anyio.run(scenario)
    finally:
        tracker.close()
        milvus.drop_collection("it_mirror")
        milvus.close()
