"""``sink.milvus``: upsert the records that carry a vector into a Milvus collection.

Upsert by primary key is idempotent, so a redelivered batch changes nothing: the same exactly-once
effect as the MongoDB sink. Records without the vector field (or with a null vector) are not Milvus
records and are skipped (counted as written elsewhere, not rejected): a feed can mix both kinds. The
collection is usually made by ``milvus.create_collection``; with ``dimension`` set, a missing collection
is created here (string primary key, float vector, every other field dynamic), which suits a stream
whose schema is its records. pymilvus is synchronous: each call runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from task_components.base import ConfiguredComponent
from task_components.contracts import BatchSink, MilvusTarget, StreamRecord

__all__ = ["MilvusSink", "MilvusSinkComponent", "MilvusSinkParams"]


class MilvusSinkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    key: str = Field(description="the primary key field (the business key)")
    vector_field: str = "vector"
    dimension: int | None = Field(None, ge=1, description="create a missing collection with this vector dimension")
    fields: list[str] | None = Field(None, description="record fields to write besides key and vector (default: all)")
    uri: str | None = Field(None, description="Milvus server URI or Milvus Lite file; default: MILVUS__URI")


class MilvusWriter:
    __slots__ = ("client", "params")

    def __init__(self, client: Any, params: MilvusSinkParams) -> None:
        self.client, self.params = client, params

    def rows(self, records: Sequence[StreamRecord]) -> list[dict[str, Any]]:
        p = self.params
        out = []
        for r in records:
            value = r.value or {}
            if value.get(p.vector_field) is None:
                continue
            keep = value if p.fields is None else {k: value.get(k) for k in (*p.fields, p.key, p.vector_field)}
            out.append({k: v for k, v in keep.items() if v is not None})  # Milvus takes no null dynamic values
        return out

    async def write(self, records: Sequence[StreamRecord]) -> int:
        rows = self.rows(records)
        if rows:
            await anyio.to_thread.run_sync(lambda: self.client.upsert(self.params.collection, rows))
        return len(rows)


@dataclass(frozen=True, slots=True)
class MilvusSink(BatchSink):
    params: MilvusSinkParams
    label = "milvus"

    def target(self, settings: Any) -> MilvusTarget:
        uri = self.params.uri or settings.milvus.uri
        if not uri:
            raise ValueError("MILVUS__URI is not set and sink.milvus has no `uri` (a server URI or a Lite .db file)")
        token = settings.milvus.token.get_secret_value() if settings.milvus.token else None
        return MilvusTarget(uri, token, settings.milvus.db_name, lite=uri.endswith(".db"))

    @asynccontextmanager
    async def open(self, settings: Any) -> AsyncIterator[MilvusWriter]:
        p = self.params
        client = await anyio.to_thread.run_sync(self.target(settings).client)
        try:
            exists = await anyio.to_thread.run_sync(client.has_collection, p.collection)
            if not exists and p.dimension is None:
                raise LookupError(f"Milvus collection {p.collection!r} does not exist (create it, or set `dimension`)")
            if not exists:
                await anyio.to_thread.run_sync(lambda: client.create_collection(
                    p.collection, dimension=p.dimension, primary_field_name=p.key, id_type="string", max_length=512,
                    vector_field_name=p.vector_field, enable_dynamic_field=True, consistency_level="Strong",
                ))  # fmt: skip
            yield MilvusWriter(client, p)
        finally:
            await anyio.to_thread.run_sync(client.close)


class MilvusSinkComponent(ConfiguredComponent):
    __slots__ = ()
    component = "sink.milvus"
    summary = "streaming sink: upsert records that carry a vector into Milvus (idempotent by primary key)"
    Params = MilvusSinkParams
    Result = MilvusSink

    def settings_problem(self, settings: Any) -> str | None:
        if self.params.uri or settings.milvus.uri:  # type: ignore[attr-defined]
            return None
        return "MILVUS__URI is not set and sink.milvus has no `uri` (a server URI or a Lite .db file)"
