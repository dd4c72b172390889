"""The ``shadow.sync`` task: mirror the generated rows into PostgreSQL by COPY, alongside the upload.

It streams from ``generate`` (fan-out: partition and shadow read the same batches), converts each
batch to records in a worker thread and COPYs it through an asyncpg pool, a bounded number of batches
in flight. With no ``POSTGRES__DSN`` it starts an embedded PostgreSQL (pgserver) in the run directory,
so the quickstart needs no server. The task stores no DSN in its result: credentials stay in settings.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from config.settings import Settings
from task_components.base import Component
from task_components.schema.arrow import META_COLUMN, schema_of
from task_components.schema.models import CollectionSchema, FieldType
from task_components.shadow.errors import ShadowConnectionError, SyncError
from task_components.shadow.pg_schema import columns, create_table_sql, key_column, quote, table_name

_BYTES = (FieldType.BINARY_VECTOR, FieldType.FLOAT16_VECTOR, FieldType.BFLOAT16_VECTOR)
_embedded: dict[str, Any] = {}


def embedded_dsn(run_dir: Path) -> str:
    """Start (once per process) a PostgreSQL in ``<run dir>/postgres``; it stops when the process exits."""
    key = str(run_dir.resolve())
    if key not in _embedded:
        import pgserver

        base = run_dir.resolve() / "postgres"
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)  # pgserver runs PostgreSQL as its own OS user, which must traverse this
        # the data directory itself belongs to pgserver: PostgreSQL refuses one that is not 0700/0750
        _embedded[key] = pgserver.get_server(str(base / "data"), cleanup_mode="stop")
    return str(_embedded[key].get_uri())


async def shadow_dsn(settings: Settings, run_dir: Path | None) -> tuple[str, bool]:
    if settings.postgres.dsn is not None:
        return settings.postgres.dsn.get_secret_value(), False
    if run_dir is None:
        raise ValueError("POSTGRES__DSN is not set and the run has no run directory for an embedded PostgreSQL")
    return await anyio.to_thread.run_sync(embedded_dsn, Path(run_dir)), True


def _matrix(col: pa.Array, n: int, dtype: Any) -> np.ndarray:
    return np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=dtype).reshape(n, -1)


def arrow_records(batch: pa.RecordBatch, schema: CollectionSchema, offset: int) -> list[tuple[Any, ...]]:
    """Records for COPY, one column at a time (numpy/C conversions, no per-value Python branching)."""
    n = batch.num_rows
    cols: list[Any] = []
    if schema.primary.auto_id:
        cols.append(range(offset, offset + n))
    for f in schema.data_fields():
        col = batch.column(f.name)
        if f.type is FieldType.FLOAT_VECTOR:
            cols.append(_matrix(col, n, np.float32).tolist())
        elif f.type is FieldType.INT8_VECTOR:
            cols.append(_matrix(col, n, np.int8).tolist())
        elif f.type in _BYTES:
            cols.append([row.tobytes() for row in _matrix(col, n, np.uint8)])
        else:
            cols.append(col.to_pylist())
    if schema.enable_dynamic_field:
        cols.append(batch.column(META_COLUMN).to_pylist())
    return list(zip(*cols, strict=True))


class ShadowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool_min: int = Field(2, ge=1)
    pool_max: int = Field(20, ge=1, le=100)
    concurrency: int = Field(2, ge=1, le=32, description="batches being copied at once")
    drop_if_exists: bool = True


class ShadowResult(BaseModel):
    table: str
    key: str
    rows: int
    embedded: bool
    seconds: float
    collection_schema: CollectionSchema


class ShadowSync(Component):
    __slots__ = ()
    component = "shadow.sync"
    summary = "copy the generated rows into a PostgreSQL shadow table (embedded PostgreSQL by default)"
    Params = ShadowParams
    stream_input = True
    default_kind = "io"

    async def run(self, ctx: Any) -> ShadowResult:
        p: ShadowParams = self.params  # type: ignore[assignment]
        if len(self.streams_from) != 1:
            raise ValueError(f"shadow.sync streams from exactly one generate task, got {list(self.streams_from)}")
        settings: Settings = ctx.services["settings"]
        dsn, embedded = await shadow_dsn(settings, ctx.run_dir)
        started = time.perf_counter()
        pool = await self._connect(dsn, p)
        slots = anyio.Semaphore(p.concurrency)  # released by the copying task, so not a CapacityLimiter
        schema: CollectionSchema | None = None
        rows = 0
        try:
            async with anyio.create_task_group() as tg:
                async for batch in ctx.stream(self.streams_from[0]):
                    if schema is None:
                        schema = schema_of(batch.schema)
                        await self._create(pool, schema, p.drop_if_exists)
                    await slots.acquire()  # bounded: at most `concurrency` batches converted or copied
                    tg.start_soon(self._copy, pool, schema, batch, rows, slots)
                    rows += batch.num_rows
                    ctx.progress(done=rows, unit="rows")
        finally:
            with anyio.CancelScope(shield=True):
                await pool.close()
        if schema is None:
            raise ValueError(f"stream from {self.streams_from[0]!r} carried no data")
        return ShadowResult(table=table_name(schema), key=key_column(schema), rows=rows, embedded=embedded,
                            seconds=time.perf_counter() - started, collection_schema=schema)  # fmt: skip

    async def _connect(self, dsn: str, p: ShadowParams) -> Any:
        try:
            return await asyncpg.create_pool(dsn, min_size=min(p.pool_min, p.pool_max), max_size=p.pool_max)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ShadowConnectionError(f"cannot reach the shadow PostgreSQL: {type(exc).__name__}: {exc}") from exc

    async def _create(self, pool: Any, schema: CollectionSchema, drop: bool) -> None:
        async with pool.acquire() as conn:
            if drop:
                await conn.execute(f"DROP TABLE IF EXISTS {quote(table_name(schema))}")
            await conn.execute(create_table_sql(schema))

    async def _copy(self, pool: Any, schema: CollectionSchema, batch: pa.RecordBatch, offset: int, slots: Any) -> None:
        try:
            records = await anyio.to_thread.run_sync(arrow_records, batch, schema, offset)
            async with pool.acquire() as conn:
                await conn.copy_records_to_table(table_name(schema), records=records, columns=columns(schema))
        except asyncpg.PostgresError as exc:
            raise SyncError(f"COPY into {table_name(schema)} failed at row {offset}: {exc}") from exc
        finally:
            slots.release()

    def summarize(self, result: ShadowResult) -> dict[str, Any]:
        where = "embedded PostgreSQL" if result.embedded else "PostgreSQL"
        return {"table": result.table, "rows": result.rows, "in": where}
