"""Reloading the quality rules of a running streaming pipeline, on the real broker and document store.

One run of ``pipelines/streaming.yaml`` whose quality rules live in a watched file, three phases of
records: the first under the shipped rules, then the file is replaced (one rule changed, one added)
and the second phase must follow the new rules, then the file is replaced by a broken one (an unknown
rule type) and the third phase must still follow the second phase's rules. Each phase is produced only
once the previous one is committed, so which rules each record met is known. The sinks are checked
against the test-data answer key with the rules applied here, never against the pipeline's own output:
every record lands exactly once (MongoDB and the sink topic by key, the dead-letter topic by position).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from task_components.sources import testdata
from task_components.sources.testdata import INVALID_KINDS, records
from tests.integration.conftest import service_uri
from tests.integration.streaming_helpers import PIPELINE, ROOT, Position, StreamEnv, committed, create_topics, produce, read_topic

pytestmark = pytest.mark.integration

PHASE = 400  # records per phase
NEW_RULES = {"amount_range": 3000.0, "quantity_small": 10}  # amount_range's new max, the added rule's max


def write_atomically(path: Path, text: str) -> None:
    """How the docs say to replace a watched file: write beside it, rename over it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def reloading_pipeline(tmp_path: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """streaming.yaml with the quality rules moved to a file (max_invalid_share stays in ``with:``)."""
    spec = yaml.safe_load(PIPELINE.read_text())
    quality = spec["tasks"]["quality"]["with"]
    rules: list[dict[str, Any]] = quality.pop("rules")
    rules_file = tmp_path / "quality.yaml"
    write_atomically(rules_file, yaml.safe_dump({"rules": rules}))
    quality["config_file"] = str(rules_file)
    pipeline = tmp_path / "streaming_reload.yaml"
    pipeline.write_text(yaml.safe_dump(spec, sort_keys=False))
    return pipeline, rules_file, rules


def amount(r: testdata.TestRecord) -> float:
    """The amount of an invalid record's message, as the pipeline converts it ("$1,234.50", 12.5, "7")."""
    return float(str(json.loads(r.raw)["amount"]).replace("$", "").replace(",", ""))


def verdict(r: testdata.TestRecord, new_rules: bool) -> tuple[str, str] | None:
    """Where the answer key says a record goes: None for MongoDB, else the dead letter's (step, rule)."""
    if not r.valid:  # a record failing a rule after amount_range meets amount_range's new max first
        late = r.kind in ("bad_status", "big_inactive") and amount(r) > NEW_RULES["amount_range"]
        return ("quality", "amount_range") if new_rules and late else INVALID_KINDS[r.kind]
    assert r.expected is not None
    if new_rules and r.expected["amount"] > NEW_RULES["amount_range"]:
        return ("quality", "amount_range")
    if new_rules and r.expected["quantity"] > NEW_RULES["quantity_small"]:
        return ("quality", "quantity_small")
    return None


def wait_committed(env: StreamEnv, proc: subprocess.Popen[str], positions: dict[int, Position], log: Path) -> None:
    """Until every produced record is committed: every stage finished its batch, under the rules of then."""
    ends: dict[int, int] = {}
    for partition, offset in positions.values():
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"pipeline ended early: {log.read_text()[-3000:]}"
        done = committed(env)
        if all(done[p] >= end for p, end in ends.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"records never committed: {committed(env)} < {ends}")


def events(log: Path, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("event") == name]


def test_quality_rules_reloaded_mid_stream_every_record_once(tmp_path: Path) -> None:
    pipeline, rules_file, rules = reloading_pipeline(tmp_path)
    env = StreamEnv(service_uri("TEST_KAFKA_BOOTSTRAP"), service_uri("TEST_MONGO_URI"), tmp_path, pipeline=pipeline)
    create_topics(env)
    generated = list(records(3 * PHASE, invalid_ratio=0.1, seed=26))
    phases = [generated[i * PHASE : (i + 1) * PHASE] for i in range(3)]
    log = tmp_path / "run.log"
    sets = ("batch_size=50", "max_in_flight=4", "max_invalid_share=1.0", f"max_records={3 * PHASE}")
    with log.open("w") as err:
        proc = subprocess.Popen(env.command(*sets), cwd=ROOT, env=env.environ(), text=True, stdout=subprocess.DEVNULL, stderr=err)
    try:
        positions = produce(env, phases[0])
        wait_committed(env, proc, positions, log)

        changed = [{**r, "max": NEW_RULES["amount_range"]} if r["name"] == "amount_range" else r for r in rules]
        added = {"name": "quantity_small", "type": "range", "field": "quantity", "max": NEW_RULES["quantity_small"]}
        write_atomically(rules_file, yaml.safe_dump({"rules": [*changed, added]}))
        positions |= produce(env, phases[1])
        wait_committed(env, proc, positions, log)

        broken = [*changed, added, {"name": "typo", "type": "no_such_rule", "field": "amount"}]
        write_atomically(rules_file, yaml.safe_dump({"rules": broken}))
        positions |= produce(env, phases[2])
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]

    reloaded = [e for e in events(log, "stage_config_reloaded") if e["task"] == "quality"]
    assert len(reloaded) == 1 and reloaded[0]["file"] == str(rules_file), reloaded
    assert reloaded[0]["changed"] == ["rules.amount_range.max: 10000.0 -> 3000.0"]
    assert reloaded[0]["added"] == ["rules.quantity_small"] and reloaded[0]["removed"] == []
    refused = events(log, "stage_config_refused")
    assert len(refused) == 1 and refused[0]["file"] == str(rules_file), refused
    assert "rules.8" in refused[0]["fault"] and "no_such_rule" in refused[0]["fault"], refused[0]

    expect = {r.index: verdict(r, new_rules=r.index >= PHASE) for r in generated}
    valid = {r.key: r.expected for r in generated if expect[r.index] is None}
    assert any(r.expected and r.expected["amount"] > 3000 for r in phases[0] if r.valid), "no record meets only the old rule"
    docs = env.mongo_docs()
    assert docs == valid, f"MongoDB: {len(set(valid) - set(docs))} missing, {len(set(docs) - set(valid))} extra"
    out = Counter(m.key.decode() for m in read_topic(env, env.sink))
    assert set(out) == set(valid) and set(out.values()) == {1}, "sink topic: a record lost or written twice"

    dead = Counter()
    rules_seen: dict[Position, tuple[str, str]] = {}
    for m in read_topic(env, env.dlq):
        body = json.loads(m.value)
        where = (body["source"]["partition"], body["source"]["offset"])
        dead[where] += 1
        rules_seen[where] = (body["step"], body["rule"])
    assert set(dead.values()) == {1}, "a record dead-lettered twice"
    wanted = {positions[i]: why for i, why in expect.items() if why is not None}
    assert rules_seen == wanted, [(i, rules_seen.get(positions[i]), w) for i, w in expect.items() if rules_seen.get(positions[i]) != w][:5]
