"""The sinks on the real services: MongoDB upsert races between batches, and refusals that are permanent."""

from __future__ import annotations

import uuid

import anyio
import pytest
from pymongo import AsyncMongoClient

from config.settings import Settings
from task_components.contracts import StreamRecord
from task_components.sinks.mongo import MongoSink, MongoSinkParams
from task_components.sinks.resilience import PermanentSinkError
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration


def record(i: int, email: str) -> StreamRecord:
    return StreamRecord("in", 0, i, b"", {"customer_id": f"C{i:05d}", "email": email, "n": i}, f"cid-{i}")


def settings(db: str) -> Settings:
    return Settings.model_validate({"mongodb": {"connection_string": service_uri("TEST_MONGO_URI"), "database": db,
                                                "collection": "customers"}})  # fmt: skip


@pytest.mark.anyio
async def test_concurrent_batches_upserting_the_same_new_keys_all_succeed() -> None:
    db = f"race_{uuid.uuid4().hex[:8]}"
    sink = MongoSink(MongoSinkParams(key=["customer_id"], concurrent_writes=4))
    batch = [record(i, f"u{i}@x.io") for i in range(300)]
    async with sink.open(settings(db)) as writer:
        results: list[int] = []

        async def write() -> None:
            results.append(await writer.write(batch))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(write)
    assert results == [300] * 4
    client: AsyncMongoClient = AsyncMongoClient(service_uri("TEST_MONGO_URI"))
    try:
        coll = client[db]["customers"]
        assert await coll.count_documents({}) == 300
        doc = await coll.find_one({"customer_id": "C00007"}, {"_id": 0})
        assert doc is not None and doc["n"] == 7 and doc["_source"]["correlation_id"] == "cid-7"
    finally:
        await client.close()


@pytest.mark.anyio
async def test_a_conflicting_unique_index_is_a_permanent_refusal_with_mongodb_reason() -> None:
    db = f"refuse_{uuid.uuid4().hex[:8]}"
    client: AsyncMongoClient = AsyncMongoClient(service_uri("TEST_MONGO_URI"))
    try:
        await client[db]["customers"].create_index("email", unique=True)
        sink = MongoSink(MongoSinkParams(key=["customer_id"]))
        async with sink.open(settings(db)) as writer:
            assert await writer.write([record(1, "same@x.io")]) == 1
            with pytest.raises(PermanentSinkError, match="duplicate key"):
                await writer.write([record(2, "same@x.io")])
    finally:
        await client.close()


@pytest.mark.anyio
async def test_a_record_kafka_refuses_is_a_permanent_refusal() -> None:
    from task_components.sinks.kafka import KafkaSink, KafkaSinkParams

    kafka = Settings.model_validate({"kafka": {"bootstrap_servers": service_uri("TEST_KAFKA_BOOTSTRAP")}})
    sink = KafkaSink(KafkaSinkParams(key=["customer_id"], topic=f"refuse-{uuid.uuid4().hex[:8]}"))
    huge = record(1, "x" * 2_000_000 + "@x.io")  # above the producer's 1 MB request limit
    async with sink.open(kafka) as writer:
        with pytest.raises(PermanentSinkError, match="MessageSizeTooLargeError"):
            await writer.write([huge])
