"""Reading both sides of a shadow in batches: Milvus through a sync MilvusClient, PostgreSQL through asyncpg.

Milvus calls run in a worker thread (``anyio.to_thread``), one batch per call, so the event loop stays
free and memory is one batch. PostgreSQL rows come from a server-side cursor inside a transaction.
``resolve`` checks both sides before anything is compared: the collection exists in Milvus, the table
exists in PostgreSQL with every column the schema needs, and raises an error naming what is missing.

Milvus 2.3 quirks shape this module: a filter the server cannot parse can crash it, so every user
filter goes through ``to_sql`` first (FilterConversionError, nothing sent); keys are walked and
fetched with expressions built by ``keyexpr`` (escaped string literals: pymilvus' ``ids=`` and its
query_iterator do not escape quotes); and a row keyed 2**63-1 is counted by Milvus but returned by
no query, so ``milvus_keys`` asks count(*) for it and ``milvus_rows`` names it ``unreadable``
instead of letting it read as missing. A Strong ``count(*)`` is the count reported; it is also the
walk's freshness fence (``keyexpr.Walk``), so every reader of Milvus rows here sees rows written just
before it started.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import asyncpg
import numpy as np

from task_components import keyexpr
from task_components.errors import CollectionNotFoundError, ShadowSchemaError, ShadowValidationError
from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema, FieldSchema, FieldType, SchemaError
from task_components.schema.postgres import columns, key_column, quote, table_name
from task_components.shadow.filters import to_sql

__all__ = [
    "MilvusRows",
    "Shadow",
    "describe",
    "milvus_batches",
    "milvus_keys",
    "milvus_rows",
    "pg_batches",
    "pg_count",
    "pg_keys",
    "pg_rows",
    "resolve",
    "vector_columns",
    "without_vectors",
]


_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Shadow:
    """A collection and its shadow table, both checked to exist."""

    collection: str
    schema: CollectionSchema
    table: str
    vectors: bool = True  # False: the table was created without vector columns (``ignore_vector``)

    @property
    def stored(self) -> CollectionSchema:
        """The schema of what the table holds: without vector fields when it has no vector columns."""
        return self.schema if self.vectors else without_vectors(self.schema)

    def skipped_vectors(self) -> str:
        """A note for comparisons: which vector fields the table does not hold ("" when it holds them all)."""
        names = [f.name for f in self.schema.data_fields() if f.type.is_vector]
        if self.vectors or not names:
            return ""
        return (
            f"shadow table {self.table!r} has no vector columns (created with ignore_vector): "
            f"vector field(s) {', '.join(names)} not compared"
        )

    @property
    def pk(self) -> str:
        return self.schema.primary.name

    @property
    def key(self) -> str:
        """The table's key column: ``_row`` (holding Milvus' id) for AUTO_ID collections."""
        return key_column(self.schema)

    @property
    def int_keys(self) -> bool:
        return self.schema.primary.type is FieldType.INT64

    def where(self, filter: str) -> str:
        """The filter as SQL; raising here also keeps an unsupported expression away from Milvus."""
        return to_sql(filter or "", self.schema)

    def fields(self, output_fields: list[str] | None = None, ignore_vectors: bool = False) -> list[FieldSchema]:
        """The fields to compare (never the key itself)."""
        data = [f for f in self.schema.data_fields() if not f.is_primary]
        if output_fields is not None:
            known = {f.name for f in self.schema.fields} | {META_COLUMN}
            unknown = [n for n in output_fields if n not in known]
            if unknown:
                raise ShadowValidationError(
                    f"collection {self.collection!r} has no field {', '.join(map(repr, unknown))} (fields: {', '.join(sorted(known))})"
                )
            data = [f for f in data if f.name in output_fields]
        skip = ignore_vectors or not self.vectors
        return [f for f in data if not (skip and f.type.is_vector)]

    def dynamic(self, output_fields: list[str] | None = None) -> bool:
        return self.schema.enable_dynamic_field and (output_fields is None or META_COLUMN in output_fields)

    def coerce(self, keys: list[Any]) -> list[Any]:
        """Keys as the primary key's type (the CLI passes text)."""
        if not self.int_keys:
            return [str(k) for k in keys]
        try:
            return [int(k) for k in keys]
        except (TypeError, ValueError):
            raise ShadowValidationError(f"collection {self.collection!r} has Int64 keys, got {keys!r}") from None

    def pk_in(self, keys: list[Any]) -> str:
        """``pk in [...]`` with every literal escaped (json quoting is a valid Milvus string literal)."""
        return keyexpr.pk_in(self.pk, keys, self.int_keys)


async def describe(milvus: Any, collection: str) -> CollectionSchema:
    from task_components.schema.milvus import from_milvus

    if not await anyio.to_thread.run_sync(milvus.has_collection, collection):
        raise CollectionNotFoundError(f"collection {collection!r} does not exist in Milvus")
    description = await anyio.to_thread.run_sync(milvus.describe_collection, collection)
    try:
        return from_milvus(description)
    except (SchemaError, ValueError) as exc:
        raise ShadowSchemaError(f"collection {collection!r}: cannot be shadowed: {exc}") from exc


def without_vectors(schema: CollectionSchema) -> CollectionSchema:
    """The schema minus its vector fields: what an ``ignore_vector`` shadow table holds.

    Functions go too (their outputs are vectors, computed by Milvus, never stored in the shadow).
    """
    if not any(f.type.is_vector for f in schema.fields):
        return schema
    kept = [f for f in schema.fields if not f.type.is_vector]
    return schema.model_copy(update={"fields": kept, "functions": []})


def vector_columns(schema: CollectionSchema) -> list[str]:
    return [f.name for f in schema.data_fields() if f.type.is_vector]


async def check_table(pool: asyncpg.Pool, schema: CollectionSchema, table: str) -> bool:
    """The table exists with every scalar column of the schema; True if it holds the vector columns too,
    False if it holds none of them (an ``ignore_vector`` table). Some but not all: ShadowSchemaError."""
    async with pool.acquire() as conn:
        if await conn.fetchval("SELECT to_regclass($1)", quote(table)) is None:
            raise CollectionNotFoundError(f"shadow table {table!r} of collection {schema.collection_name!r} does not exist in PostgreSQL")
        have = {
            r["attname"]
            for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped", quote(table)
            )
        }
    vectors = vector_columns(schema)
    absent = [c for c in vectors if c not in have]
    holds_vectors = not vectors or len(absent) < len(vectors)
    missing = [c for c in columns(schema) if c not in have and (holds_vectors or c not in vectors)]
    if missing:
        raise ShadowSchemaError(f"shadow table {table!r} lacks column(s) {', '.join(missing)} of collection {schema.collection_name!r}")
    return holds_vectors


async def resolve(milvus: Any, pool: asyncpg.Pool, collection: str, table: str | None = None) -> Shadow:
    """Both sides checked: the collection in Milvus (loaded if it was released) and its table."""
    from task_components.connect import ensure_loaded

    schema = await describe(milvus, collection)
    name = table or table_name(collection)  # the collection's name, as shadow.sync and the drop-in client use
    vectors = await check_table(pool, schema, name)
    await anyio.to_thread.run_sync(ensure_loaded, milvus, collection)
    return Shadow(collection, schema, name, vectors)


class _Keys:
    """Keys gathered a batch at a time: Int64 keys as int64 arrays (8 bytes a key, not a Python int)."""

    def __init__(self, ints: bool) -> None:
        self.ints = ints
        self.parts: list[np.ndarray] = []
        self.text: list[Any] = []

    def extend(self, keys: list[Any]) -> None:
        if self.ints:
            self.parts.append(np.asarray(keys, dtype=np.int64))
        else:
            self.text.extend(keys)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts) if self.ints else len(self.text)

    def result(self) -> np.ndarray | list[Any]:
        if not self.ints:
            return self.text
        return np.concatenate(self.parts) if self.parts else np.empty(0, np.int64)


async def _pages(walk: keyexpr.Walk) -> AsyncGenerator[list[dict[str, Any]], None]:
    pages = iter(walk)
    while batch := await anyio.to_thread.run_sync(next, pages, None):
        yield batch


def _walk(milvus: Any, shadow: Shadow, filter: str, output_fields: list[str], batch_size: int) -> keyexpr.Walk:
    shadow.where(filter)
    return keyexpr.walk(milvus, shadow.collection, shadow.pk, shadow.int_keys, filter, output_fields, batch_size)


async def milvus_batches(
    milvus: Any, shadow: Shadow, filter: str, output_fields: list[str], batch_size: int = 1000
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """Rows matching ``filter`` (already checked by ``Shadow.where``), a batch at a time, in key order,
    fenced by a Strong count(*) (``keyexpr.Walk``): rows written before the call are among them.

    A row keyed 2**63-1 is never among them (Milvus 2.3 returns it from no query; see ``keyexpr``).
    """
    async with contextlib.aclosing(_pages(_walk(milvus, shadow, filter, output_fields, batch_size))) as pages:
        async for batch in pages:
            yield batch


async def milvus_keys(milvus: Any, shadow: Shadow, filter: str = "", batch_size: int = 5000) -> tuple[Any, int]:
    """Every key matching ``filter`` (int64 array or list) and Milvus' own Strong count(*) of them."""
    count = 0
    for attempt in range(2):  # a second pass only when the walk saw fewer keys than count(*)
        walk = _walk(milvus, shadow, filter, [shadow.pk], batch_size)
        keys = _Keys(shadow.int_keys)
        async with contextlib.aclosing(_pages(walk)) as batches:
            async for batch in batches:
                keys.extend([r[shadow.pk] for r in batch])
        count = walk.count or 0
        if len(keys) < count and shadow.int_keys:  # rows keyed 2**63-1: counted, never returned
            hidden = await anyio.to_thread.run_sync(keyexpr.max_key_present, milvus, shadow.collection, shadow.pk, filter)
            keys.extend([keyexpr.INT64_MAX] * hidden)
        if len(keys) >= count:
            break
        _log.warning(
            "collection %r: the key walk returned %d keys, count(*) %d%s",
            shadow.collection,
            len(keys),
            count,
            "; reading again" if not attempt else "",
        )
    return keys.result(), count


class MilvusRows(dict[Any, dict[str, Any]]):
    """Rows by key; ``unreadable``: keys Milvus holds but no query returns (2**63-1 on Milvus 2.3)."""

    unreadable: set[Any]


async def milvus_rows(milvus: Any, shadow: Shadow, keys: list[Any], output_fields: list[str]) -> MilvusRows:
    """Rows of these keys (a duplicated key keeps its last copy; ``milvus_keys`` reports duplicates)."""
    found = MilvusRows()
    found.unreadable = set()
    if not keys:
        return found
    expr = shadow.pk_in(keys)
    rows = await anyio.to_thread.run_sync(
        lambda: milvus.query(shadow.collection, filter=expr, output_fields=output_fields, consistency_level="Strong")
    )
    found.update((r[shadow.pk], r) for r in rows)
    hidden = shadow.int_keys and keyexpr.INT64_MAX in keys and keyexpr.INT64_MAX not in found
    present = partial(keyexpr.max_key_present, milvus, shadow.collection, shadow.pk)
    if hidden and await anyio.to_thread.run_sync(present) > 0:
        found.unreadable.add(keyexpr.INT64_MAX)
    return found


def milvus_output(shadow: Shadow, fields: list[FieldSchema], dynamic: bool) -> list[str]:
    return [shadow.pk, *(f.name for f in fields), *([META_COLUMN] if dynamic else [])]


def pg_columns(shadow: Shadow, fields: list[FieldSchema], dynamic: bool) -> list[str]:
    return [shadow.key, *(f.name for f in fields), *([META_COLUMN] if dynamic else [])]


async def pg_batches(
    pool: asyncpg.Pool, shadow: Shadow, cols: list[str], where: str = "TRUE", batch_size: int = 1000
) -> AsyncGenerator[list[asyncpg.Record], None]:
    """Rows of the shadow table through a server-side cursor, in key order, a batch at a time."""
    sql = f"SELECT {', '.join(quote(c) for c in cols)} FROM {quote(shadow.table)} WHERE {where} ORDER BY {quote(shadow.key)}"
    async with pool.acquire() as conn, conn.transaction():
        cursor = await conn.cursor(sql)
        while batch := await cursor.fetch(batch_size):
            yield batch


async def pg_keys(pool: asyncpg.Pool, shadow: Shadow, where: str = "TRUE", batch_size: int = 10000) -> Any:
    keys = _Keys(shadow.int_keys)
    async with contextlib.aclosing(pg_batches(pool, shadow, [shadow.key], where, batch_size)) as batches:
        async for batch in batches:
            keys.extend([r[0] for r in batch])
    return keys.result()


async def pg_count(pool: asyncpg.Pool, shadow: Shadow, where: str = "TRUE") -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {quote(shadow.table)} WHERE {where}"))


async def sample_keys(pool: asyncpg.Pool, shadow: Shadow, n: int, rng: random.Random | None = None) -> list[Any]:
    """About ``n`` random keys of the shadow (Milvus' keys: ``_row`` for AUTO_ID). Int64 keys are read in
    runs of up to 100 from random starting points (index range scans; ``ORDER BY random()`` sorts the
    whole table, minutes at tens of millions of rows); VarChar keys have no range to draw from, so they
    are drawn by ``ORDER BY random()``."""
    if n <= 0:
        return []
    key, table = quote(shadow.key), quote(shadow.table)
    async with pool.acquire() as conn:
        if not shadow.int_keys:
            return [r[0] for r in await conn.fetch(f"SELECT {key} FROM {table} ORDER BY random() LIMIT $1", n)]
        low, high = await conn.fetchrow(f"SELECT min({key}), max({key}) FROM {table}")
        if low is None:
            return []
        rng = rng or random.Random()
        keys: set[Any] = set()
        for _ in range(max(1, n // 100) * 3):  # gaps (deleted keys) can make a run short: a few more tries
            if len(keys) >= n:
                break
            found = await conn.fetch(f"SELECT {key} FROM {table} WHERE {key} >= $1 ORDER BY 1 LIMIT 100", rng.randint(int(low), int(high)))
            keys.update(r[0] for r in found)
    return sorted(keys)[:n]


async def pg_rows(pool: asyncpg.Pool, shadow: Shadow, keys: list[Any], cols: list[str]) -> dict[Any, dict]:
    if not keys:
        return {}
    sql = f"SELECT {', '.join(quote(c) for c in cols)} FROM {quote(shadow.table)} WHERE {quote(shadow.key)} = ANY($1)"
    async with pool.acquire() as conn:
        return {r[shadow.key]: dict(r) for r in await conn.fetch(sql, keys)}
