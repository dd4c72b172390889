"""sink.milvus on the real Milvus server (2.3 standalone), in the streaming pipeline pipelines/streaming_milvus.yaml
run as a real CLI process on the real broker, and its writer alone.

Records carry a business key (``doc_id``), a version, a title and an 8-d embedding; each key comes in several
versions, some of them bad (no embedding, a null one, too few or too many numbers). After a SIGKILL mid-stream
and a restart, Milvus must hold exactly the answer key: every key with a good version once (count(*) == distinct
keys == keys expected), with its latest good version; and every bad record must be in the dead-letter topic
with step sink.milvus and a reason naming the field, the collection's dimension and what came. CI kills once,
at a fixed point of a fixed seed; ``KILL_MATRIX=full`` adds other points and a second kill before the restart.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from task_components.contracts import StreamRecord
from task_components.sinks.milvus import MilvusSink, MilvusSinkParams
from task_components.streaming.resilience import RecordsRefused
from tests.integration.conftest import service_uri
from tests.integration.streaming_helpers import ROOT, StreamEnv, committed, create_topics, produce_raw, read_topic

pytestmark = pytest.mark.integration

DIM = 8
KEYS, MESSAGES = 150, 900
BAD = {"missing": 0.04, "null": 0.03, "short": 0.04, "long": 0.03}  # share of each bad kind among the messages
PIPELINE = ROOT / "pipelines" / "streaming_milvus.yaml"
FULL = pytest.mark.skipif(os.environ.get("KILL_MATRIX") != "full", reason="the full kill set runs with KILL_MATRIX=full")


@dataclass(frozen=True)
class Doc:
    """One message and what the answer key says of it: ``kind`` is "good" or a bad kind of BAD."""

    key: str
    version: int
    kind: str
    body: dict[str, Any]


def documents(seed: int) -> list[Doc]:
    """MESSAGES versions of KEYS documents, in production order; embeddings of k/256 (exact in float32)."""
    rng = random.Random(seed)
    versions: dict[str, int] = {}
    out = []
    for _ in range(MESSAGES):
        key = f"D{rng.randrange(KEYS):04d}"
        version = versions[key] = versions.get(key, 0) + 1
        roll, kind = rng.random(), "good"
        for bad, share in BAD.items():
            roll -= share
            if roll < 0:
                kind = bad
                break
        size = {"short": DIM - 3, "long": DIM + 2}.get(kind, DIM)
        body: dict[str, Any] = {"id": key, "title": f"  doc {key} v{version} ", "version": version}
        if kind != "missing":
            body["embedding"] = None if kind == "null" else [rng.randrange(-1024, 1024) / 256 for _ in range(size)]
        out.append(Doc(key, version, kind, body))
    return out


def expected_rows(docs: list[Doc]) -> dict[str, dict[str, Any]]:
    """Per key, its latest good version as Milvus must hold it (doc_id renamed, title trimmed by the stages)."""
    rows = {}
    for d in docs:
        if d.kind == "good":
            rows[d.key] = {"doc_id": d.key, "title": d.body["title"].strip(), "version": d.version, "embedding": d.body["embedding"]}
    return rows


class MilvusStreamEnv(StreamEnv):
    """The streaming helpers' topics and group, the Milvus server, and a collection of this test's own."""

    @property
    def collection(self) -> str:
        return f"stream_{self.tag}"

    def environ(self) -> dict[str, str]:
        return {**super().environ(), "MILVUS__URI": service_uri("TEST_MILVUS_URI")}

    def start(self, *sets: str) -> subprocess.Popen[str]:
        return super().start(f"collection={self.collection}", f"dimension={DIM}", *sets)


def client() -> Any:
    from pymilvus import MilvusClient

    return MilvusClient(uri=service_uri("TEST_MILVUS_URI"))


def milvus_count(c: Any, env: MilvusStreamEnv) -> int:
    from pymilvus.client.types import LoadState

    if not c.has_collection(env.collection) or c.get_load_state(env.collection)["state"] != LoadState.Loaded:
        return 0  # the sink is still creating it
    query = c.query(env.collection, filter="", output_fields=["count(*)"], consistency_level="Eventually")  # Strong waits ~200 ms
    return int(query[0]["count(*)"])


def milvus_rows(env: MilvusStreamEnv) -> tuple[int, list[dict[str, Any]]]:
    """count(*) and every row (key, version, title, embedding), both read with Strong consistency."""
    c = client()
    try:
        count = int(c.query(env.collection, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"])
        fields = ["doc_id", "version", "title", "embedding"]
        rows = c.query(env.collection, filter='doc_id != ""', output_fields=fields, limit=16_384, consistency_level="Strong")
        return count, [{f: (list(r[f]) if f == "embedding" else r.get(f)) for f in fields} for r in rows]
    finally:
        c.close()


def check_milvus(env: MilvusStreamEnv, docs: list[Doc], where: str) -> None:
    expected = expected_rows(docs)
    count, rows = milvus_rows(env)
    keys = [r["doc_id"] for r in rows]
    assert count == len(rows) == len(set(keys)) == len(expected), (
        f"{where}: count(*) {count}, rows {len(rows)}, distinct keys {len(set(keys))}, expected {len(expected)}"
    )
    wrong = [r for r in rows if r != expected.get(r["doc_id"])]
    assert not wrong, f"{where}: {len(wrong)} rows are not the latest good version, e.g. {wrong[0]} != {expected.get(wrong[0]['doc_id'])}"


def check_dead_letters(env: MilvusStreamEnv, docs: list[Doc], positions: list[tuple[int, int]], where: str) -> int:
    bad = {positions[i]: d for i, d in enumerate(docs) if d.kind != "good"}
    letters = [json.loads(m.value) for m in read_topic(env, env.dlq)]
    seen = {(b["source"]["partition"], b["source"]["offset"]): b for b in letters}
    assert set(seen) == set(bad), f"{where}: dead letters at {sorted(set(seen) ^ set(bad))[:5]}... are not exactly the bad records"
    reasons = {
        "missing": "embedding is missing, the collection's dimension is 8",
        "null": "embedding is null, the collection's dimension is 8",
        "short": "embedding has 5 numbers, the collection's dimension is 8",
        "long": "embedding has 10 numbers, the collection's dimension is 8",
    }
    for position, d in bad.items():
        body = seen[position]
        assert (body["step"], body["rule"], body["reason"]) == ("sink.milvus", "row", reasons[d.kind]), (where, d, body)
        assert json.loads(body["original"]["text"]) == d.body
    return len(letters)


def wait_for_rows(env: MilvusStreamEnv, proc: subprocess.Popen[str], at_least: int, timeout: float = 60) -> int:
    c = client()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"pipeline ended early: {proc.communicate()[1][-2000:]}"
            count = milvus_count(c, env)
            if count >= at_least:
                return count
            time.sleep(0.02)
        raise AssertionError(f"Milvus never reached {at_least} rows")
    finally:
        c.close()


def kill_and_restart(tmp_path: Path, seed: int, kill_at: list[float]) -> None:
    """Produce, then for each fraction in ``kill_at`` run the pipeline and SIGKILL it once Milvus holds that
    share of the expected keys; then run it to the end (quiet for 3 s) and check both sides."""
    env = MilvusStreamEnv(service_uri("TEST_KAFKA_BOOTSTRAP"), "mongodb://unused", tmp_path, pipeline=PIPELINE)
    create_topics(env)
    docs = documents(seed)
    positions = produce_raw(env, [(d.key.encode(), json.dumps(d.body).encode()) for d in docs])
    try:
        _kill_and_restart(env, docs, positions, kill_at, f"seed {seed}, kills at {kill_at}")
    finally:
        c = client()
        c.drop_collection(env.collection)
        c.close()


def _kill_and_restart(env: MilvusStreamEnv, docs: list[Doc], positions: list[tuple[int, int]], kill_at: list[float], where: str) -> None:
    keys = len(expected_rows(docs))
    for share in kill_at:
        run = env.start("batch_size=5", "max_in_flight=3")
        try:
            at = wait_for_rows(env, run, int(keys * share))
        finally:
            run.send_signal(signal.SIGKILL)  # also when the wait failed: no pipeline outlives the test
            run.communicate(timeout=10)
        assert run.returncode == -signal.SIGKILL
        done = sum(committed(env).values())
        assert done < MESSAGES, f"{where}: the run at {at} rows had committed all {MESSAGES} messages: not mid-stream"
        where += f"; killed at {at} rows, {done} committed"
    last = env.start("idle_seconds=3")
    try:
        out, err = last.communicate(timeout=120)
    finally:
        if last.poll() is None:
            last.kill()
            last.communicate()
    assert last.returncode == 0, f"{where}: exit {last.returncode}\n{out[-2000:]}\n{err[-3000:]}"
    assert sum(committed(env).values()) == MESSAGES, where
    letters = check_dead_letters(env, docs, positions, where)
    check_milvus(env, docs, where)
    print(f"\n{where}: {keys} keys exact in Milvus, {letters} dead letters for {sum(d.kind != 'good' for d in docs)} bad records")


def test_sigkill_mid_stream_then_restart_leaves_the_exact_set_in_milvus(tmp_path: Path) -> None:
    kill_and_restart(tmp_path, seed=41, kill_at=[0.2])


@pytest.mark.slow
@FULL
@pytest.mark.parametrize("kill_at", [[0.05], [0.6], [0.75], [0.2, 0.5]], ids=str)
def test_kill_matrix(tmp_path: Path, kill_at: list[float]) -> None:
    kill_and_restart(tmp_path, seed=42 + int(kill_at[0] * 100), kill_at=kill_at)


def record(offset: int, key: str, version: int) -> StreamRecord:
    value = {"doc_id": key, "version": version, "embedding": [float(version)] * 4}
    return StreamRecord("in", 0, offset, b"", value, f"cid-{offset}")


def sink(name: str, **params: Any) -> MilvusSink:
    return MilvusSink(MilvusSinkParams(collection=name, key="doc_id", vector_field="embedding", dimension=4, **params))


def server_settings() -> Settings:
    return Settings.model_validate({"milvus": {"uri": service_uri("TEST_MILVUS_URI")}})


@pytest.mark.anyio
async def test_one_key_twice_in_a_batch_or_an_older_batch_retried_late_leaves_the_latest_once() -> None:
    """Milvus 2.3 keeps every row of one upsert sharing a key (count(*) 3 for keys a, a, b) and shows the first;
    and a batch retried after a later one landed would bring an old value back."""
    name = f"order_{uuid.uuid4().hex[:8]}"
    try:
        async with sink(name).open(server_settings()) as writer:
            assert await writer.write([record(0, "a", 1), record(1, "a", 2), record(2, "b", 1), record(3, "a", 3)]) == 4
            assert await writer.write([record(10, "b", 5)]) == 1
            assert await writer.write([record(4, "b", 2), record(5, "c", 1)]) == 2  # older b: superseded, c written
            rows = writer.client.query(name, filter='doc_id != ""', output_fields=["version", "embedding"], consistency_level="Strong")
            (count,) = writer.client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
        assert count["count(*)"] == 3
        assert {r["doc_id"]: (r["version"], list(r["embedding"])) for r in rows} == {
            "a": (3, [3.0] * 4),
            "b": (5, [5.0] * 4),
            "c": (1, [1.0] * 4),
        }
    finally:
        c = client()
        c.drop_collection(name)
        c.close()


@pytest.mark.anyio
async def test_records_without_a_vector_are_refused_or_skipped_as_configured() -> None:
    name = f"novec_{uuid.uuid4().hex[:8]}"
    batch = [record(i, key, 1) for i, key in enumerate("abcd")]
    batch[1].value["embedding"] = None  # type: ignore[index]
    batch[2].value["embedding"] = [1.0]  # type: ignore[index]
    del batch[3].value["embedding"]  # type: ignore[union-attr]
    try:
        async with sink(name, missing_vector="dead_letter").open(server_settings()) as writer:
            with pytest.raises(RecordsRefused) as refused:
                await writer.write(batch)
        assert refused.value.written == 1
        assert {f.record.offset: (f.rule, f.reason) for f in refused.value.refused} == {
            1: ("row", "embedding is null, the collection's dimension is 4"),
            2: ("row", "embedding has 1 numbers, the collection's dimension is 4"),
            3: ("row", "embedding is missing, the collection's dimension is 4"),
        }
        async with sink(name).open(server_settings()) as writer:  # skip (the default): a mixed feed
            with pytest.raises(RecordsRefused) as refused:
                await writer.write(batch)
        assert refused.value.written == 1 and [f.record.offset for f in refused.value.refused] == [2]
    finally:
        c = client()
        c.drop_collection(name)
        c.close()
