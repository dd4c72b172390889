"""Streaming on the real broker (Tansu) and document store (SecantusDB), through real CLI processes.

10,000 mixed records (10% invalid, 3% re-sent duplicates) must end as: MongoDB = exactly the valid,
de-duplicated set (document by document), the sink topic = every valid record under its key, the
dead-letter topic = every invalid record with the step, rule and reason the answer key names. The same
must hold after a SIGKILL mid-stream and a restart, and after the document store stops for seconds.
The progress line's lag is what is left to commit, on the real broker's fetch high watermarks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from task_components.sources.testdata import records
from task_components.streaming.offsets import stream_lag
from tests.integration.conftest import service_uri
from tests.integration.streaming_helpers import (
    ROOT,
    StreamEnv,
    check_committed_prefix,
    check_sinks,
    committed,
    create_topics,
    produce,
)

pytestmark = pytest.mark.integration


def make_env(tmp_path: Path, mongo_uri: str | None = None) -> StreamEnv:
    env = StreamEnv(service_uri("TEST_KAFKA_BOOTSTRAP"), mongo_uri or service_uri("TEST_MONGO_URI"), tmp_path)
    create_topics(env)
    return env


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


def consume_summary(env: StreamEnv) -> dict:
    """The consume task's summary in the newest pipeline report (the run dir may hold other commands' runs)."""
    reports = sorted(env.run_dir.glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    summaries = [json.loads(p.read_text())["summary"].get("consume") for p in reports]
    return [s for s in summaries if s][-1]


def assignments(log: str) -> list[list[str]]:
    """The partitions of each ``partitions_assigned`` event of a run's JSON log, in order."""
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [e["partitions"] for e in events if e.get("event") == "partitions_assigned"]


def wait_for_documents(env: StreamEnv, proc: subprocess.Popen[str], at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"pipeline ended early: {proc.communicate()[1][-2000:]}"
        try:
            count = env.mongo_count()
        except Exception:  # noqa: BLE001 - the database may not exist yet
            count = 0
        if count >= at_least:
            return count
        time.sleep(0.1)
    raise AssertionError(f"MongoDB never reached {at_least} documents")


@pytest.mark.slow
def test_ten_thousand_mixed_records_land_exactly(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    generated = list(records(10_000, invalid_ratio=0.1, duplicate_ratio=0.03, seed=11))
    positions = produce(env, generated)
    finish(env.start("max_records=10000"))
    figures = check_sinks(env, generated, positions)
    summary = consume_summary(env)
    assert summary["records_in"] == 10_000 and summary["stopped_by"] == "max_records"
    assert summary["invalid"] == sum(not r.valid for r in generated)
    assert summary["duplicates"] == sum(r.kind == "duplicate" for r in generated)
    print(f"\nstreaming 10k: {figures}, {summary}")


@pytest.mark.slow
def test_sigkill_mid_stream_then_restart_loses_nothing(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    generated = list(records(10_000, invalid_ratio=0.1, duplicate_ratio=0.03, seed=12))
    valid = sum(r.kind == "valid" for r in generated)
    positions = produce(env, generated)
    first = env.start("batch_size=50", "max_in_flight=2", "idle_seconds=10")
    at_kill = wait_for_documents(env, first, at_least=1500)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL
    assert env.mongo_count() < valid, "the first run was not stopped mid-stream"
    check_committed_prefix(env, generated, positions)
    finish(env.start("idle_seconds=4"))
    figures = check_sinks(env, generated, positions)
    print(f"\nafter SIGKILL at {at_kill} documents and a restart: {figures}")


@pytest.mark.slow
def test_sigterm_commits_what_finished_and_only_that(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    generated = list(records(6_000, invalid_ratio=0.1, duplicate_ratio=0.03, seed=14))
    positions = produce(env, generated)
    first = env.start("batch_size=50", "max_in_flight=4")  # no stop condition: runs until the signal
    wait_for_documents(env, first, at_least=1500)
    sent = time.monotonic()
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 130 and time.monotonic() - sent < 20, err[-2000:]
    stopped = [line for line in err.splitlines() if "stream_stopped" in line]  # logged however the source ends
    assert stopped and "cancelled" in stopped[-1] and "records_in" in stopped[-1], err[-2000:]
    covered = check_committed_prefix(env, generated, positions)
    assert covered >= 1000, f"SIGTERM committed only {covered} records"
    finish(env.start("idle_seconds=4"))
    check_sinks(env, generated, positions)


@pytest.mark.slow
def test_two_members_of_one_group_share_the_partitions_and_lose_nothing(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    generated = list(records(10_000, invalid_ratio=0.1, duplicate_ratio=0.03, seed=15))
    positions = produce(env, generated)
    group = ("batch_size=50", "max_in_flight=2", "idle_seconds=6", "session_timeout_ms=6000", "rebalance_timeout_ms=5000")
    first = env.start(*group)
    wait_for_documents(env, first, at_least=1000)
    second = env.start(*group)  # joins: the group rebalances while the first is mid-stream
    _, err_first = finish(first)
    _, err_second = finish(second)
    split = [len(a) for a in assignments(err_first)]
    assert split[0] == 4 and any(0 < n < 4 for n in split[1:]), f"the first member never gave partitions up: {split}"
    assert any(assignments(err_second)), "the second member never got a partition"
    figures = check_sinks(env, generated, positions)
    print(f"\ntwo members, one group: {figures}")


@pytest.mark.slow
def test_document_store_down_for_seconds_pauses_and_completes(tmp_path: Path) -> None:
    """Own SecantusDB (persistent, fixed port) so stopping it cannot disturb other tests."""
    server = service_uri("TEST_SECANTUSD")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "mongo-data"

    def answers() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def start_store() -> subprocess.Popen[bytes]:
        args = [server, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(data)]
        args += ["--log-level", "WARNING"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not answers():
            assert time.monotonic() < deadline and proc.poll() is None, "SecantusDB did not start"
            time.sleep(0.1)
        return proc

    store = start_store()
    try:
        env = make_env(tmp_path / "runs", f"mongodb://127.0.0.1:{port}/?directConnection=true")
        generated = list(records(4_000, invalid_ratio=0.1, duplicate_ratio=0.03, seed=13))
        positions = produce(env, generated)
        pipeline = env.start("batch_size=50", "max_in_flight=2", "idle_seconds=4", "mongo_timeout_ms=500")
        wait_for_documents(env, pipeline, at_least=600)
        store.send_signal(signal.SIGTERM)
        store.wait(timeout=30)
        time.sleep(3)
        assert pipeline.poll() is None, "the pipeline must wait for the store, not end"
        store = start_store()
        _, err = finish(pipeline)
        events = [json.loads(line).get("event") for line in err.splitlines() if line.startswith("{")]
        assert "circuit_open" in events and "circuit_closed" in events[events.index("circuit_open") :]
        assert consume_summary(env)["sink_outages"] >= 1
        figures = check_sinks(env, generated, positions)
        print(f"\nafter a document-store outage: {figures}")
    finally:
        store.send_signal(signal.SIGTERM)
        store.wait(timeout=30)
        assert os.path.isdir(data)


@pytest.mark.slow
def test_a_batch_above_the_invalid_threshold_fails_the_run_and_is_not_committed(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    generated = list(records(400, pattern="invalid", seed=16))
    produce(env, generated)
    proc = env.start("max_records=400", "batch_size=400", "max_invalid_share=0.5")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    assert "400 of 400 records invalid (100%), above max_invalid_share 50%" in err
    assert committed(env) == dict.fromkeys(range(4), 0), "a failed batch must not be committed"


@pytest.mark.slow
def test_produce_test_data_command_feeds_the_pipeline(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    produced = subprocess.run(
        [
            sys.executable,
            "run_pipeline.py",
            "produce-test-data",
            "--total",
            "300",
            "--rate",
            "0",
            "--pattern",
            "mixed",
            "--invalid-ratio",
            "0.2",
            "--seed",
            "3",
            "--run-dir",
            str(tmp_path),
            "--no-progress",
        ],
        cwd=ROOT,
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr[-2000:]
    finish(env.start("max_records=300"))
    generated = list(records(300, invalid_ratio=0.2, seed=3))
    summary = consume_summary(env)
    assert summary["invalid"] == sum(not r.valid for r in generated) and summary["records_in"] == 300
    assert {k: d for k, d in env.mongo_docs().items()} == {r.key: r.expected for r in generated if r.valid}


def test_the_progress_lag_is_what_is_left_to_commit(tmp_path: Path) -> None:
    """Counted from the last record handed out, the figure missed records fetched but not committed and every
    partition still in the consumer's prefetch: 400 produced, 30 read, nothing committed read about 100."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    env = make_env(tmp_path)
    total = 400
    produce(env, list(records(total, pattern="valid", seed=31)))

    async def measure() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=env.bootstrap, group_id=f"group-{env.tag}", enable_auto_commit=False, auto_offset_reset="earliest"
        )
        consumer.subscribe([env.source])
        await consumer.start()
        try:
            first: dict[tuple[str, int], int] = {}
            after: dict[tuple[str, int], int] = {}
            with anyio.fail_after(60):
                while sum(after.values()) - sum(first.values()) < 30:
                    wanted = 30 - (sum(after.values()) - sum(first.values()))
                    for tp, msgs in (await consumer.getmany(timeout_ms=500, max_records=wanted)).items():
                        first.setdefault((tp.topic, tp.partition), msgs[0].offset)
                        after[(tp.topic, tp.partition)] = msgs[-1].offset + 1
                while any(consumer.highwater(tp) is None for tp in consumer.assignment()):
                    await anyio.sleep(0.05)  # every partition fetched (prefetch), records of most not handed out
            assert len(consumer.assignment()) == 4
            assert await stream_lag(consumer, {}, first) == total, "nothing is committed yet: all of it is left"
            await consumer.commit({TopicPartition(*tp): off for tp, off in after.items()})
            assert await stream_lag(consumer, after, first) == total - 30
        finally:
            await consumer.stop()

    anyio.run(measure)
