"""The ``generate`` component: a deterministic stream of Arrow record batches from a schema.

Chunks are planned from the schema alone (about 8 MB each, never from the worker count), generated
in worker processes through the backend's ordered bounded map, and emitted in order. Each batch's
Arrow schema carries the collection schema and the generation parameters, so downstream tasks
(partition, shadow sync) need nothing else to describe what they write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from dag_orchestrator.backends import make_backend
from dag_orchestrator.context import PipelineContext
from task_components.base import Component
from task_components.contracts import GenerationResult, with_info
from task_components.generation.columns import generate_chunk
from task_components.schema.arrow import row_bytes
from task_components.schema.library import resolve_schema
from task_components.schema.models import CollectionSchema, SchemaError

CHUNK_TARGET_BYTES = 8 << 20
PARTITION_KEY_SPREAD = 10  # milvus-ingest: partition-key distinct values = partitions x 10
_NO_DISTRIBUTION: dict[str, Any] = {"cardinality_ratio": None, "enum_values": None}


class GenerateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_ref: str | dict[str, Any] = Field(alias="schema", description="builtin name, file path or inline schema")
    total_rows: int = Field(ge=1)
    seed: int = 42
    chunk_rows: int | None = Field(None, ge=1, description="rows per chunk (default: ~8 MB of data)")
    workers: int | None = Field(None, ge=0, description="worker processes (default: CPU count; 0 = a thread)")
    partitions: int | None = Field(None, ge=1, description="partition key cardinality and num_partitions")
    shards: int | None = Field(None, ge=1, description="num_shards recorded for the collection")
    _schema: CollectionSchema = PrivateAttr()

    @field_validator("schema_ref")
    @classmethod
    def _resolvable(cls, v: Any) -> Any:
        resolve_schema(v)  # raises SchemaError (a ValueError) naming the problem
        return v

    @model_validator(mode="after")
    def _build(self) -> GenerateParams:
        self._schema = apply_layout(resolve_schema(self.schema_ref), self.partitions, self.shards)
        return self

    @property  # the resolved schema: shadows pydantic's deprecated BaseModel.schema() classmethod, never used
    def schema(self) -> CollectionSchema:  # type: ignore[override]
        return self._schema


def apply_layout(schema: CollectionSchema, partitions: int | None, shards: int | None) -> CollectionSchema:
    """``--partitions N``: the partition key takes N x 10 distinct values and the collection N partitions.

    N x 10 is milvus-ingest's rule: several keys hash to each partition, so partitions fill evenly.
    ``--shards`` is recorded for create_collection.
    """
    updates: dict[str, Any] = {}
    if partitions:
        key = schema.partition_key
        if key is None:
            raise SchemaError(
                f"partitions={partitions} needs a partition key: mark one Int64/VarChar field of "
                f'{schema.collection_name!r} with "is_partition_key": true'
            )
        fields = [
            f.model_copy(update={"cardinality": partitions * PARTITION_KEY_SPREAD} | _NO_DISTRIBUTION) if f.is_partition_key else f
            for f in schema.fields
        ]
        updates |= {"fields": fields, "num_partitions": partitions}
    if shards:
        updates["num_shards"] = shards
    return schema.model_copy(update=updates) if updates else schema


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    total_rows: int
    chunk_rows: int

    @classmethod
    def for_schema(cls, schema: CollectionSchema, total_rows: int, chunk_rows: int | None = None) -> ChunkPlan:
        if chunk_rows is None:
            chunk_rows = min(max(CHUNK_TARGET_BYTES // row_bytes(schema), 1024), 262_144)
        return cls(total_rows, min(chunk_rows, total_rows))

    @property
    def chunks(self) -> int:
        return -(-self.total_rows // self.chunk_rows)

    def jobs(self, schema_json: str, seed: int) -> Iterator[tuple[Any, ...]]:
        for i in range(self.chunks):
            start = i * self.chunk_rows
            yield (schema_json, seed, i, start, min(self.chunk_rows, self.total_rows - start), self.total_rows)


def generation_info(params: GenerateParams, plan: ChunkPlan) -> dict[str, Any]:
    return {"seed": params.seed, "total_rows": plan.total_rows, "chunk_rows": plan.chunk_rows}


def info_bytes(params: GenerateParams, plan: ChunkPlan) -> bytes:
    """What every generated batch carries in its schema metadata (``with_info``): the same bytes wherever
    the batch is made, so files written from it are byte-identical."""
    return json.dumps(generation_info(params, plan)).encode()


async def generate_batches(params: GenerateParams, backend: Any) -> Any:
    """Async iterator of batches: the same sequence for any backend and worker count."""
    schema = params.schema
    plan = ChunkPlan.for_schema(schema, params.total_rows, params.chunk_rows)
    info = info_bytes(params, plan)
    async for batch in backend.map_ordered(generate_chunk, plan.jobs(schema.model_dump_json(), params.seed)):
        yield with_info(batch, info)


class Generate(Component[GenerateParams]):
    __slots__ = ()
    component = "generate"
    Result = GenerationResult
    summary = "generate schema-driven synthetic rows as a stream of Arrow batches (deterministic per seed)"
    Params = GenerateParams
    emits = True
    default_kind = "cpu"

    async def run(self, ctx: PipelineContext) -> GenerationResult:
        p = self.params
        plan = ChunkPlan.for_schema(p.schema, p.total_rows, p.chunk_rows)
        started, done = time.perf_counter(), 0
        workers = p.workers if p.workers is not None else ctx.services.workers
        backend = make_backend(ctx.services.backend, workers, ctx.services.scheduler)
        async with backend:
            dashboard = getattr(backend, "dashboard", None)  # Dask only
            if dashboard:
                ctx.log.info("dask dashboard", url=dashboard)
            async for batch in generate_batches(p, backend):
                await ctx.emit(batch)
                done += batch.num_rows
                ctx.progress(done=done, total=p.total_rows, unit="rows")
        return GenerationResult(
            p.schema.collection_name,
            p.total_rows,
            p.seed,
            plan.chunks,
            plan.chunk_rows,
            time.perf_counter() - started,
            dict(getattr(backend, "placement", {})),
        )

    def summarize(self, result: GenerationResult) -> dict[str, Any]:
        d = asdict(result)
        out = {"rows": d["total_rows"], "chunks": d["chunks"], "rows/s": f"{result.rows_per_second:,.0f}"}
        if result.placement:  # where each chunk ran (Dask): worker address -> chunks
            out["workers"] = ", ".join(f"{w}: {n}" for w, n in sorted(result.placement.items()))
        return out
