"""``sink.milvus``: upsert the records that carry a vector into a Milvus collection.

Upsert by primary key is idempotent, so a redelivered batch changes nothing: the same exactly-once
effect as the MongoDB sink. Records without the vector field (or with a null vector) are not Milvus
records and are skipped (counted as written elsewhere, not rejected): a feed can mix both kinds. The
collection is usually made by ``milvus.create_collection``; with ``dimension`` set, a missing collection
is created here (string primary key, float vector, every other field dynamic), which suits a stream
whose schema is its records. pymilvus is synchronous: each call runs in a worker thread.

A row Milvus cannot take is that record's failure (dead-lettered through ``RecordsRefused``): a key that
is not a string or number or longer than the collection's VarChar (or ``max_key_bytes``), a vector that
is not a list of numbers of the collection's dimension (both read from the collection at open), or a
batch Milvus refuses as data: its rows are then upserted one at a time and the refused ones are
dead-lettered. Only a refusal *of the data* is the rows' (``data_refusal``: pymilvus' own checks of a
row, ``ParamError``, ``DataNotMatchException``... and a server answer of invalid parameter); anything
else (pymilvus 3 raises a plain ``MilvusException`` code 2 or UNAVAILABLE when the server is gone, a
timeout) is an outage: the batch is retried whole, nothing is dead-lettered. Every call has a deadline
(``call_timeout``), so a row-by-row pass never outlasts one call's timeout on a server that stopped
answering (the first row that times out ends the pass as an outage).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from config.settings import Settings
from task_components.clients import MilvusTarget, milvus_target
from task_components.contracts import BatchSink, StreamRecord
from task_components.sinks.mongo import key_problem
from task_components.streaming.resilience import RecordsRefused, Refusal
from task_components.streaming.steps import StreamSink

__all__ = ["MilvusSink", "MilvusSinkComponent", "MilvusSinkParams"]


class MilvusSinkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    key: str = Field(description="the primary key field (the business key)")
    vector_field: str = "vector"
    dimension: int | None = Field(None, ge=1, description="create a missing collection with this vector dimension")
    fields: list[str] | None = Field(None, description="record fields to write besides key and vector (default: all)")
    uri: str | None = Field(None, description="Milvus server URI or Milvus Lite file; default: MILVUS__URI")
    max_key_bytes: int = Field(512, ge=1, description="a longer key is refused (the created collection's VarChar)")
    call_timeout: float = Field(30.0, gt=0, description="seconds one upsert may take before it counts as an outage")


DATA_CODES = frozenset({5, 1100})  # the server's ILLEGAL_ARGUMENT (2.2) and ParameterInvalid (2.3+) answers


def data_refusal(exc: BaseException) -> bool:
    """Whether Milvus refused the rows themselves (retrying them cannot help), not failed to answer."""
    from pymilvus import exceptions as e

    rows = (
        e.ParamError,
        e.DataNotMatchException,
        e.DataTypeNotMatchException,
        e.DataTypeNotSupportException,
        e.PrimaryKeyException,
        e.FieldsTypeException,
        e.FieldTypeException,
        e.AutoIDException,
        e.PartitionKeyException,
    )
    if isinstance(exc, rows):
        return True
    return type(exc) is e.MilvusException and getattr(exc, "code", None) in DATA_CODES


def _shape(client: Any, p: MilvusSinkParams) -> tuple[int | None, int]:
    """(vector dimension, largest key in bytes) from the collection's schema; unknowns left to Milvus."""
    dim, key_bytes = None, p.max_key_bytes
    for f in client.describe_collection(p.collection).get("fields", []):
        params = f.get("params") or {}
        if f.get("name") == p.vector_field and "dim" in params:
            dim = int(params["dim"])
        if f.get("name") == p.key and "max_length" in params:
            key_bytes = min(key_bytes, int(params["max_length"]))
    return dim, key_bytes


class MilvusWriter:
    __slots__ = ("client", "dim", "key_bytes", "params")

    def __init__(self, client: Any, params: MilvusSinkParams, dim: int | None = None, key_bytes: int = 512) -> None:
        self.client, self.params, self.dim, self.key_bytes = client, params, dim, key_bytes

    def row(self, r: StreamRecord) -> dict[str, Any] | None:
        """The record's row, None when it carries no vector; ValueError names what Milvus could not take."""
        p = self.params
        value = r.value or {}
        vector = value.get(p.vector_field)
        if vector is None:
            return None
        problem = key_problem(p.key, value.get(p.key), self.key_bytes)
        if problem:
            raise ValueError(problem)
        if not isinstance(vector, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector):
            raise ValueError(f"{p.vector_field} is not a list of numbers")
        if self.dim is not None and len(vector) != self.dim:
            raise ValueError(f"{p.vector_field} has {len(vector)} numbers, the collection's dimension is {self.dim}")
        keep = value if p.fields is None else {k: value.get(k) for k in (*p.fields, p.key, p.vector_field)}
        return {k: v for k, v in keep.items() if v is not None}  # Milvus takes no null dynamic values

    def rows(self, records: Sequence[StreamRecord]) -> list[dict[str, Any]]:
        return [row for row in (self.row(r) for r in records) if row is not None]

    async def write(self, records: Sequence[StreamRecord]) -> int:
        refusals: list[Refusal] = []
        rows: list[tuple[StreamRecord, dict[str, Any]]] = []
        for r in records:
            try:
                row = self.row(r)
            except ValueError as exc:
                refusals.append(Refusal(r, "row", str(exc)))
                continue
            if row is not None:
                rows.append((r, row))
        written = await self._upsert(rows, refusals)
        if refusals:
            raise RecordsRefused(written, refusals)
        return written

    async def _call(self, rows: list[dict[str, Any]]) -> None:
        collection, timeout = self.params.collection, self.params.call_timeout
        await anyio.to_thread.run_sync(lambda: self.client.upsert(collection, rows, timeout=timeout))

    async def _upsert(self, rows: list[tuple[StreamRecord, dict[str, Any]]], refusals: list[Refusal]) -> int:
        if not rows:
            return 0
        try:
            await self._call([row for _, row in rows])
            return len(rows)
        except Exception as exc:
            if not data_refusal(exc):
                raise  # the server did not answer: an outage, the whole batch is retried
        refused = []
        for r, row in rows:  # one refused row fails the whole call: find it (an outage on the way ends the pass)
            try:
                await self._call([row])
            except Exception as exc:
                if not data_refusal(exc):
                    raise
                refused.append(Refusal(r, "refused", f"Milvus: {type(exc).__name__}: {str(exc)[:300]}"))
        refusals += refused
        return len(rows) - len(refused)


@dataclass(frozen=True, slots=True)
class MilvusSink(BatchSink):
    params: MilvusSinkParams
    label = "milvus"

    def target(self, settings: Settings) -> MilvusTarget:
        """``clients.milvus_target``'s rule: MILVUS__TOKEN goes to MILVUS__URI only, never to another `uri`."""
        if not (self.params.uri or settings.milvus.uri):
            raise ValueError("MILVUS__URI is not set and sink.milvus has no `uri` (a server URI or a Lite .db file)")
        return milvus_target(settings, None, self.params.uri)

    @asynccontextmanager
    async def open(self, settings: Any) -> AsyncIterator[MilvusWriter]:
        p = self.params
        client = await anyio.to_thread.run_sync(self.target(settings).client)
        try:
            exists = await anyio.to_thread.run_sync(client.has_collection, p.collection)
            if not exists and p.dimension is None:
                raise LookupError(f"Milvus collection {p.collection!r} does not exist (create it, or set `dimension`)")
            if not exists:
                await anyio.to_thread.run_sync(
                    lambda: client.create_collection(
                        p.collection,
                        dimension=p.dimension,
                        primary_field_name=p.key,
                        id_type="string",
                        max_length=512,
                        vector_field_name=p.vector_field,
                        enable_dynamic_field=True,
                        consistency_level="Strong",
                    )
                )
            dim, key_bytes = await anyio.to_thread.run_sync(_shape, client, p)
            yield MilvusWriter(client, p, dim, key_bytes)
        finally:
            await anyio.to_thread.run_sync(client.close)


class MilvusSinkComponent(StreamSink[MilvusSinkParams]):
    __slots__ = ()
    component = "sink.milvus"
    summary = "streaming sink: upsert records that carry a vector into Milvus (idempotent by primary key)"
    Params = MilvusSinkParams

    def sink(self) -> MilvusSink:
        return MilvusSink(self.params)

    def settings_problem(self, settings: Any) -> str | None:
        if self.params.uri or settings.milvus.uri:
            return None
        return "MILVUS__URI is not set and sink.milvus has no `uri` (a server URI or a Lite .db file)"
