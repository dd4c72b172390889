"""The console over a real daemon ledger (PostgreSQL and MongoDB) and the real broker: the ledger's
requests with their states, attempts, lease owners and request -> start latency, the dead-letter
topic's refusals with their reasons, and a form submission arriving on the request topic as the daemon
reads it. The ledger rows are written by the daemon's own ledger classes, as a daemon writes them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipeline.daemon.ledger import PostgresLedger
from pipeline.daemon.ledger_mongo import MongoLedger
from tests.e2e.serve_helpers import console, console_dirs
from tests.integration.conftest import service_uri

TOKEN = "ledger-" + "5eed1e55"


async def _fill(ledger: Any) -> None:
    """One finished request, one running under a lease, one waiting; the hostile id shows as text."""
    await ledger.open()
    try:
        await ledger.accept("req-done", "run-done", "demo", "f1")
        await ledger.claim("req-done", "daemon-a", 30.0)
        await ledger.finish("req-done", "daemon-a", "succeeded", {"reason": "all 5 tasks succeeded"})
        await ledger.accept("req-live", "run-live", "demo", "f2")
        await ledger.claim("req-live", "daemon-b", 30.0)
        await ledger.accept("<b>req-wait</b>", "run-wait", "demo", "f3")
    finally:
        await ledger.close()


async def _send(bootstrap: str, topic: str, value: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, json.dumps(value).encode(), key=b"k")
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(30):
            while not out:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(json.loads(m.value) for m in messages)
    finally:
        await consumer.stop()
    return out


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return console_dirs(tmp_path)


def _check_ledger(body: dict[str, Any]) -> None:
    rows = {r["request_id"]: r for r in body["rows"]}
    assert set(rows) == {"req-done", "req-live", "<b>req-wait</b>"}
    assert rows["req-done"]["state"] == "succeeded" and rows["req-done"]["attempts"] == 1
    assert rows["req-done"]["outcome"] == {"reason": "all 5 tasks succeeded"}
    assert rows["req-live"]["state"] == "running" and rows["req-live"]["owner"] == "daemon-b"
    assert rows["req-live"]["latency_seconds"] is not None and rows["req-live"]["latency_seconds"] >= 0
    assert rows["<b>req-wait</b>"]["state"] == "accepted" and rows["<b>req-wait</b>"]["latency_seconds"] is None


@pytest.mark.parametrize("store", ["postgres", "mongodb"])
def test_the_daemon_page_shows_the_ledger_and_the_dead_letters(store: str, dirs: tuple[Path, Path]) -> None:
    tag = uuid.uuid4().hex[:10]
    bootstrap = service_uri("TEST_KAFKA_BOOTSTRAP")
    env = {"KAFKA__BOOTSTRAP_SERVERS": bootstrap, "DAEMON__DEAD_LETTER_TOPIC": f"dlq-{tag}", "DAEMON__LEDGER_TABLE": f"ledger_{tag}"}
    if store == "postgres":
        dsn = service_uri("TEST_POSTGRES_DSN")
        anyio.run(_fill, PostgresLedger(dsn, f"ledger_{tag}"))
        env["DAEMON__LEDGER_DSN"] = dsn
    else:
        uri = service_uri("TEST_MONGO_URI")
        anyio.run(_fill, MongoLedger(uri, f"db_{tag}", f"ledger_{tag}"))
        env.update({"DAEMON__LEDGER": "mongodb", "MONGODB__CONNECTION_STRING": uri, "MONGODB__DATABASE": f"db_{tag}"})
    letter = {"reason": "params.rows: expected int, got str 'x'", "kind": "bad_params", "request_id": "req-bad"}
    anyio.run(_send, bootstrap, f"dlq-{tag}", letter)
    with console(*dirs, token=TOKEN, **env) as c:
        status, body = c.call("GET", "/api/ledger")
        assert status == 200, body
        _check_ledger(body)
        assert body["dead_letters"]["items"][0] | {"timestamp": None} == {**letter, "timestamp": None}
        page = c.call("GET", "/daemon")[1]
        assert "&lt;b&gt;req-wait&lt;/b&gt;" in page and "<b>req-wait</b>" not in page
        assert 'href="/runs/run-live"' in page and "bad_params" in page and "daemon-b" in page


def test_a_table_the_daemon_never_made_is_an_empty_ledger_and_is_not_created(dirs: tuple[Path, Path]) -> None:
    import asyncpg

    dsn, table = service_uri("TEST_POSTGRES_DSN"), f"ledger_{uuid.uuid4().hex[:10]}"
    with console(*dirs, DAEMON__LEDGER_DSN=dsn, DAEMON__LEDGER_TABLE=table) as c:
        body = c.call("GET", "/api/ledger")[1]
        assert body["rows"] == [] and "postgresql" in body["ledger"]
        assert "KAFKA__BOOTSTRAP_SERVERS" in body["dead_letters"]["why"]
    broker = {"KAFKA__BOOTSTRAP_SERVERS": service_uri("TEST_KAFKA_BOOTSTRAP"), "DAEMON__DEAD_LETTER_TOPIC": f"dlq-none-{table}"}
    with console(*dirs, DAEMON__LEDGER_DSN=dsn, DAEMON__LEDGER_TABLE=table, **broker) as c:
        status, body = c.call("GET", "/api/ledger")  # a daemon that never refused anything has no such topic
        assert status == 200 and body["dead_letters"]["items"] == [] and c.call("GET", "/daemon")[0] == 200

    async def exists() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT to_regclass($1)", table)
        finally:
            await conn.close()

    assert anyio.run(exists) is None


def test_a_daemon_submission_arrives_on_the_request_topic_typed(dirs: tuple[Path, Path]) -> None:
    tag = uuid.uuid4().hex[:10]
    bootstrap = service_uri("TEST_KAFKA_BOOTSTRAP")
    with console(*dirs, token=TOKEN, KAFKA__BOOTSTRAP_SERVERS=bootstrap, KAFKA__REQUEST_TOPIC=f"req-{tag}") as c:
        body = {"pipeline": "demo", "params": {"rows": "5000", "pause": "0.1"}, "via": "daemon"}
        status, answer = c.call("POST", "/api/runs", body, token=TOKEN)
        assert status == 201 and answer["via"] == "daemon", answer
    (request,) = anyio.run(_read_all, bootstrap, f"req-{tag}")
    assert request["request_id"] == answer["request_id"] and request["pipeline"] == "demo"
    assert request["params"] == {"rows": 5000, "pause": 0.1}
