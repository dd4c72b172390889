"""dataset.events on the real broker: every new fact row arrives once as an envelope, in event-time order
per key, oversize events are dead-lettered with the reason, and an incremental run sends only its new days."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest

from config.settings import Settings
from pipeline.runner import RunOptions, execute, prepare_spec
from pipeline.spec import PipelineSpec
from task_components.datasets import get_pack, pack_tasks
from tests.integration.conftest import service_uri
from tests.integration.daemon_helpers import DaemonEnv, read_topic
from tests.unit.datasets_helpers import SMALL, fact

pytestmark = pytest.mark.timeout(300)
TABLES = ["receipts", "online_orders", "truck_moves"]


def _run(config: dict[str, Any], events: dict[str, Any], run_dir: Path, bootstrap: str) -> dict[str, Any]:
    tasks = pack_tasks(get_pack("retail"), config)
    tasks["events"] = {"uses": "dataset.events", "needs": ["receipts", "online_orders", "store_inventory"], "with": events}
    tasks["commit"]["needs"].append("events")  # the state advances only once the new days are published
    spec = PipelineSpec.model_validate({"name": "retail-events", "tasks": tasks})
    options = RunOptions(run_dir=run_dir)
    prepared = prepare_spec(spec, "<retail-events>", {}, options)
    settings = Settings.model_validate({"kafka": {"bootstrap_servers": bootstrap}})
    result = anyio.run(lambda: execute(prepared, settings, options, handle_signals=False))
    assert result.ok, {n: t.get("error") for n, t in result.to_dict()["tasks"].items()}
    return result.to_dict() | {"events": result.results["events"]}


def test_new_fact_days_become_ordered_envelopes_and_oversize_ones_dead_letters(tmp_path: Path) -> None:
    bootstrap = service_uri("TEST_KAFKA_BOOTSTRAP")
    tag = uuid.uuid4().hex[:8]
    env = DaemonEnv(bootstrap, "", tmp_path)
    topic, dlq = f"ev-{tag}", f"ev-dlq-{tag}"
    config = {**SMALL, "out": str(tmp_path / "data"), "start_date": "2024-05-01", "days": 2}
    events = {
        "tables": TABLES,
        "event_types": "table",  # one retail.<table> event per row (lifecycle events: test_retail_modes.py)
        "topic": topic,
        "dead_letter_topic": dlq,
        "rate": 4000,
        "burst_factor": 3,
        "burst_every": 1.0,
        "burst_seconds": 0.2,
        "max_event_bytes": 440,
    }
    first = _run(config, events, tmp_path / "runs", bootstrap)["events"]
    second = _run({**config, "days": 1}, events, tmp_path / "runs", bootstrap)["events"]  # continues on 05-03
    assert first.days == ["2024-05-01", "2024-05-02"] and second.days == ["2024-05-03"]

    out = tmp_path / "data"
    expected = sum(fact(out, t).height for t in TABLES)
    sent = [json.loads(m.value) for m in _read(env, topic)]
    dead = [json.loads(m.value) for m in _read(env, dlq)]
    assert len(sent) == first.sent + second.sent and len(dead) == first.dead_lettered + second.dead_lettered
    assert len(sent) + len(dead) == expected, "every fact row is sent or dead-lettered, once"
    traces = [e["trace_id"] for e in sent] + [d["trace_id"] for d in dead]
    assert len(set(traces)) == len(traces), "a trace id repeated: some row went out twice"
    assert dead and all("max_event_bytes" in d["reason"] and len(d["event"].encode()) > 440 for d in dead)
    assert all(len(json.dumps(e, separators=(",", ":")).encode()) <= 460 for e in sent)
    for e in sent:
        assert {"event_type", "trace_id", "event_timestamp", "ingest_timestamp", "schema_version", "source", "payload"} <= set(e)
    receipts = {r["receipt_id"]: r["total_cents"] for r in fact(out, "receipts").to_dicts()}
    got = {e["payload"]["receipt_id"]: e["payload"]["total_cents"] for e in sent if e["event_type"] == "retail.receipts"}
    assert got and all(receipts[k] == v for k, v in got.items())


def _read(env: DaemonEnv, topic: str) -> list[Any]:
    messages = read_topic(env, topic)
    by_key: dict[bytes, list[str]] = defaultdict(list)
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        value = json.loads(m.value)
        by_key[m.key].append(value.get("event_timestamp") or json.loads(value["event"])["event_timestamp"])
    for key, stamps in by_key.items():
        assert stamps == sorted(stamps), f"events of key {key!r} out of event-time order"
    return messages
