"""``sink.mongodb``: bulk upserts by business key with PyMongo's async API (``AsyncMongoClient``).

PyMongo's own async client is the official successor of Motor (deprecated). Each batch becomes one
unordered ``bulk_write`` of ``ReplaceOne(filter=business key, upsert=True)``: writing a batch again
(after a retry, a crash or a rebalance) leaves the same documents, which is what makes at-least-once
delivery an exactly-once effect. A unique index on the key makes the key a key; two batches upserting
the same new key at once can still collide on it (E11000, as on mongod), so those operations are
simply upserted again, when the other insert has landed. Records of one batch sharing a key are
collapsed to the last one first (an unordered bulk may apply them in any order). ``concurrent_writes``
bounds the bulk writes in flight apart from the batches in flight: on the local SecantusDB one at a time
measured fastest (0.96-1.07x raw upserts end to end, against 0.65-0.91x with two and less with ten); a
real MongoDB deployment usually gains from a few.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from task_components.base import ConfiguredComponent
from task_components.connect import missing, mongo_uri
from task_components.contracts import BatchSink, StreamRecord
from task_components.sinks.resilience import PermanentSinkError

__all__ = ["MongoSink", "MongoSinkComponent", "MongoSinkParams"]

DUPLICATE_KEY = 11000


class MongoSinkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: list[str] = Field(min_length=1, description="business key fields: the upsert filter and the unique index")
    database: str | None = Field(None, description="default: MONGODB__DATABASE")
    collection: str | None = Field(None, description="default: MONGODB__COLLECTION")
    metadata_field: str | None = Field("_source", description="source topic/partition/offset and correlation id")
    create_index: bool = True
    server_selection_timeout_ms: int = Field(5000, ge=100, description="how long one attempt waits for the server")
    concurrent_writes: int = Field(
        1, ge=1, description="bulk writes at once, whatever the batches in flight; raise it for a MongoDB cluster"
    )


class MongoWriter:
    __slots__ = ("collection", "params", "slots")

    def __init__(self, collection: Any, params: MongoSinkParams) -> None:
        self.collection, self.params = collection, params
        self.slots = anyio.Semaphore(params.concurrent_writes)

    def document(self, record: StreamRecord) -> dict[str, Any]:
        doc = dict(record.value or {})
        if self.params.metadata_field:
            doc[self.params.metadata_field] = {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "correlation_id": record.correlation_id,
            }
        return doc

    async def write(self, records: Sequence[StreamRecord]) -> int:
        from pymongo import ReplaceOne
        from pymongo.errors import BulkWriteError

        latest: dict[tuple[Any, ...], StreamRecord] = {}
        for r in records:
            latest[tuple((r.value or {}).get(k) for k in self.params.key)] = r
        ops = [
            ReplaceOne(dict(zip(self.params.key, key, strict=True)), self.document(r), upsert=True)
            for key, r in latest.items()
        ]
        last = ""
        for attempt in range(1, 6):
            if not ops:
                return len(latest)
            try:
                async with self.slots:
                    await self.collection.bulk_write(ops, ordered=False)
                return len(latest)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
                if other:
                    first = other[0].get("errmsg")
                    raise PermanentSinkError(f"MongoDB rejected {len(other)} writes; first: {first}") from None
                last = errors[0].get("errmsg", "")
                await anyio.sleep(0.05 * attempt)
                ops = [ops[e["index"]] for e in errors]  # lost an insert race: upsert again, now it matches
        # still a duplicate after the other insert had every chance to land: another unique index conflicts
        raise PermanentSinkError(f"MongoDB answers duplicate key for {len(ops)} upserts on every try; first: {last}")


@dataclass(frozen=True, slots=True)
class MongoSink(BatchSink):
    params: MongoSinkParams
    label = "mongodb"

    @asynccontextmanager
    async def open(self, settings: Any) -> AsyncIterator[MongoWriter]:
        from pymongo import AsyncMongoClient

        p = self.params
        client: Any = AsyncMongoClient(
            mongo_uri(settings), serverSelectionTimeoutMS=p.server_selection_timeout_ms, appname="dag-pipeline"
        )
        try:
            collection = client[p.database or settings.mongodb.database][p.collection or settings.mongodb.collection]
            if p.create_index:
                await collection.create_index([(k, 1) for k in p.key], unique=True, name="business_key")
            yield MongoWriter(collection, p)
        finally:
            await client.close()


class MongoSinkComponent(ConfiguredComponent):
    __slots__ = ()
    component = "sink.mongodb"
    summary = "streaming sink: MongoDB bulk upsert by business key (PyMongo AsyncMongoClient), idempotent"
    Params = MongoSinkParams
    Result = MongoSink

    def settings_problem(self, settings: Any) -> str | None:
        return missing(mongo_uri, settings)
