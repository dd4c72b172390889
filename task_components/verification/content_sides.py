"""The three sides of a content comparison, streamed in batches of canonical row hashes.

Source files (Parquet batches), Milvus (pages of ``pk > last`` with a limit, the keyset walk pymilvus'
query_iterator does, as Strong queries) and the PostgreSQL shadow (a cursor), each optionally limited to
one share (``shares``: a group of files, a primary-key range, a ``_row`` range). ``content`` compares
what they yield.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import numpy as np
import pyarrow as pa

from task_components.clients import MilvusTarget, milvus_client, pg_connect
from task_components.connect import count_rows
from task_components.contracts import ImportResult, ShadowResult
from task_components.datafiles import iter_batches
from task_components.schema.models import FieldSchema
from task_components.schema.postgres import quote
from task_components.verification.canonical import canonical_column, row_hashes

__all__ = ["LOWEST_KEY", "Batch", "MilvusWalkError", "each_batch", "milvus_batches", "shadow_batches", "source_batches"]


class MilvusWalkError(RuntimeError):
    """Reading every Milvus row by primary-key pages did not read every row."""


@dataclass(slots=True)
class Batch:
    """A batch of one side: each field's canonical bytes, the row hashes, and where row i lives."""

    columns: list[list[bytes]]
    hashes: np.ndarray
    locate: Callable[[int], Any]  # source "file:row", Milvus id, shadow _row


def _batch(fields: list[FieldSchema], values: Callable[[FieldSchema], Any], n: int, json_text: bool, locate: Callable[[int], Any]) -> Batch:
    columns = [canonical_column(f, values(f), json_text=json_text) for f in fields]
    return Batch(columns, row_hashes(columns, n), locate)


def _column(batch: pa.RecordBatch, f: FieldSchema) -> Any:
    return batch.column(f.name)


def _values(rows: list[Any], f: FieldSchema) -> list[Any]:
    """A field's values from Milvus' row dicts or asyncpg records (both answer ``get``)."""
    return [r.get(f.name) for r in rows]


def _place(path: str, offset: int, i: int) -> str:
    return f"{path}:{offset + i}"


def source_batches(imported: ImportResult, fields: list[FieldSchema], batch_rows: int) -> Iterator[Batch]:
    manifest = imported.manifest
    for entry in manifest.files:
        offset = 0
        for b in iter_batches(manifest, entry, batch_rows, columns=[f.name for f in fields]):
            yield _batch(fields, partial(_column, b), b.num_rows, True, partial(_place, entry.path, offset))
            offset += b.num_rows


LOWEST_KEY = -(2**63) + 1  # the lowest the expression parser takes; AUTO_ID keys are positive


def milvus_batches(
    imported: ImportResult, fields: list[FieldSchema], batch_rows: int, target: MilvusTarget, keys: tuple[int, int] | None = None
) -> Iterator[Batch]:
    """Pages of ``pk > last``; a walk that reads other than count(*) rows is refused, not misreported.

    If the server ever returned a limited query's rows in another order, or the collection changed
    under the walk, rows would be skipped and blamed on Milvus as missing: the count says so instead.
    ``keys`` (lo, hi): only ``lo < pk <= hi``, one worker's share; whoever adds the shares' rows checks
    them against count(*).
    """
    pk = imported.info.collection_schema.primary.name
    client = milvus_client(target)
    try:
        expected = count_rows(client, imported.collection) if keys is None else None
        last, seen = LOWEST_KEY if keys is None else keys[0], 0
        upper = "" if keys is None else f" and {pk} <= {keys[1]}"
        names = [pk, *(f.name for f in fields)]
        while rows := client.query(
            imported.collection, filter=f"{pk} > {last}{upper}", limit=batch_rows, output_fields=names, consistency_level="Strong"
        ):
            found = [r[pk] for r in rows]
            yield _batch(fields, partial(_values, rows), len(rows), False, found.__getitem__)
            last, seen = max(found), seen + len(rows)
        if expected is not None and seen != expected:
            raise MilvusWalkError(
                f"Milvus {imported.collection!r}: the walk by primary key read {seen:,} rows but "
                f"count(*) is {expected:,}: the collection changed during verification, or the "
                "server does not return a limited query's smallest keys"
            )
    finally:
        client.close()


async def shadow_batches(
    dsn: str, shadow: ShadowResult, fields: list[FieldSchema], batch_rows: int, rows: tuple[int, int] | None = None
) -> AsyncIterator[Batch]:
    """The shadow's rows; ``rows`` (lo, hi): only ``lo <= _row < hi``, one worker's share."""
    cols = ", ".join(quote(c) for c in [shadow.key, *(f.name for f in fields)])
    where = "" if rows is None else f" WHERE {quote(shadow.key)} >= {int(rows[0])} AND {quote(shadow.key)} < {int(rows[1])}"
    conn = await pg_connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(f"SELECT {cols} FROM {quote(shadow.table)}{where}")
            while rows := await cursor.fetch(batch_rows):
                keys = [r[shadow.key] for r in rows]
                yield await anyio.to_thread.run_sync(partial(_batch, fields, partial(_values, rows), len(rows), True, keys.__getitem__))
    finally:
        await conn.close()


async def each_batch(side: str, reading: Callable[[], Any], visit: Callable[[Batch], None]) -> int:
    """Stream one side, calling ``visit`` on each batch in a worker thread; the rows seen."""
    rows = 0
    source = reading()
    if side == "postgres":
        async for batch in source:
            await anyio.to_thread.run_sync(visit, batch)
            rows += len(batch.hashes)
        return rows
    while (batch := await anyio.to_thread.run_sync(next, source, None)) is not None:  # reads off the loop
        await anyio.to_thread.run_sync(visit, batch)
        rows += len(batch.hashes)
    return rows
