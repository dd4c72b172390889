"""The daemon's ledger and dead letters, read only: a console must never create or change the daemon's table.

PostgreSQL: the table is looked up first (``to_regclass``), so a daemon that never ran shows an empty
ledger, not a table created by a viewer. MongoDB: a plain find. Dead-lettered requests are the tail of
the daemon's dead-letter topic (the last ``DLQ_TAIL`` per partition), read without a consumer group.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import anyio

from config.settings import Settings

__all__ = ["dead_letters", "ledger_rows"]

DLQ_TAIL = 100
MAX_ROWS = 5_000


async def ledger_rows(settings: Settings) -> dict[str, Any]:
    """``{"ledger": where, "rows": [...]}`` newest first, or ``{"ledger": None, "why": ...}`` when none is set."""
    d = settings.daemon
    with anyio.fail_after(15):
        if d.ledger == "mongodb":
            if settings.mongodb.connection_string is None:
                return {"ledger": None, "why": "DAEMON__LEDGER=mongodb but MONGODB__CONNECTION_STRING is not set"}
            rows = await _mongo_rows(settings)
            where = f"mongodb {settings.mongodb.database}.{d.ledger_table}"
        else:
            secret = d.ledger_dsn or settings.postgres.dsn
            if secret is None:
                return {"ledger": None, "why": "no ledger to read: set DAEMON__LEDGER_DSN or POSTGRES__DSN"}
            rows = await _pg_rows(secret.get_secret_value(), d.ledger_table)
            where = f"postgresql table {d.ledger_table}"
    out = []
    for row in rows:
        item = asdict(row)
        item["latency_seconds"] = (
            round(row.started_at - row.created_at, 3) if row.started_at is not None and row.created_at is not None else None
        )
        out.append(item)
    out.sort(key=lambda r: r["created_at"] or 0.0, reverse=True)
    return {"ledger": where, "rows": out}


async def _pg_rows(dsn: str, table: str) -> list[Any]:
    import asyncpg

    from pipeline.daemon.ledger import row_of

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            return []
        # table: the settings pattern allows only [a-z_][a-z0-9_]*, safe to format
        records = await conn.fetch(f"SELECT * FROM {table} ORDER BY created_at DESC LIMIT {MAX_ROWS}")
        return [row_of(r) for r in records]
    finally:
        await conn.close()


async def _mongo_rows(settings: Settings) -> list[Any]:
    from pipeline.daemon.ledger_mongo import row_of
    from task_components.clients import mongo_client, mongo_uri

    client = mongo_client(mongo_uri(settings), tz_aware=True, serverSelectionTimeoutMS=10_000)
    try:
        coll = client[settings.mongodb.database][settings.daemon.ledger_table]
        return [row_of(doc) async for doc in coll.find({}).sort("created_at", -1).limit(MAX_ROWS)]
    finally:
        await client.close()


async def dead_letters(settings: Settings) -> dict[str, Any]:
    """The newest dead-lettered requests with their reason and kind (as the daemon wrote them)."""
    if not settings.kafka.bootstrap_servers:
        return {"topic": None, "why": "KAFKA__BOOTSTRAP_SERVERS is not set", "items": []}
    from aiokafka import TopicPartition

    from task_components.clients import kafka_consumer

    topic = settings.daemon.dead_letter_topic
    with anyio.fail_after(15):
        if topic not in await _topics(settings):  # a daemon that never refused anything has no such topic yet
            return {"topic": topic, "items": []}
    consumer = kafka_consumer(settings, enable_auto_commit=False)
    items: list[dict[str, Any]] = []
    with anyio.fail_after(15):
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in parts]
            if tps:
                consumer.assign(tps)
                ends = await consumer.end_offsets(tps)  # may lag the log's end (Tansu): only where to start
                for tp in tps:
                    consumer.seek(tp, max(0, ends[tp] - DLQ_TAIL))
                items = await _read_to_highwater(consumer, tps)
        finally:
            await _stop(consumer)
    items.sort(key=lambda i: i["timestamp"] or 0, reverse=True)
    return {"topic": topic, "items": items}


async def _stop(consumer: Any) -> None:
    """``consumer.stop()``, minus the CancelledError aiokafka's coordinator raises when no partition was ever
    assigned; a cancellation of this task itself (``cancelling()``) still goes through."""
    import asyncio

    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def _topics(settings: Settings) -> set[str]:
    """The broker's topics, asked without a consumer (aiokafka's consumer, stopped before it was ever assigned a
    partition, raises CancelledError from its coordinator)."""
    from task_components.clients import kafka_admin

    admin = kafka_admin(settings)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _read_to_highwater(consumer: Any, tps: list[Any]) -> list[dict[str, Any]]:
    """Read until every partition's position reaches the high watermark its fetches report."""
    items: list[dict[str, Any]] = []
    empty = 0
    while empty < 3:
        batch = await consumer.getmany(timeout_ms=300)
        for messages in batch.values():
            items.extend(_letter(m) for m in messages)
        empty = 0 if batch else empty + 1
        marks = [consumer.highwater(tp) for tp in tps]
        if all(m is not None for m in marks) and all([await consumer.position(tp) >= m for tp, m in zip(tps, marks, strict=True)]):
            break
    return items


def _letter(message: Any) -> dict[str, Any]:
    try:
        body = json.loads(message.value or b"{}")
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    return {
        "timestamp": message.timestamp / 1000 if message.timestamp else None,
        "request_id": body.get("request_id"),
        "kind": body.get("kind"),
        "reason": str(body.get("reason") or body.get("error") or "")[:500],
    }
