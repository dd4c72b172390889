"""``pymilvus-pg ingest`` / ``shadow ingest`` (the long-running checker) on the real Milvus and PostgreSQL.

Run as its users run it: the console script in a subprocess, JSON log lines on stderr, stopped by
SIGTERM or killed with -9. A row deleted in Milvus behind the client's back must be reported at the
next validation (key and side named, exit 1); a kill -9 mid-batch and a restart on the same
collection must validate clean, the batches in flight replayed from the journal.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymilvus import MilvusClient

from task_components.shadow.dropin import ShadowMilvusClient
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


class Checker:
    """A checker process whose stderr JSON lines are read by one thread (and stdout by another)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "pymilvus-pg"), "ingest", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_err, daemon=True),
            threading.Thread(target=self._read_out, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        self.stdout.extend(self.proc.stdout)

    def wait_event(self, event: str, timeout: float = 120, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.events.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    break
                continue
            if data.get("event") == event and all(data.get(k) == v for k, v in match.items()):
                return data
        raise AssertionError(f"never saw {event} {match}; stderr tail: {''.join(self.stderr[-15:])}")

    def finish(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.finish()


@pytest.fixture
def services(tmp_path: Path) -> dict[str, str]:
    return {"uri": service_uri("TEST_MILVUS_URI"), "dsn": service_uri("TEST_POSTGRES_DSN")}


@pytest.fixture
def env(tmp_path: Path, services: dict[str, str]) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS", "POSTGRES", "PG_CONN"))}
    e.update(MILVUS_URI=services["uri"], PG_CONN=services["dsn"], LOGGING__FORMAT="json", XDG_CACHE_HOME=str(tmp_path / "cache"))
    return e


@pytest.fixture
def collection(services: dict[str, str]) -> Iterator[str]:
    name = f"chk_{uuid.uuid4().hex[:8]}"
    yield name
    client = MilvusClient(services["uri"])
    if client.has_collection(name):
        client.drop_collection(name)
    client.close()


def args(collection: str, *more: str) -> list[str]:
    return ["--collection", collection, "--threads", "2", "--no-progress", "--json", *more]


def test_a_row_deleted_behind_the_clients_back_is_reported_at_the_next_validation(
    env: dict[str, str], services: dict[str, str], collection: str, tmp_path: Path
) -> None:
    # a first short run creates the collection and its shadow; then one row with key -1, which the
    # writers never touch (their keys start at 0), is written through the same shadowing client
    first = Checker(args(collection, "--duration", "1", "--compare-interval", "60"), env)
    assert first.finish() == 0, "".join(first.stderr[-10:])
    tracker = tmp_path / "cache" / "dag-pipeline" / "shadow"
    client = ShadowMilvusClient(uri=services["uri"], pg_dsn=services["dsn"], tracker_path=next(tracker.iterdir()), ignore_vector=True)
    try:
        client.insert(collection, [{**row, "id": -1} for row in _one_row()])
    finally:
        client.close()

    run = Checker(args(collection, "--compare-interval", "2"), env)
    try:
        run.wait_event("checker.validation", ok=True)
        bare = MilvusClient(services["uri"])
        bare.delete(collection, filter="id in [-1]")
        bare.close()
        seen = run.wait_event("checker.divergence", key=-1)
        assert seen["side"] == "milvus" and seen["kind"] == "missing"
        run.proc.send_signal(signal.SIGTERM)
        code = run.finish()
    finally:
        run.kill()
    summary = json.loads(run.stdout[-1])
    assert code == 1
    assert not summary["ok"] and summary["failed_validations"] >= 1
    assert any(d["key"] == -1 and d["side"] == "milvus" for d in summary["first_failure"]["differences"])

    # pymilvus-pg's validate names the same key; sampled or not, the key sets are compared in full
    for extra in ([], ["--no-full-scan", "--sample-percentage", "10"]):
        out = subprocess.run(
            [str(BIN / "pymilvus-pg"), "validate", "--collection", collection, "--json", *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert out.returncode == 1, out.stderr
        result = json.loads(out.stdout)
        assert [d["key"] for d in result["differences"]] == [-1]


def _one_row() -> list[dict[str, Any]]:
    from pipeline.checker.rows import make_rows

    return make_rows([10**9], 0, 8)


def test_kill_9_mid_batch_then_a_restart_validates_clean(env: dict[str, str], collection: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    run = Checker(args(collection, "--threads", "4", "--compare-interval", "60", "--journal", str(journal)), env)
    try:
        _in_flight(journal)
        time.sleep(2)  # some batches land first
        _in_flight(journal)  # kill while batches are in flight: journaled, their writes under way
        run.proc.kill()
    finally:
        run.kill()
    left = len(list(journal.glob("intent-*.json")))
    assert left >= 1

    again = Checker(args(collection, "--duration", "3", "--compare-interval", "60", "--journal", str(journal)), env)
    replayed = again.wait_event("checker.replayed")
    assert replayed["batches"] == left
    code = again.finish()
    summary = json.loads(again.stdout[-1])
    assert code == 0, summary
    assert summary["ok"] and summary["validations"] == 1 and summary["replayed"] == left
    assert not list(journal.glob("intent-*.json"))


def _in_flight(journal: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list(journal.glob("intent-*.json")):
        assert time.monotonic() < deadline, "no batch was ever in flight"
        time.sleep(0.02)


def test_a_batch_milvus_took_and_the_shadow_lost_is_replayed_at_the_next_start(
    env: dict[str, str], services: dict[str, str], collection: str, tmp_path: Path
) -> None:
    """The split a kill -9 between Milvus' acknowledgement and the commit leaves, made on purpose: the
    journal holds the batch, Milvus has its rows, the shadow has not. The restart must converge them."""
    from pipeline.checker.journal import Intent, Journal
    from pipeline.checker.rows import make_rows

    journal = tmp_path / "journal"
    first = Checker(args(collection, "--duration", "1", "--compare-interval", "60", "--journal", str(journal)), env)
    assert first.finish() == 0, "".join(first.stderr[-10:])
    keys = list(range(-1000, -900))  # below 0: the restarted run's writers never touch them (their keys start at 0)
    Journal(journal).begin(7, Intent("insert", keys, 0))
    bare = MilvusClient(services["uri"])
    bare.insert(collection, make_rows(keys, 0, 8))  # Milvus only: the shadow's transaction "died"
    bare.close()

    again = Checker(args(collection, "--duration", "1", "--compare-interval", "60", "--journal", str(journal)), env)
    assert again.wait_event("checker.replayed")["batches"] == 1
    code = again.finish()
    summary = json.loads(again.stdout[-1])
    assert code == 0 and summary["ok"] and summary["replayed"] == 1, summary
    assert "no differences" in summary["last_validation"]
    assert _shadow_has(services["dsn"], collection, keys) == len(keys)  # replayed into the shadow, not out of Milvus
    assert not list(journal.glob("intent-*.json"))


def test_a_second_checker_on_the_same_collection_and_a_mismatched_shadow_exit_2(
    env: dict[str, str], collection: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    run = Checker(args(collection, "--compare-interval", "60", "--journal", str(journal)), env)
    try:
        _in_flight(journal)  # the first one is writing
        second = subprocess.run(
            [str(BIN / "pymilvus-pg"), "ingest", *args(collection, "--duration", "1", "--journal", str(journal))],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr[-2000:]
        assert "another checker is running" in second.stderr and "Traceback" not in second.stderr
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 0
    finally:
        run.kill()
    # the shadow was made without vectors: a run asking to shadow them stops at once, naming the table
    vectors = subprocess.run(
        [str(BIN / "pymilvus-pg"), "ingest", *args(collection, "--duration", "30", "--include-vector")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert vectors.returncode == 2, vectors.stderr[-2000:]
    assert "no vector columns" in vectors.stderr and "Traceback" not in vectors.stderr


def _shadow_has(dsn: str, collection: str, keys: list[int]) -> int:
    import anyio
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(f'SELECT count(*) FROM "shadow_{collection}" WHERE id = ANY($1)', keys))
        finally:
            await conn.close()

    return anyio.run(count)
