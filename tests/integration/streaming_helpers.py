"""Shared plumbing of the streaming integration tests: topics, producing, reading, checking the sinks.

The checks compare the sinks with the test-data answer key (``TestRecord.expected`` and the invalid
kind of each record), never with the pipeline's own output, so they can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pymongo import MongoClient

from task_components.sources.testdata import INVALID_KINDS, TestRecord

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipelines" / "streaming.yaml"
PARTITIONS = 4
Position = tuple[int, int]


@dataclass
class StreamEnv:
    bootstrap: str
    mongo_uri: str
    run_dir: Path
    tag: str = ""
    pipeline: Path = PIPELINE

    def __post_init__(self) -> None:
        self.tag = self.tag or uuid.uuid4().hex[:10]

    @property
    def source(self) -> str:
        return f"in-{self.tag}"

    @property
    def sink(self) -> str:
        return f"out-{self.tag}"

    @property
    def dlq(self) -> str:
        return f"dlq-{self.tag}"

    def environ(self) -> dict[str, str]:
        return {
            **os.environ,
            "LOGGING__FORMAT": "json",
            "KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA__TOPIC_SOURCE": self.source,
            "KAFKA__TOPIC_SINK": self.sink,
            "KAFKA__DEAD_LETTER_TOPIC": self.dlq,
            "KAFKA__CONSUMER_GROUP": f"group-{self.tag}",
            "MONGODB__CONNECTION_STRING": self.mongo_uri,
            "MONGODB__DATABASE": f"db_{self.tag}",
            "MONGODB__COLLECTION": "customers",
            "PIPELINE__RETRY_DELAY_SECONDS": "0.5",
        }

    def command(self, *sets: str) -> list[str]:
        args = [sys.executable, "run_pipeline.py", "run", str(self.pipeline), "--no-progress"]
        args += ["--run-dir", str(self.run_dir)]
        for s in ("session_timeout_ms=2000", "heartbeat_interval_ms=500", *sets):
            args += ["--set", s]
        return args

    def start(self, *sets: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*sets), cwd=ROOT, env=self.environ(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def mongo_docs(self) -> dict[str, dict[str, Any]]:
        with MongoClient(self.mongo_uri, serverSelectionTimeoutMS=10_000) as client:
            coll = client[f"db_{self.tag}"]["customers"]
            return {d["customer_id"]: d for d in coll.find({}, {"_id": 0, "_source": 0})}

    def mongo_count(self) -> int:
        with MongoClient(self.mongo_uri, serverSelectionTimeoutMS=2_000) as client:
            return client[f"db_{self.tag}"]["customers"].count_documents({})


async def _create_topics(env: StreamEnv) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=env.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (env.source, env.sink, env.dlq)])
    finally:
        await admin.close()


def create_topics(env: StreamEnv) -> None:
    anyio.run(_create_topics, env)


async def _produce(env: StreamEnv, generated: list[TestRecord]) -> dict[int, Position]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap, linger_ms=5, enable_idempotence=False)
    await producer.start()
    try:
        futures = [
            (r.index, await producer.send(env.source, r.raw, key=r.key.encode(), headers=[("correlation_id", f"cid-{r.index}".encode())]))
            for r in generated
        ]
        positions = {}
        for index, fut in futures:
            meta = await fut
            positions[index] = (meta.partition, meta.offset)
        return positions
    finally:
        await producer.stop()


async def _produce_raw(env: StreamEnv, messages: list[tuple[bytes, bytes | None]]) -> list[Position]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap, linger_ms=5, enable_idempotence=False, max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        futures = [
            await producer.send(env.source, value, key=key, headers=[("correlation_id", b"cid-%d" % i)])
            for i, (key, value) in enumerate(messages)
        ]
        return [((meta := await f).partition, meta.offset) for f in futures]
    finally:
        await producer.stop()


def produce_raw(env: StreamEnv, messages: list[tuple[bytes, bytes | None]]) -> list[Position]:
    """Send (key, value) pairs as they are (a None value is a tombstone, values up to 16 MiB), in order."""
    return anyio.run(_produce_raw, env, messages)


def produce(env: StreamEnv, generated: list[TestRecord]) -> dict[int, Position]:
    """Send the records; returns where each landed (partition, offset), for the dead-letter check."""
    return anyio.run(_produce, env, generated)


async def _read(env: StreamEnv, topic: str) -> list[Any]:
    """Everything in the topic up to the fetch high watermark (not ``end_offsets``: Tansu's ListOffsets lags)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    mib = 1024 * 1024
    consumer = AIOKafkaConsumer(
        bootstrap_servers=env.bootstrap, enable_auto_commit=False, fetch_max_bytes=64 * mib, max_partition_fetch_bytes=16 * mib
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        with anyio.fail_after(60):
            while True:
                for msgs in (await consumer.getmany(timeout_ms=300)).values():
                    out.extend(msgs)
                marks = [consumer.highwater(tp) for tp in tps]
                if all(m is not None for m in marks) and all([await consumer.position(tp) >= m for tp, m in zip(tps, marks, strict=True)]):
                    return out
    finally:
        await consumer.stop()


def read_topic(env: StreamEnv, topic: str) -> list[Any]:
    return anyio.run(_read, env, topic)


async def _committed(env: StreamEnv) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=env.bootstrap, group_id=f"group-{env.tag}", enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(env.source, p))) or 0 for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


def committed(env: StreamEnv) -> dict[int, int]:
    """The pipeline group's committed offsets per source partition (``consumer.committed``: no admin call on Tansu)."""
    return anyio.run(_committed, env)


def check_committed_prefix(env: StreamEnv, generated: list[TestRecord], positions: dict[int, Position]) -> int:
    """Every valid record below the committed offsets is in MongoDB, every invalid one in the dead-letter topic."""
    offsets = committed(env)
    below = [r for r in generated if positions[r.index][1] < offsets[positions[r.index][0]]]
    docs = env.mongo_docs()
    missing = [r.key for r in below if r.kind == "valid" and docs.get(r.key) != r.expected]
    assert not missing, f"{len(missing)} committed valid records are not in MongoDB, e.g. {missing[0]}"
    dead = {(json.loads(m.value)["source"]["partition"], json.loads(m.value)["source"]["offset"]) for m in read_topic(env, env.dlq)}
    lost = [r.index for r in below if not r.valid and positions[r.index] not in dead]
    assert not lost, f"{len(lost)} committed invalid records are not in the dead-letter topic"
    return len(below)


def check_sinks(env: StreamEnv, generated: list[TestRecord], positions: dict[int, Position]) -> dict[str, int]:
    """Assert MongoDB, the sink topic and the dead-letter topic against the answer key; returns figures."""
    expected = {r.key: r.expected for r in generated if r.kind == "valid"}
    docs = env.mongo_docs()
    assert set(docs) - set(expected) == set(), "MongoDB holds documents that are not valid records"
    assert set(expected) - set(docs) == set(), f"{len(set(expected) - set(docs))} valid records missing in MongoDB"
    wrong = [k for k, doc in expected.items() if docs[k] != doc]
    assert not wrong, f"{len(wrong)} documents differ, e.g. {wrong[0]}: {docs[wrong[0]]} != {expected[wrong[0]]}"

    out = read_topic(env, env.sink)
    keys = Counter(m.key.decode() for m in out)
    assert set(keys) == set(expected), "sink topic keys differ from the valid set"
    assert all(json.loads(m.value) == expected[m.key.decode()] for m in out), "a sink message differs from its record"
    lost_ids = [m for m in out if not dict(m.headers)["correlation_id"].startswith(b"cid-")]
    assert not lost_ids, "a sink message lost its correlation id"

    dead = read_topic(env, env.dlq)
    by_position = {}
    for m in dead:
        body = json.loads(m.value)
        assert body["source"]["topic"] == env.source
        by_position[(body["source"]["partition"], body["source"]["offset"])] = (body, dict(m.headers))
    invalid = [r for r in generated if not r.valid]
    assert len(by_position) == len(invalid), "dead letters are not exactly the invalid records"
    for r in invalid:
        body, headers = by_position[positions[r.index]]  # KeyError: an invalid record is missing
        assert (body["step"], body["rule"]) == INVALID_KINDS[r.kind], (r.kind, body)
        assert body["reason"] and headers["dlq.reason"].decode() == body["reason"][:1000]
        assert body["original"]["text"].encode() == r.raw
        assert body["correlation_id"] == headers["correlation_id"].decode() == f"cid-{r.index}"
    return {
        "mongo": len(docs),
        "sink_messages": len(out),
        "sink_duplicates": len(out) - len(keys),
        "dead_letters": len(dead),
        "dead_letter_duplicates": len(dead) - len(by_position),
    }
