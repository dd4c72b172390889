"""The sinks on the real services: MongoDB upsert races between batches, per-record refusals (the record's,
not the run's), and the MongoDB sink re-creating its unique index after a server restarted without data."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import anyio
import pytest
from pymongo import AsyncMongoClient
from structlog.testing import capture_logs

from config.settings import Settings
from task_components.contracts import StreamRecord
from task_components.sinks.mongo import MongoSink, MongoSinkParams
from task_components.streaming.resilience import RecordsRefused
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration


def answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(i: int, email: str) -> StreamRecord:
    return StreamRecord("in", 0, i, b"", {"customer_id": f"C{i:05d}", "email": email, "n": i}, f"cid-{i}")


def settings(db: str) -> Settings:
    return Settings.model_validate(
        {"mongodb": {"connection_string": service_uri("TEST_MONGO_URI"), "database": db, "collection": "customers"}}
    )


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
async def test_a_conflicting_unique_index_refuses_that_record_and_writes_the_others() -> None:
    db = f"refuse_{uuid.uuid4().hex[:8]}"
    client: AsyncMongoClient = AsyncMongoClient(service_uri("TEST_MONGO_URI"))
    try:
        await client[db]["customers"].create_index("email", unique=True)
        sink = MongoSink(MongoSinkParams(key=["customer_id"]))
        async with sink.open(settings(db)) as writer:
            assert await writer.write([record(1, "same@x.io")]) == 1
            with pytest.raises(RecordsRefused) as refused:
                await writer.write([record(2, "same@x.io"), record(3, "other@x.io")])
        assert refused.value.written == 1
        (one,) = refused.value.refused
        assert one.record.offset == 2 and one.rule == "unique" and "duplicate key" in one.reason
        assert await client[db]["customers"].count_documents({}) == 2
    finally:
        await client.close()


@pytest.mark.anyio
async def test_documents_mongodb_cannot_take_are_refused_one_by_one() -> None:
    db = f"encode_{uuid.uuid4().hex[:8]}"
    batch = [record(i, f"u{i}@x.io") for i in range(6)]
    batch[1].value["quantity"] = 10**400  # type: ignore[index]  # OverflowError in the BSON encoder
    batch[2].value["customer_id"] = {"$gt": ""}  # type: ignore[index]  # an operator, not a key
    batch[3].value["blob"] = "x" * (17 * 1024 * 1024)  # type: ignore[index]  # above 16 MiB
    batch[4].value["customer_id"] = None  # type: ignore[index]
    sink = MongoSink(MongoSinkParams(key=["customer_id"]))
    async with sink.open(settings(db)) as writer:
        with pytest.raises(RecordsRefused) as refused:
            await writer.write(batch)
    rules = {f.record.offset: (f.rule, f.reason) for f in refused.value.refused}
    assert sorted(rules) == [1, 2, 3, 4] and refused.value.written == 2
    assert rules[1][0] == "encode" and "8-byte ints" in rules[1][1]
    assert rules[2][0] == "key" and "not a string or number" in rules[2][1]
    assert rules[3][0] == "too_large" and rules[4][0] == "key"
    client: AsyncMongoClient = AsyncMongoClient(service_uri("TEST_MONGO_URI"))
    try:
        ids = await client[db]["customers"].distinct("customer_id")
        assert sorted(ids) == ["C00000", "C00005"]
    finally:
        await client.close()


@pytest.mark.anyio
async def test_a_record_kafka_refuses_is_dead_lettered_and_the_others_are_written() -> None:
    from task_components.sinks.kafka import KafkaSink, KafkaSinkParams

    kafka = Settings.model_validate({"kafka": {"bootstrap_servers": service_uri("TEST_KAFKA_BOOTSTRAP")}})
    sink = KafkaSink(KafkaSinkParams(key=["customer_id"], topic=f"refuse-{uuid.uuid4().hex[:8]}"))
    huge = record(1, "x" * 2_000_000 + "@x.io")  # above the producer's 1 MB request limit
    async with sink.open(kafka) as writer:
        with pytest.raises(RecordsRefused) as refused:
            await writer.write([record(0, "a@x.io"), huge, record(2, "b@x.io")])
    assert refused.value.written == 2
    (one,) = refused.value.refused
    assert one.record is huge and one.rule == "too_large" and "MessageSizeTooLargeError" in one.reason


@pytest.mark.anyio
async def test_after_an_outage_the_mongodb_sink_recreates_its_lost_unique_index(tmp_path: Path) -> None:
    """Own SecantusDB in memory on a free port: restarted, it comes back with no data and no index."""
    port = free_port()

    def start_store() -> subprocess.Popen[bytes]:
        args = [
            service_uri("TEST_SECANTUSD"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            ":memory:",
            "--log-level",
            "WARNING",
        ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
        deadline = time.monotonic() + 30
        while not answers(port):
            assert time.monotonic() < deadline and proc.poll() is None, "SecantusDB did not start"
            time.sleep(0.1)
        return proc

    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    store = start_store()
    try:
        sink = MongoSink(MongoSinkParams(key=["customer_id"], server_selection_timeout_ms=500))
        conf = Settings.model_validate({"mongodb": {"connection_string": uri, "database": "heal", "collection": "customers"}})
        async with sink.open(conf) as writer:
            assert await writer.write([record(1, "a@x.io")]) == 1
            store.send_signal(signal.SIGTERM)
            store.wait(timeout=30)
            with pytest.raises(Exception, match=r"(?i)timeout|refused|connect"):  # the outage: retried by the source
                await writer.write([record(2, "b@x.io")])
            store = start_store()
            with capture_logs() as logs:
                assert await writer.write([record(2, "b@x.io"), record(3, "c@x.io")]) == 2
            assert [e["event"] for e in logs] == ["mongo_index_recreated"] and logs[0]["log_level"] == "warning"
            with capture_logs() as again:
                assert await writer.write([record(4, "d@x.io")]) == 1
            assert again == [], "the index is checked once after an outage, not on every write"
        client: AsyncMongoClient = AsyncMongoClient(uri)
        try:
            info = await client["heal"]["customers"].index_information()
            assert info["business_key"]["unique"] and info["business_key"]["key"] == [("customer_id", 1)]
        finally:
            await client.close()
    finally:
        store.send_signal(signal.SIGTERM)
        store.wait(timeout=30)


@pytest.mark.anyio
async def test_a_dollar_field_is_that_records_refusal_wherever_it_stands() -> None:
    """pymongo refused a replacement starting with '$' while building the bulk: retried as an outage for ever."""
    db = f"dollar_{uuid.uuid4().hex[:8]}"
    batch = [record(i, f"u{i}@x.io") for i in range(4)]
    batch[1] = StreamRecord("in", 0, 1, b"", {"$where": "sleep(1)", "customer_id": "C00001"}, "cid-1")
    batch[2].value["$set"] = {"n": 0}  # type: ignore[index]  # not first: the driver sends it, the server decides
    sink = MongoSink(MongoSinkParams(key=["customer_id"], server_selection_timeout_ms=2000))
    async with sink.open(settings(db)) as writer:
        with pytest.raises(RecordsRefused) as refused:
            await writer.write(batch)
        assert not writer.suspect, "a refused record is no outage"
    why = {f.record.offset: (f.rule, f.reason) for f in refused.value.refused}
    assert sorted(why) == [1, 2] and refused.value.written == 2
    assert why[1][0] == why[2][0] == "field_name" and "'$where' starts with '$'" in why[1][1]
    client: AsyncMongoClient = AsyncMongoClient(service_uri("TEST_MONGO_URI"))
    try:
        assert sorted(await client[db]["customers"].distinct("customer_id")) == ["C00000", "C00003"]
    finally:
        await client.close()


@pytest.mark.anyio
async def test_true_and_one_are_two_documents() -> None:
    db = f"bools_{uuid.uuid4().hex[:8]}"
    batch = [StreamRecord("in", 0, i, b"", {"customer_id": v, "n": i}, f"cid-{i}") for i, v in enumerate([1, True])]
    async with MongoSink(MongoSinkParams(key=["customer_id"])).open(settings(db)) as writer:
        assert await writer.write(batch) == 2
    client: AsyncMongoClient = AsyncMongoClient(service_uri("TEST_MONGO_URI"))
    try:
        docs = await client[db]["customers"].find({}, {"_id": 0, "_source": 0}).to_list()
        assert sorted(docs, key=lambda d: d["n"]) == [{"customer_id": 1, "n": 0}, {"customer_id": True, "n": 1}]
    finally:
        await client.close()


@pytest.mark.anyio
async def test_an_index_lost_while_idle_is_recreated_at_the_next_check_and_a_failed_recreation_retried() -> None:
    """No outage seen by this writer (a restart while idle): the periodic check finds the index missing."""
    db = f"check_{uuid.uuid4().hex[:8]}"
    sink = MongoSink(MongoSinkParams(key=["customer_id"], index_check_seconds=0.3))
    client: AsyncMongoClient = AsyncMongoClient(service_uri("TEST_MONGO_URI"))
    coll = client[db]["customers"]
    try:
        async with sink.open(settings(db)) as writer:
            assert await writer.write([record(1, "a@x.io")]) == 1
            await coll.drop_index("business_key")
            await anyio.sleep(0.4)
            with capture_logs() as logs:
                assert await writer.write([record(2, "b@x.io")]) == 1
            assert [(e["event"], e["log_level"]) for e in logs] == [("mongo_index_recreated", "warning")]
            assert "business_key" in await coll.index_information()

            await coll.drop_index("business_key")
            await coll.insert_many([{"customer_id": "C00009"}, {"customer_id": "C00009"}])  # no unique index now
            await anyio.sleep(0.4)
            with capture_logs() as failed:
                assert await writer.write([record(3, "c@x.io")]) == 1
            assert [e["event"] for e in failed] == ["mongo_index_recreated", "mongo_index_not_recreated"]
            await coll.delete_many({"customer_id": "C00009"})
            with capture_logs() as early:
                assert await writer.write([record(4, "d@x.io")]) == 1
            assert early == [], "checked every index_check_seconds, not on every write"
            await anyio.sleep(0.4)
            with capture_logs() as retried:
                assert await writer.write([record(5, "e@x.io")]) == 1
            assert [e["event"] for e in retried] == ["mongo_index_recreated"]
        info = await coll.index_information()
        assert info["business_key"]["unique"] and info["business_key"]["key"] == [("customer_id", 1)]
    finally:
        await client.drop_database(db)
        await client.close()
