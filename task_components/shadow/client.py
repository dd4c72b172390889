"""A MilvusClient look-alike whose writes are mirrored into the PostgreSQL shadow.

insert/upsert/delete take the same arguments as pymilvus' MilvusClient. Each call is one PostgreSQL
transaction: the shadow is written first, then Milvus; if the Milvus write raises, the transaction
rolls back, so PostgreSQL never holds a row Milvus refused. After both succeed, the LMDB tracker
records the keys' new state. Reads (query, search, get) pass straight through to Milvus.
"""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg

from task_components.errors import CollectionNotFoundError, TransactionError
from task_components.schema.models import CollectionSchema
from task_components.schema.postgres import columns, create_table_sql, quote, row_record, table_name
from task_components.shadow.filters import to_sql
from task_components.shadow.tracker import KeyStateTracker


class ShadowedMilvusClient:
    def __init__(self, milvus: Any, pool: asyncpg.Pool, schema: CollectionSchema, tracker: KeyStateTracker) -> None:
        if schema.primary.auto_id:
            raise ValueError("the mirrored client needs caller-chosen primary keys (auto_id is off)")
        self.milvus, self.pool, self.schema, self.tracker = milvus, pool, schema, tracker
        self.table = table_name(schema)
        self.pk = schema.primary.name

    async def create_shadow(self, drop: bool = False) -> None:
        async with self.pool.acquire() as conn:
            if drop:
                await conn.execute(f"DROP TABLE IF EXISTS {quote(self.table)}")
            await conn.execute(create_table_sql(self.schema).replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))

    async def _mirrored(self, sql: str, args: list[Any], milvus_call: Any, keys: list[Any], op: str) -> Any:
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    if op == "delete":
                        await conn.execute(sql, *args)
                    else:
                        await conn.executemany(sql, args)
                    result = await anyio.to_thread.run_sync(milvus_call)  # raises -> PostgreSQL rolls back
            except asyncpg.UndefinedTableError as exc:
                raise CollectionNotFoundError(f"shadow table {self.table!r} does not exist: {exc}") from exc
            except Exception as exc:
                raise TransactionError(f"{op} rolled back in PostgreSQL: {type(exc).__name__}: {exc}") from exc
        await anyio.to_thread.run_sync(self.tracker.record, keys, op)
        return result

    def _write_sql(self, upsert: bool) -> str:
        cols = columns(self.schema)
        names = ", ".join(quote(c) for c in cols)
        params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        sql = f"INSERT INTO {quote(self.table)} ({names}) VALUES ({params})"
        if upsert:
            updates = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in cols if c != self.pk)
            sql += f" ON CONFLICT ({quote(self.pk)}) DO UPDATE SET {updates}"
        return sql

    async def insert(self, collection_name: str, data: list[dict[str, Any]], **kwargs: Any) -> Any:
        records = [row_record(r, self.schema) for r in data]
        keys = [r[self.pk] for r in data]
        call = lambda: self.milvus.insert(collection_name, data, **kwargs)  # noqa: E731
        return await self._mirrored(self._write_sql(False), records, call, keys, "insert")

    async def upsert(self, collection_name: str, data: list[dict[str, Any]], **kwargs: Any) -> Any:
        records = [row_record(r, self.schema) for r in data]
        keys = [r[self.pk] for r in data]
        call = lambda: self.milvus.upsert(collection_name, data, **kwargs)  # noqa: E731
        return await self._mirrored(self._write_sql(True), records, call, keys, "upsert")

    async def delete(self, collection_name: str, ids: list[Any] | None = None, filter: str = "", **kwargs: Any) -> Any:
        if ids is None:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    f"SELECT {quote(self.pk)} FROM {quote(self.table)} WHERE {to_sql(filter, self.schema)}"
                )
            ids = [r[self.pk] for r in rows]
        keys = list(ids)
        sql = f"DELETE FROM {quote(self.table)} WHERE {quote(self.pk)} = ANY($1)"
        call = lambda: self.milvus.delete(collection_name, ids=keys, **kwargs)  # noqa: E731
        return await self._mirrored(sql, [keys], call, keys, "delete")

    def __getattr__(self, name: str) -> Any:
        """query, search, get, count... go to Milvus unchanged."""
        return getattr(self.milvus, name)


__all__ = ["ShadowedMilvusClient", "row_record"]
