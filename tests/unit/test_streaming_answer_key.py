"""The test-data answer key against the stages exactly as pipelines/streaming.yaml configures them.

Each generated record says, independently of the pipeline code, what must become of it: valid records
must come out equal to their canonical document, each invalid kind must be rejected by the step and rule
the generator names, duplicates must be removed. This checks the per-batch logic of the streaming
pipeline without a broker; the integration tests check the same against real Kafka and MongoDB.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pipeline.registry import build_dag
from pipeline.spec import load_spec
from task_components.contracts import StreamBatch
from task_components.quality import QualityStage
from task_components.sinks.kafka import dead_letter
from task_components.sources.kafka import decode
from task_components.sources.testdata import INVALID_KINDS, records
from task_components.standardization import StandardizeStage

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "streaming.yaml"


class Message(NamedTuple):  # the fields of an aiokafka ConsumerRecord that decode() reads
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def stages() -> list[Any]:
    dag = build_dag(load_spec(PIPELINE, {}), PIPELINE)
    tasks = {t.name: t for t in dag}
    standardize, quality = tasks["standardize"].params, tasks["quality"].params
    return [StandardizeStage(standardize).processor(), QualityStage(quality).processor()]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_generated_record_meets_its_answer_key(seed: int) -> None:
    generated = list(records(3000, invalid_ratio=0.1, duplicate_ratio=0.05, seed=seed))
    processors = stages()
    batches = []
    for start in range(0, len(generated), 100):
        msgs = [Message("in", 0, r.index, r.key.encode(), r.raw, ()) for r in generated[start : start + 100]]
        batch = StreamBatch(start // 100, [decode(m) for m in msgs])
        for p in processors:
            p(batch)
        batches.append(batch)
    out = [rec for b in batches for rec in b.records]
    assert len(out) == len(generated)
    kinds = Counter(g.kind for g in generated)
    assert kinds["duplicate"] > 0 and len(kinds) >= 8, kinds
    for want, got in zip(generated, out, strict=True):
        if want.kind == "valid":
            assert got.rejection is None and not got.duplicate, (want.raw, got.rejection)
            assert got.value == want.expected, want.raw
        elif want.kind == "duplicate":
            assert got.duplicate and got.rejection is None
        else:
            assert got.rejection is not None, (want.kind, want.raw)
            assert (got.rejection.step, got.rejection.rule) == INVALID_KINDS[want.kind], (want.kind, got.rejection)


def test_dead_letter_carries_original_reason_position_and_correlation_id() -> None:
    bad = next(r for r in records(200, pattern="invalid", seed=4) if r.kind == "amount_not_number")
    rec = decode(Message("in", 3, 42, b"k", bad.raw, (("correlation_id", b"cid-1"),)))
    for p in stages():
        p(StreamBatch(0, [rec]))
    key, body, headers = dead_letter(rec)
    doc = json.loads(body)
    assert key == b"k"
    assert json.loads(doc["original"]["text"]) == json.loads(bad.raw)
    assert (doc["step"], doc["rule"]) == ("conversion", "amount") and "cannot convert" in doc["reason"]
    assert doc["source"] == {"topic": "in", "partition": 3, "offset": 42} and doc["correlation_id"] == "cid-1"
    h = dict(headers)
    assert h["correlation_id"] == b"cid-1" and h["dlq.rule"] == b"amount" and h["source.offset"] == b"42"


def test_undecodable_bytes_are_dead_lettered_as_base64() -> None:
    rec = decode(Message("in", 0, 1, None, b"\xff\xfe", ()))
    assert rec.rejection is not None and rec.rejection.step == "decode"
    assert json.loads(dead_letter(rec)[1])["original"] == {"base64": "//4="}


def test_stage_and_sink_steps_and_results_survive_the_state_store_pickle() -> None:
    """Stage and sink tasks are journaled like any result, and their configured steps pickle (a Dask worker
    or a resumed run takes them back unchanged)."""
    import pickle

    from task_components.streaming.flow import StepResult

    dag = build_dag(load_spec(PIPELINE, {}), PIPELINE)
    for t in dag:
        if t.name == "consume":
            continue
        step = t.stage() if hasattr(t, "stage") else t.sink()  # type: ignore[attr-defined]
        again = pickle.loads(pickle.dumps(step))
        assert type(again) is type(step) and again.params.model_dump() == step.params.model_dump(), t.name
    figures = StepResult(batches=3, records=2, written=5, refused=1)
    assert pickle.loads(pickle.dumps(figures)) == figures
    quality = pickle.loads(pickle.dumps(QualityStage({t.name: t for t in dag}["quality"].params)))
    rec = decode(Message("in", 0, 0, None, b'{"amount": 5000, "status": "inactive", "customer_id": "x"}', ()))
    quality.processor()(StreamBatch(0, [rec]))
    assert rec.rejection is not None and rec.rejection.rule == "email_present"
