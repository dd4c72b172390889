"""Plumbing of the daemon tests: one environment per test (topics, group, ledger table, run directory),
daemon processes, producing raw request bytes, reading topics and the ledger, committed offsets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import asyncpg

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4


@dataclass
class DaemonEnv:
    bootstrap: str
    dsn: str
    base: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    extra: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def requests(self) -> str:
        return f"req-{self.tag}"

    @property
    def status(self) -> str:
        return f"st-{self.tag}"

    @property
    def dlq(self) -> str:
        return f"dlq-{self.tag}"

    @property
    def table(self) -> str:
        return f"requests_{self.tag}"

    @property
    def run_dir(self) -> Path:
        return self.base / "runs"

    def environ(self) -> dict[str, str]:
        return {
            **os.environ,
            "LOGGING__FORMAT": "json",
            "KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA__REQUEST_TOPIC": self.requests,
            "KAFKA__STATUS_TOPIC": self.status,
            "DAEMON__DEAD_LETTER_TOPIC": self.dlq,
            "DAEMON__CONSUMER_GROUP": f"group-{self.tag}",
            "DAEMON__LEDGER_TABLE": self.table,
            "DAEMON__HTTP_PORT": "0",
            "DAEMON__SESSION_TIMEOUT_MS": "6000",
            "DAEMON__HEARTBEAT_INTERVAL_MS": "500",
            "DAEMON__LEASE_SECONDS": "3",
            "DAEMON__MAX_REQUEST_BYTES": "20000",
            "POSTGRES__DSN": self.dsn,
            "PIPELINE__RUN_DIR": str(self.run_dir),
            "DAEMON__INLINE_SPECS": "true",  # the tests send inline specs of the default allow-list
            **self.extra,
        }

    def start(self, name: str) -> subprocess.Popen[bytes]:
        with (self.base / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "run_pipeline.py", "daemon"], cwd=ROOT, env=self.environ(), stdout=log, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        """Whatever a failed test left running: only our own processes, by PID."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)

    def owner_prefix(self, proc: subprocess.Popen[bytes]) -> str:
        return f":{proc.pid}:"


def create_topics(env: DaemonEnv, *extra: str) -> None:
    """The env's request, status and dead-letter topics, and ``extra`` ones, each with PARTITIONS partitions."""

    async def go() -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=env.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (env.requests, env.status, env.dlq, *extra)])
        finally:
            await admin.close()

    anyio.run(go)


def produce(
    env: DaemonEnv, messages: list[tuple[bytes | None, bytes | None]], headers: list[tuple[str, bytes]] | None = None
) -> list[tuple[int, int]]:
    """Send (key, value) pairs in order (each with ``headers``); returns where each landed (partition, offset)."""

    async def go() -> list[tuple[int, int]]:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap, enable_idempotence=False, max_request_size=1_048_576)
        await producer.start()
        try:
            futures = [await producer.send(env.requests, value, key=key, headers=headers) for key, value in messages]
            return [((m := await f).partition, m.offset) for f in futures]
        finally:
            await producer.stop()

    return anyio.run(go)


async def _read_all(consumer: Any, tps: list[Any]) -> list[Any]:
    """Everything in ``tps`` up to the fetch high watermark.

    Not ``end_offsets``: Tansu's ListOffsets(latest) can lag behind the log (seen: 13 for a partition holding
    16 records), while the high watermark in fetch responses is right.
    """
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


def read_topic(env: DaemonEnv, topic: str) -> list[Any]:
    async def go() -> list[Any]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=env.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            return await _read_all(consumer, [TopicPartition(topic, p) for p in range(PARTITIONS)])
        finally:
            await consumer.stop()

    return anyio.run(go)


def committed_and_end(env: DaemonEnv) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offset and the log end (fetch high watermark) per request partition."""

    async def go() -> tuple[dict[int, int], dict[int, int]]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=env.bootstrap, group_id=f"group-{env.tag}", enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(env.requests, p) for p in range(PARTITIONS)]
            committed = {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
        finally:
            await consumer.stop()
        reader = AIOKafkaConsumer(bootstrap_servers=env.bootstrap, enable_auto_commit=False)
        await reader.start()
        try:
            await _read_all(reader, tps)
            return committed, {tp.partition: reader.highwater(tp) for tp in tps}
        finally:
            await reader.stop()

    return anyio.run(go)


def ledger_rows(env: DaemonEnv) -> dict[str, dict[str, Any]]:
    if env.extra.get("DAEMON__LEDGER") == "mongodb":
        from pymongo import MongoClient

        with MongoClient(env.extra["MONGODB__CONNECTION_STRING"], serverSelectionTimeoutMS=10_000) as client:
            docs = client[env.extra["MONGODB__DATABASE"]][env.table].find({})
            return {d["_id"]: {**d, "request_id": d["_id"]} for d in docs}

    async def go() -> dict[str, dict[str, Any]]:
        conn = await asyncpg.connect(env.dsn)
        try:
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", env.table):
                return {}
            rows = await conn.fetch(f"SELECT * FROM {env.table}")
            return {r["request_id"]: {**dict(r), "outcome": json.loads(r["outcome"]) if r["outcome"] else None} for r in rows}
        finally:
            await conn.close()

    return anyio.run(go)


def wait_for(what: str, check: Any, timeout: float, every: float = 0.5, why: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}" + (f": {why()}" if why else ""))
        time.sleep(every)


def stories(env: DaemonEnv) -> dict[str, list[dict[str, Any]]]:
    """Status events per request_id, in topic order (one key -> one partition -> one order)."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in sorted(read_topic(env, env.status), key=lambda m: (m.partition, m.offset)):
        out[m.key.decode()].append(json.loads(m.value))
    return out


def check_story(rid: str, events: list[dict[str, Any]]) -> None:
    """accepted first (re-told at most by a takeover, never after a start); then attempts in order, each
    starting with 'started' and counting up; the story ends in succeeded."""
    assert events, f"{rid}: no status events"
    assert events[0]["event"] == "accepted", f"{rid}: first event is {events[0]['event']}, not accepted"
    kinds = [e["event"] for e in events]
    if "started" in kinds:
        assert "accepted" not in kinds[kinds.index("started") :], f"{rid}: accepted after started: {kinds}"
    own = [e for e in events if not e.get("replay") and e["event"] != "accepted"]
    keys = [(e["attempt"], e["seq"]) for e in own]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), f"{rid}: events out of order: {keys}"
    started: set[int] = set()
    for e in own:
        if e["event"] == "started":
            started.add(e["attempt"])
        elif e["attempt"] not in started:
            raise AssertionError(f"{rid}: {e['event']} of attempt {e['attempt']} before its 'started'")
    assert events[-1]["event"] == "succeeded", f"{rid}: story ends in {events[-1]['event']}"
    assert sum(e["event"] == "succeeded" and not e.get("replay") for e in events) <= 1, f"{rid}: succeeded twice"
