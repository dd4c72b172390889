"""The ``shadow.sync`` task: mirror the generated rows into PostgreSQL by COPY, alongside the upload.

It streams from ``generate`` (fan-out: partition and shadow read the same batches), encodes each
batch in a worker thread and COPYs it through an asyncpg pool, a bounded number of batches in flight.
A batch is encoded as one binary COPY payload straight from its Arrow buffers (``binary_copy``: no
Python object per value, which made 768-d vectors crawl); a schema with a type the binary encoder does
not cover (ARRAY) goes through asyncpg's records instead. With no ``POSTGRES__DSN`` it starts an
embedded PostgreSQL (pgserver) in the run directory, so the quickstart needs no server. A lost
connection (a restart, a failover) is retried per batch with backoff; a retried batch replaces its
keys in one transaction, since the failed COPY may have committed.
The task stores no DSN in its result: credentials stay in settings.

The table is named after the Milvus collection it shadows (``shadow_<collection>``), not after the
schema: two collections made from one schema must not share a table, and ``shadow validate
<collection>`` (and the drop-in client) find a collection's table by the collection's name. The
collection is ``collection:``, else the one collection the pipeline's ``milvus.create_collection`` /
``milvus.existing`` tasks name (found when the DAG is built), else the schema's name, which is also
what those tasks default to. A finished run keeps the table its result recorded, so resuming a run
made before this rule reads the table it wrote.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import anyio
import asyncpg
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from config.settings import Settings
from dag_orchestrator.context import PipelineContext
from dag_orchestrator.retry import with_retries
from task_components.base import Component
from task_components.clients import pg_pool
from task_components.connect import shadow_dsn
from task_components.contracts import GenerationResult, ShadowResult
from task_components.errors import ShadowConnectionError, SyncError
from task_components.schema.arrow import schema_of
from task_components.schema.models import CollectionSchema
from task_components.schema.postgres import arrow_records, columns, create_table_sql, key_column, quote, table_name
from task_components.shadow.binary_copy import encode_batch


def pg_transient(exc: BaseException) -> bool:
    """Worth retrying: the server went away or is starting up, not a refusal of the data."""
    return isinstance(exc, _PG_TRANSIENT)


# InternalClientError: asyncpg's protocol state after a connection died mid-operation
_PG_TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


class ShadowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool_min: int = Field(2, ge=1)
    pool_max: int = Field(20, ge=1, le=100)
    concurrency: int = Field(2, ge=1, le=32, description="batches being copied at once")
    drop_if_exists: bool = True
    collection: str | None = Field(
        None,
        description="the Milvus collection this table shadows (default: the pipeline's one collection task's, else the schema's name)",
    )
    table: str | None = Field(None, description="shadow table name (default: shadow_<collection>)")


def _collection_of(task: Any) -> str | None:
    """The collection a collection task names: its ``collection``, else its own schema's name (None when it
    takes the schema from upstream: the same generated schema the shadow reads)."""
    params = getattr(task, "params", None)
    if name := getattr(params, "collection", None):
        return str(name)
    ref = getattr(params, "schema_ref", None)
    if ref is None:
        return None
    from task_components.schema.library import resolve_schema

    return resolve_schema(ref).collection_name


class ShadowSync(Component[ShadowParams]):
    __slots__ = ("_pipeline_collection",)
    collection_tasks: ClassVar[tuple[str, ...]] = ("milvus.create_collection", "milvus.existing")
    component = "shadow.sync"
    Result = ShadowResult
    needs_types: ClassVar[tuple[type | tuple[type, ...], ...]] = (GenerationResult,)
    summary = "copy the generated rows into a PostgreSQL shadow table (embedded PostgreSQL by default)"
    Params = ShadowParams
    stream_input = True
    stream_spill = True  # PostgreSQL's pace must not become generation's: the lag waits on disk
    retries_inside = True
    default_kind = "io"

    async def run(self, ctx: PipelineContext) -> ShadowResult:
        p = self.params
        if len(self.streams_from) != 1:
            raise ValueError(f"shadow.sync streams from exactly one generate task, got {list(self.streams_from)}")
        settings: Settings = ctx.services.settings
        dsn, embedded = await shadow_dsn(settings, ctx.run_dir)
        started = time.perf_counter()
        pool = await self._connect(ctx, dsn, p)
        slots = anyio.Semaphore(p.concurrency)  # released by the copying task, so not a CapacityLimiter
        schema: CollectionSchema | None = None
        rows = 0
        try:
            async with anyio.create_task_group() as tg:
                async for batch in ctx.stream(self.streams_from[0]):
                    if schema is None:
                        schema = schema_of(batch.schema)
                        await with_retries(
                            partial(self._create, pool, schema, p.drop_if_exists),
                            self.inner_retry(),
                            pg_transient,
                            what="creating the shadow table",
                            log=ctx.log,
                        )
                    await slots.acquire()  # bounded: at most `concurrency` batches converted or copied
                    tg.start_soon(self._copy, ctx, pool, schema, batch, rows, slots)
                    rows += batch.num_rows
                    ctx.progress(done=rows, unit="rows")
        finally:
            with anyio.CancelScope(shield=True):
                await pool.close()
        if schema is None:
            raise ValueError(f"stream from {self.streams_from[0]!r} carried no data")
        return self._result(ctx, schema, rows, embedded, started)

    def _result(self, ctx: PipelineContext, schema: CollectionSchema, rows: int, embedded: bool, started: float) -> ShadowResult:
        home = str(Path(ctx.run_dir).resolve()) if embedded and ctx.run_dir else None
        return ShadowResult(
            table=self._table(schema),
            key=key_column(schema),
            rows=rows,
            embedded=embedded,
            seconds=time.perf_counter() - started,
            collection_schema=schema,
            embedded_dir=home,
        )

    def needs_problem(self, tasks: dict[str, Any]) -> str | None:
        """Find the collection this table shadows when ``collection``/``table`` do not say (the DAG is built
        once per run, before anything runs); several different ones are ambiguous: exit 2, asking which."""
        self._pipeline_collection = None
        p = self.params
        if p.collection or p.table:
            return None
        names = {name: _collection_of(t) for name, t in tasks.items() if getattr(t, "component", None) in self.collection_tasks}
        found = set(names.values())
        if len(found) > 1:
            listed = ", ".join(f"{task}: {n or 'the schema name'}" for task, n in sorted(names.items()))
            return f"the pipeline has several collections ({listed}): set collection: (or table:) on {self.name}"
        self._pipeline_collection = next(iter(found), None)
        return None

    def collection(self, schema: CollectionSchema) -> str:
        """The Milvus collection shadowed: ``collection``, the pipeline's one collection, or the schema's name."""
        p = self.params
        return p.collection or getattr(self, "_pipeline_collection", None) or schema.collection_name

    def _table(self, schema: CollectionSchema) -> str:
        return self.params.table or table_name(self.collection(schema))

    async def _connect(self, ctx: PipelineContext, dsn: str, p: ShadowParams) -> Any:
        try:
            return await with_retries(
                lambda: pg_pool(dsn, min_size=min(p.pool_min, p.pool_max), max_size=p.pool_max),
                self.inner_retry(),
                pg_transient,
                what="connecting to the shadow PostgreSQL",
                log=ctx.log,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise ShadowConnectionError(f"cannot reach the shadow PostgreSQL: {type(exc).__name__}: {exc}") from exc

    async def _create(self, pool: Any, schema: CollectionSchema, drop: bool) -> None:
        async with pool.acquire() as conn:
            if drop:
                await conn.execute(f"DROP TABLE IF EXISTS {quote(self._table(schema))}")
            # IF NOT EXISTS: a retried create whose first attempt committed must not fail
            await conn.execute(create_table_sql(schema, self._table(schema), if_not_exists=True))

    async def _copy(
        self,
        ctx: PipelineContext,
        pool: Any,
        schema: CollectionSchema,
        batch: pa.RecordBatch,
        offset: int,
        slots: anyio.Semaphore,
    ) -> None:
        table, key = self._table(schema), key_column(schema)
        attempt = 0
        encoded: tuple[memoryview, list[str]] | None = None
        records: list[tuple[Any, ...]] = []

        async def write(conn: Any) -> None:
            if encoded is not None:
                payload, cols = encoded
                await conn.copy_to_table(table, source=payload, format="binary", columns=cols)
            else:
                await conn.copy_records_to_table(table, records=records, columns=columns(schema))

        async def copy() -> None:
            nonlocal attempt
            attempt += 1
            async with pool.acquire() as conn:
                try:
                    if attempt == 1:
                        await write(conn)
                        return
                    # a retry: the failed COPY may have committed before the connection died: replace, not add
                    auto = schema.primary.auto_id
                    keys = list(range(offset, offset + batch.num_rows)) if auto else batch.column(key).to_pylist()
                    async with conn.transaction():
                        await conn.execute(f"DELETE FROM {quote(table)} WHERE {quote(key)} = ANY($1)", keys)
                        await write(conn)
                except BaseException as exc:
                    if pg_transient(exc):
                        conn.terminate()  # a connection cut mid-COPY is in no state to serve the next batch
                    raise

        try:
            encoded = await anyio.to_thread.run_sync(encode_batch, batch, schema, offset)
            if encoded is None:
                records = await anyio.to_thread.run_sync(arrow_records, batch, schema, offset)
            await with_retries(copy, self.inner_retry(), pg_transient, what=f"COPY at row {offset}", log=ctx.log)
        except asyncpg.PostgresError as exc:
            raise SyncError(f"COPY into {table} failed at row {offset}: {exc}") from exc
        finally:
            slots.release()

    def summarize(self, result: ShadowResult) -> dict[str, Any]:
        where = "embedded PostgreSQL" if result.embedded else "PostgreSQL"
        return {"table": result.table, "rows": result.rows, "in": where}
