"""One dataset file's rows COPYed into the shadow table, as one unit of work on a worker.

Why per file on the workers: ``shadow.sync`` COPYs the generation stream from the engine process, so
every row passes through it. Here each worker reads its file (the dataset directory when it shares the
engine's host, else the object store) and COPYs it in binary from the Arrow buffers
(``binary_copy.encode_batch``), in parallel with the other workers.

Idempotent, so Dask may run it again after losing a worker, and a lost connection may be retried: the
whole file goes in one transaction which first deletes the file's keys (its ``_row`` range for AUTO_ID
collections), so an attempt that committed before its worker died is replaced, never added to, and one
that did not commit left nothing (PostgreSQL rolls back a transaction whose connection died).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from dag_orchestrator.retry import with_retries
from dag_orchestrator.task import RetryPolicy
from task_components.clients import pg_connect
from task_components.datafiles import iter_batches
from task_components.errors import SyncError
from task_components.fused.work import worker_name
from task_components.manifest import FileEntry, Manifest
from task_components.schema.models import CollectionSchema
from task_components.schema.postgres import ROW_KEY, arrow_records, columns, key_column, quote
from task_components.shadow.binary_copy import encode_batch
from task_components.shadow.sync import pg_transient
from task_components.storage.task import StoreSpec


@dataclass(frozen=True, slots=True)
class CopyWork:
    """What every file of one shadow copy shares. ``dsn`` None: the worker's own ``POSTGRES__DSN``."""

    manifest: Manifest  # format, schema and root; ``files`` emptied (each job carries its own entry)
    table: str
    dsn: str | None
    store: StoreSpec | None  # where a worker on another host fetches the file from
    prefix: str | None
    retry: RetryPolicy
    batch_rows: int = 8192


@dataclass(frozen=True, slots=True)
class CopyDone:
    path: str
    rows: int
    worker: str
    cpu_seconds: float
    attempts: int


def copy_file(work: CopyWork, entry: FileEntry, offset: int) -> CopyDone:
    """Runs on a worker: the file's rows into the table, all or nothing (see the module docstring)."""
    cpu0 = time.process_time()
    with _readable(work, entry) as (manifest, readable):
        rows, attempts = anyio.run(_copy, work, manifest, readable, offset)
    return CopyDone(entry.path, rows, worker_name(), time.process_time() - cpu0, attempts)


@contextmanager
def _readable(work: CopyWork, entry: FileEntry) -> Iterator[tuple[Manifest, FileEntry]]:
    """A manifest whose root holds the file, and its entry: the dataset directory where this worker sees it
    (the engine's host, or a filesystem the workers share), else a download from the store into a scratch
    directory under a name of its own (a manifest's path never chooses where a worker writes)."""
    if work.manifest.root and (Path(work.manifest.root) / entry.path).exists():
        yield work.manifest, entry
        return
    if work.store is None or work.prefix is None:
        raise SyncError(f"{entry.path}: not on this worker's host and the dataset has no object store to fetch it from")
    scratch = tempfile.mkdtemp(prefix="dag-pipeline-copy-")
    try:
        local = entry.model_copy(update={"path": "data" + Path(entry.path).suffix})
        anyio.run(_download, work.store, f"{work.prefix}/{entry.path}", Path(scratch) / local.path)
        copy = work.manifest.model_copy()
        copy.root = scratch
        yield copy, local
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _download(spec: StoreSpec, key: str, path: Path) -> None:
    store = spec.open()
    try:
        await store.download(key, path)
    finally:
        with anyio.CancelScope(shield=True):
            await store.aclose()


async def _copy(work: CopyWork, manifest: Manifest, entry: FileEntry, offset: int) -> tuple[int, int]:
    schema = manifest.collection_schema
    dsn = work.dsn if work.dsn is not None else _worker_dsn()
    attempts = 0

    async def once() -> int:
        nonlocal attempts
        attempts += 1
        conn = await pg_connect(dsn)
        try:
            async with conn.transaction():
                return await _replace_file(conn, work, schema, manifest, entry, offset)
        except BaseException as exc:
            if pg_transient(exc):
                conn.terminate()
            raise
        finally:
            if not conn.is_closed():
                await conn.close()

    try:
        rows = await with_retries(once, work.retry, pg_transient, what=f"COPY of {entry.path}")
    except asyncpg.PostgresError as exc:
        raise SyncError(f"COPY of {entry.path} into {work.table} failed: {exc}") from exc
    return rows, attempts


async def _replace_file(conn: Any, work: CopyWork, schema: CollectionSchema, manifest: Manifest, entry: FileEntry, offset: int) -> int:
    table, key = quote(work.table), key_column(schema)
    auto = schema.primary.auto_id
    if auto:
        await conn.execute(f"DELETE FROM {table} WHERE {quote(ROW_KEY)} >= $1 AND {quote(ROW_KEY)} < $2", offset, offset + entry.rows)
    rows = 0
    for batch in iter_batches(manifest, entry, work.batch_rows):
        if not auto:
            await conn.execute(f"DELETE FROM {table} WHERE {quote(key)} = ANY($1)", batch.column(key).to_pylist())
        encoded = encode_batch(batch, schema, offset + rows)
        if encoded is not None:
            payload, cols = encoded
            await conn.copy_to_table(work.table, source=payload, format="binary", columns=cols)
        else:
            await conn.copy_records_to_table(work.table, records=arrow_records(batch, schema, offset + rows), columns=columns(schema))
        rows += batch.num_rows
    if rows != entry.rows:
        raise SyncError(f"{entry.path}: read {rows} rows, the manifest says {entry.rows}")
    return rows


def _worker_dsn() -> str:
    from config.settings import Settings

    dsn = Settings().postgres.dsn
    if dsn is None:
        raise SyncError("this worker has no POSTGRES__DSN: a Dask deployment's workers need the shadow's DSN in their environment")
    return dsn.get_secret_value()
