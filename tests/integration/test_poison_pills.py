"""Poison pills on the real broker (Tansu) and document store (SecantusDB): one bad record never stops the line.

One batch holds every bad kind between valid records: JSON nested 10,000 deep, a tombstone, non-UTF-8
bytes, a record above ``max_record_bytes``, ``quantity`` = 10**400, a value that makes ``(a+)+$``
backtrack for ever under Python's ``re``, a lone surrogate, a record too large for the Kafka sink, an
int MongoDB cannot encode, a key MongoDB cannot index, a first field named ``$where``, a list
as a duplicate key, NaN, a record both sinks refuse... The run must complete, the valid records be in
MongoDB and the sink topic (a record one sink refuses is still written by the other), every bad one in
the dead-letter topic with the step and rule named here, once per refusal (a record both sinks refuse:
two dead letters), and every offset committed. Then: SIGTERM during a slow batch is honoured in seconds, and a broker
restart mid-stream (Tansu on its durable s3:// engine) still ends with the exact MongoDB set.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from task_components.sources import testdata
from task_components.sources.testdata import records
from tests.integration.conftest import service_uri
from tests.integration.durable_broker import DurableTansu
from tests.integration.streaming_helpers import (
    PIPELINE,
    StreamEnv,
    check_sinks,
    committed,
    create_topics,
    produce,
    produce_raw,
    read_topic,
)

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def pipeline_file(tmp_path: Path, extra_rules: list[dict[str, Any]], **consume: Any) -> Path:
    """pipelines/streaming.yaml with extra quality rules and source options (the shipped pipeline otherwise)."""
    spec = yaml.safe_load(PIPELINE.read_text())
    spec["tasks"]["quality"]["with"]["rules"] += extra_rules
    spec["tasks"]["consume"]["with"].update(consume)
    spec["tasks"]["quality"]["with"]["duplicates"]["key"] = ["customer_id", "segment"]  # an untyped key part
    path = tmp_path / "streaming-test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def make_env(tmp_path: Path, pipeline: Path, bootstrap: str | None = None) -> StreamEnv:
    env = StreamEnv(bootstrap or service_uri("TEST_KAFKA_BOOTSTRAP"), service_uri("TEST_MONGO_URI"), tmp_path / "runs", pipeline=pipeline)
    create_topics(env)
    return env


def variant(base: testdata.TestRecord, **changes: Any) -> bytes:
    value = json.loads(base.raw)
    value.update(changes)
    return json.dumps(value).encode()


def dollar_first(base: testdata.TestRecord) -> bytes:
    return json.dumps({"$where": "sleep(100)", **json.loads(base.raw)}).encode()


def matrix(spare: list[testdata.TestRecord]) -> list[tuple[str, bytes, bytes | None, tuple[tuple[str, str], ...]]]:
    """(kind, key, value, (step, rule) of each of its dead letters); ``spare`` gives each a valid body to spoil."""
    long_key = "K" * 2000
    both = variant(spare[8], note="n" * (3 * MIB // 2), extra=10**30)
    return [
        ("deep_json", b"deep", b"[" * 10_000 + b"]" * 10_000, (("decode", "depth"),)),
        ("tombstone", b"gone", None, (("decode", "tombstone"),)),
        ("not_utf8", b"bin", b'{"CustomerID": "\xff\xfe"}', (("decode", "json"),)),
        ("not_an_object", b"list", b"[1, 2]", (("decode", "json"),)),
        ("too_many_digits", b"digits", b'{"quantity": ' + b"9" * 5000 + b"}", (("decode", "json"),)),
        ("above_max_record_bytes", b"big", b'{"x": "' + b"y" * (3 * MIB + 100) + b'"}', (("decode", "size"),)),
        ("nan", b"nan", b'{"CustomerID": "C-NAN", "amount": NaN}', (("decode", "number"),)),
        ("quantity_10_400", spare[0].key.encode(), variant(spare[0], quantity=10**400), (("conversion", "quantity"),)),
        ("backtracking", spare[1].key.encode(), variant(spare[1], code="a" * 32 + "!"), (("quality", "code_format"),)),
        ("lone_surrogate", spare[2].key.encode(), variant(spare[2], code="\ud800"), (("quality", "code_format"),)),
        ("unhashable_key", spare[7].key.encode(), variant(spare[7], segment=["eu"]), (("quality", "duplicates"),)),
        ("too_large_for_kafka", spare[3].key.encode(), variant(spare[3], note="n" * (3 * MIB // 2)), (("sink.kafka", "too_large"),)),
        ("int_beyond_64_bits", spare[4].key.encode(), variant(spare[4], extra=10**30), (("sink.mongodb", "encode"),)),
        ("key_too_long", long_key.encode(), variant(spare[5], CustomerID=long_key), (("sink.mongodb", "key"),)),
        ("dollar_field_first", spare[6].key.encode(), dollar_first(spare[6]), (("sink.mongodb", "field_name"),)),
        ("refused_by_both_sinks", spare[8].key.encode(), both, (("sink.kafka", "too_large"), ("sink.mongodb", "encode"))),
    ]


def test_one_batch_of_poison_pills_between_valid_records(tmp_path: Path) -> None:
    rules = [{"name": "code_format", "type": "pattern", "field": "code", "pattern": "(a+)+$"}]
    env = make_env(tmp_path, pipeline_file(tmp_path, rules, max_record_bytes=3 * MIB))
    generated = list(records(39, pattern="valid", seed=21))
    valid, spare = generated[:30], generated[30:]
    bad = matrix(spare)
    messages: list[tuple[bytes, bytes | None]] = []
    for i, r in enumerate(valid):  # a bad one after every third valid one
        messages.append((r.key.encode(), r.raw))
        if i % 3 == 2 and i // 3 < len(bad):
            messages.append(bad[i // 3][1:3])
    messages += [b[1:3] for b in bad[len(valid) // 3 :]]
    positions = produce_raw(env, messages)
    where = {messages[i][1]: positions[i] for i in range(len(messages)) if messages[i][1] is not None}
    where_tombstone = positions[next(i for i, m in enumerate(messages) if m[1] is None)]

    proc = env.start(f"max_records={len(messages)}", "batch_size=100")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]

    kafka_big = {**spare[3].expected, "note": "n" * (3 * MIB // 2)}  # type: ignore[dict-item]
    docs = env.mongo_docs()
    assert docs == {r.key: r.expected for r in valid} | {spare[3].key: kafka_big}, "MongoDB is not the valid set"

    out = {m.key.decode(): json.loads(m.value) for m in read_topic(env, env.sink)}
    expected_out = {r.key: r.expected for r in valid}
    expected_out[spare[4].key] = {**spare[4].expected, "extra": 10**30}  # type: ignore[dict-item]
    expected_out["K" * 2000] = {**spare[5].expected, "customer_id": "K" * 2000}  # type: ignore[dict-item]
    expected_out[spare[6].key] = {"$where": "sleep(100)", **spare[6].expected}  # type: ignore[dict-item]
    assert out == expected_out, "the sink topic is not the valid set (with what only MongoDB refused)"

    letters: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for m in read_topic(env, env.dlq):
        body = json.loads(m.value)
        letters.setdefault((body["source"]["partition"], body["source"]["offset"]), []).append(body)
        assert len(m.value) < MIB, "a dead letter must fit"
    assert sum(map(len, letters.values())) == sum(len(b[3]) for b in bad), "one dead letter per refusal, no more"
    for kind, _, value, step_rules in bad:
        bodies = letters.pop(where_tombstone if value is None else where[value])
        assert sorted((b["step"], b["rule"]) for b in bodies) == sorted(step_rules), (kind, bodies[0]["reason"])
        for body in bodies:
            assert body["reason"], kind
            if value is not None and len(value) > 65_536:
                original = body["original"]
                assert original["truncated"] and original["size"] == len(value), kind
                assert original["sha256"] == hashlib.sha256(value).hexdigest(), kind
        if kind == "tombstone":
            assert "tombstone" in bodies[0]["reason"]
        if kind == "quantity_10_400":
            assert "64-bit" in bodies[0]["reason"]
        if kind == "nan":
            assert "NaN is not a JSON number" in bodies[0]["reason"]
    assert not letters, f"dead letters of valid records: {letters}"
    (report,) = list(env.run_dir.glob("*/report.json"))
    summary = json.loads(report.read_text())["summary"]["consume"]
    assert summary["refused_by_sinks"] == sum(s[0].startswith("sink.") for b in bad for s in b[3])

    ends: dict[int, int] = {}
    for partition, offset in positions:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    assert {p: o for p, o in committed(env).items() if p in ends} == ends, "not every offset was committed"


def test_sigterm_during_a_slow_batch_is_honoured_within_seconds(tmp_path: Path) -> None:
    """A rule that takes milliseconds a record over a 4,000-record batch: ~25 s of CPU in one batch (a list of
    3,000 took 2.5 s here, so the batch could end before the signal and the test would check nothing)."""
    slow = {"name": "slow", "type": "expression", "expression": "status in [" + ", ".join(f"'s{i}'" for i in range(30_000)) + ", status]"}
    env = make_env(tmp_path, pipeline_file(tmp_path, [slow]))
    generated = list(records(4000, pattern="valid", seed=22))
    produce_raw(env, [(r.key.encode(), r.raw) for r in generated])
    proc = env.start("batch_size=4000", "max_in_flight=1", "max_records=4000")
    lines: list[str] = []
    outs: list[str] = []
    # Each pipe has exactly one reader: communicate() beside a thread on stderr closed the file under the thread.
    readers = [
        threading.Thread(target=lines.extend, args=(proc.stderr,), daemon=True),
        threading.Thread(target=outs.extend, args=(proc.stdout,), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 60
    while not any('"partitions_assigned"' in line for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, "the pipeline never joined its group"
        time.sleep(0.05)
    time.sleep(3)  # fetched (well under a second) and deep inside the batch's rules
    assert proc.poll() is None and env.mongo_count() == 0, "the batch was not slow"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    took = time.monotonic() - sent
    for reader in readers:
        reader.join(5)
    for pipe in (proc.stdout, proc.stderr):
        assert pipe is not None
        pipe.close()
    out = "".join(outs)
    assert proc.returncode == 130, "".join(lines)[-2000:]
    assert took < 5, f"SIGTERM took {took:.1f}s to be honoured"
    (report,) = list(env.run_dir.glob("*/report.json"))
    body = json.loads(report.read_text())
    assert (body["state"], body["reason"]) == ("cancelled", "interrupted by SIGTERM")
    assert f"resume with: --resume {body['run_id']}" in out
    assert committed(env) == dict.fromkeys(range(4), 0) and env.mongo_count() == 0, "the batch never finished"


def test_a_broker_restart_mid_stream_ends_with_the_exact_mongodb_set(tmp_path: Path) -> None:
    """Tansu of its own on the durable s3:// engine, SIGKILLed mid-stream and started again on its port."""
    broker = DurableTansu(tmp_path)
    broker.start()
    try:
        env = make_env(tmp_path, PIPELINE, bootstrap=broker.bootstrap)
        generated = list(records(4000, invalid_ratio=0.1, duplicate_ratio=0.03, seed=23))
        valid = sum(r.kind == "valid" for r in generated)
        positions = produce(env, generated)
        proc = env.start("batch_size=50", "max_in_flight=2", "idle_seconds=10")
        deadline = time.monotonic() + 120
        while mongo_count(env) < 800:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        broker.stop(signal.SIGKILL)
        at_kill = mongo_count(env)
        time.sleep(2)
        assert proc.poll() is None, "the pipeline must wait for the broker, not end"
        broker.start()
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        assert at_kill < valid, "the broker was not stopped mid-stream"
        figures = check_sinks(env, generated, positions)
        print(f"\nafter a broker restart at {at_kill} documents: {figures}")
    finally:
        broker.stop(signal.SIGTERM)


def mongo_count(env: StreamEnv) -> int:
    try:
        return env.mongo_count()
    except Exception:  # noqa: BLE001 - the database may not exist yet
        return 0
