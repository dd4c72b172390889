"""The daemon trusts the request topic only as far as it is told to, on the real broker (Tansu) and ledger
(PostgreSQL): each hostile request of issue 22 is dead-lettered as ``forbidden`` with its reason, nothing is
recorded for it, nothing is written where it pointed, no message reaches the topic it named, and a
legitimate (signed) request still runs.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from pipeline.daemon.policy import sign
from tests.integration.conftest import service_uri
from tests.integration.daemon_helpers import (
    ROOT,
    DaemonEnv,
    create_topics,
    ledger_rows,
    produce,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)
SECRET = "test-signing-secret"


@pytest.fixture
def env(tmp_path: Path) -> DaemonEnv:
    e = DaemonEnv(service_uri("TEST_KAFKA_BOOTSTRAP"), service_uri("TEST_POSTGRES_DSN"), tmp_path)
    create_topics(e, f"sink-{e.tag}", f"otherdlq-{e.tag}", f"ok-{e.tag}.replies")
    yield e
    e.stop_all()


def _msg(rid: str, pipeline: Any, **extra: Any) -> tuple[bytes, bytes]:
    return rid.encode(), json.dumps({"request_id": rid, "pipeline": pipeline, **extra}).encode()


def _signed(env: DaemonEnv, messages: list[tuple[bytes, bytes]]) -> dict[str, tuple[int, int]]:
    """Send each message signed on its own (the signature covers its bytes); returns rid -> (partition, offset)."""
    return {k.decode(): produce(env, [(k, v)], sign(SECRET, v))[0] for k, v in messages}


def _gen_then(name: str, uses: str, **with_: Any) -> dict[str, Any]:
    tasks: dict[str, Any] = {
        "gen": {"uses": "generate", "with": {"schema": "simple", "total_rows": 20}},
        "part": {"uses": "partition", "needs": ["gen"]},
    }
    if uses == "partition":
        tasks["part"]["with"] = with_
    else:
        tasks["t"] = {"uses": uses, "needs": ["part"], "with": with_}
    return {"name": name, "tasks": tasks}


def _letters(env: DaemonEnv) -> dict[tuple[int, int], dict[str, Any]]:
    return {(lt["source"]["partition"], lt["source"]["offset"]): lt for lt in (json.loads(m.value) for m in read_topic(env, env.dlq))}


def test_each_hostile_request_is_forbidden_and_writes_nothing(env: DaemonEnv, tmp_path: Path) -> None:
    outside = tmp_path / "outside"  # every target below lives here; the run directory is env.run_dir
    escape = os.path.relpath(outside / "escaped", ROOT)  # "../../..": relative to the daemon's working dir
    assert escape.startswith("..")
    env.extra.update(
        {
            "DAEMON__SIGNING_SECRET": SECRET,
            "DAEMON__TOPIC_PREFIXES": json.dumps([f"ok-{env.tag}."]),
            "DAEMON__MAX_RUN_SECONDS": "4",
            # wider than the default, so the path and topic checks themselves are what refuses
            "DAEMON__INLINE_COMPONENTS": json.dumps(["generate", "partition", "storage.upload", "testdata.produce", "demo.sleep"]),
        }
    )
    daemon = env.start("s1")
    wait_for("daemon up", lambda: "daemon started" in env.log("s1"), 60)
    hostile = {
        "abs-out": (_gen_then("a", "partition", out=str(outside / "abs")), "'out'"),
        "rel-out": (_gen_then("b", "partition", out=escape), "'out'"),
        "local-root": (_gen_then("c", "storage.upload", backend="local", local_root=str(outside / "store")), "'local_root'"),
        "other-topic": (
            {"name": "d", "tasks": {"p": {"uses": "testdata.produce", "with": {"topic": f"sink-{env.tag}", "total": 5}}}},
            "'topic'",
        ),
        "sleep-forever": ({"name": "e", "tasks": {"z": {"uses": "demo.sleep", "with": {"seconds": 1e9}}}}, "'seconds'"),
    }
    at = _signed(env, [_msg(rid, spec) for rid, (spec, _) in hostile.items()])
    at["reply-dlq"] = _signed(env, [_msg("reply-dlq", "demo", reply_topic=f"otherdlq-{env.tag}")])["reply-dlq"]
    at["unsigned"] = produce(env, [_msg("unsigned", "demo")])[0]
    key, value = _msg("forged", "demo")
    at["forged"] = produce(env, [(key, value)], sign("not-the-secret", value))[0]
    naps = {
        f"n{i}": {"uses": "demo.sleep", "needs": [f"n{i - 1}"] if i else [], "with": {"seconds": 3}} for i in range(3)
    }  # each within the limit, together not
    _signed(env, [_msg("too-long", {"name": "long", "tasks": naps})])
    at["legit"] = _signed(
        env, [_msg("legit", "demo", params={"rows": 100, "chunk": 50, "pause": 0.0}, reply_topic=f"ok-{env.tag}.replies")]
    )["legit"]

    wait_for("the legitimate request", lambda: ledger_rows(env).get("legit", {}).get("state") == "succeeded", 90)
    letters = wait_for("a dead letter for each hostile request", lambda: (lambda d: d if len(d) >= 8 else None)(_letters(env)), 60)
    reasons = {rid: letters[where] for rid, where in at.items() if where in letters}
    assert set(reasons) == set(at) - {"legit"}, f"dead-lettered: {sorted(reasons)}"
    assert all(lt["kind"] == "forbidden" for lt in reasons.values()), {r: lt["kind"] for r, lt in reasons.items()}
    for rid, (_, word) in hostile.items():
        assert word in reasons[rid]["reason"], f"{rid}: {reasons[rid]['reason']}"
    assert "reply_topic" in reasons["reply-dlq"]["reason"]
    assert "unsigned" in reasons["unsigned"]["reason"] and "bad signature" in reasons["forged"]["reason"]

    rows = wait_for(
        "the long run to end", lambda: (lambda r: r if r.get("too-long", {}).get("state") == "failed" else None)(ledger_rows(env)), 60
    )
    assert "DAEMON__MAX_RUN_SECONDS" in rows["too-long"]["outcome"]["reason"], rows["too-long"]["outcome"]
    assert set(rows) == {"legit", "too-long"}, "a refused request was recorded"
    assert not outside.exists(), f"something was written outside the run directory: {list(outside.rglob('*'))}"
    assert read_topic(env, f"sink-{env.tag}") == [], "the other pipeline's topic received messages"
    assert read_topic(env, f"otherdlq-{env.tag}") == [], "status events were copied to another dead-letter topic"
    assert read_topic(env, f"ok-{env.tag}.replies"), "the allowed reply topic got no status events"

    # the same topics with the defaults (inline specs off, no secret): an inline spec is refused
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    for name in ("DAEMON__SIGNING_SECRET", "DAEMON__INLINE_COMPONENTS"):
        env.extra.pop(name)
    env.extra["DAEMON__INLINE_SPECS"] = "false"
    env.start("s2")
    wait_for("daemon up", lambda: "daemon started" in env.log("s2"), 60)
    nap = {"name": "n", "tasks": {"z": {"uses": "demo.sleep", "with": {"seconds": 0}}}}
    where = produce(env, [_msg("inline-off", nap)])[0]
    letter = wait_for("the inline spec's dead letter", lambda: _letters(env).get(where), 60)
    assert letter["kind"] == "forbidden" and "INLINE_SPECS" in letter["reason"], letter
    assert "inline-off" not in ledger_rows(env)


def test_review_b_refusals_read_nothing_write_nothing_produce_nothing(env: DaemonEnv, tmp_path: Path) -> None:
    """A schema file outside the roots (its content never quoted, a FIFO never opened), a pack's out through
    a mapping, a topic left to the settings' default, a database of the request's choosing: each forbidden,
    none recorded, nothing written or produced; a legitimate request after them runs."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "app.yaml").write_text('db:\n  password: "hunter2-SECRET"\n bad_indent: x\n')
    os.mkfifo(victim / "pipe.yaml")
    outside = tmp_path / "outside"
    env.extra.update(
        {
            "KAFKA__TOPIC_SOURCE": f"sink-{env.tag}",  # where a produce naming no topic would write
            "DAEMON__TOPIC_PREFIXES": json.dumps([f"ok-{env.tag}."]),
            "DAEMON__PATH_ROOTS": json.dumps([str(ROOT / "pipelines")]),  # the reviewer's deployer
            "DAEMON__INLINE_COMPONENTS": json.dumps(["testdata.produce", "demo.sleep"]),
        }
    )
    env.start("b1")
    wait_for("daemon up", lambda: "daemon started" in env.log("b1"), 60)
    produce_default = {"name": "p", "tasks": {"t": {"uses": "testdata.produce", "with": {"total": 50}}}}
    hostile = {
        "schema-file": (_msg("schema-file", "quickstart", params={"schema": str(victim / "app.yaml")}), "'schema"),
        "schema-fifo": (_msg("schema-fifo", "quickstart", params={"schema": str(victim / "pipe.yaml")}), "'schema"),
        "retail-out": (_msg("retail-out", "retail", params={"out": str(outside / "retail")}), "'overrides.out'"),
        "default-topic": (_msg("default-topic", produce_default), f"'sink-{env.tag}'"),
        "database": (_msg("database", "mongo_ecommerce", params={"database": "admin"}), "'database'"),
        "rows": (_msg("rows", "quickstart", params={"rows": 10**12}), "'total_rows'"),
    }
    at = {rid: produce(env, [message])[0] for rid, (message, _) in hostile.items()}
    produce(env, [_msg("legit", "demo", params={"rows": 100, "chunk": 50, "pause": 0.0})])
    wait_for("the legitimate request", lambda: ledger_rows(env).get("legit", {}).get("state") == "succeeded", 90)
    letters = wait_for("a dead letter for each", lambda: (lambda d: d if len(d) >= len(at) else None)(_letters(env)), 60)
    for rid, where in at.items():
        letter = letters[where]
        assert letter["kind"] == "forbidden" and hostile[rid][1] in letter["reason"], (rid, letter)
        assert "hunter2" not in letter["reason"] and "password" not in letter["reason"], letter
    assert set(ledger_rows(env)) == {"legit"}, "a refused request was recorded"
    assert not outside.exists(), list(outside.rglob("*"))
    assert read_topic(env, f"sink-{env.tag}") == [], "a request wrote the settings' default topic"
    rejected = [json.loads(m.value) for m in read_topic(env, env.status)]
    assert not any("hunter2" in json.dumps(e) for e in rejected), "a file's content reached the status topic"


def test_attempts_and_the_maximum_run_time_span_restarts(env: DaemonEnv) -> None:
    """A request claimed DAEMON__MAX_ATTEMPTS times (its runs killed the daemon) is failed, not run again; one
    first started longer ago than DAEMON__MAX_RUN_SECONDS is failed at its resume: no fresh allowance."""
    import anyio
    import asyncpg

    from pipeline.daemon.requests import parse_request

    env.extra.update({"DAEMON__MAX_ATTEMPTS": "3", "DAEMON__MAX_RUN_SECONDS": "3600"})
    daemon = env.start("a1")
    wait_for("daemon up", lambda: "daemon started" in env.log("a1"), 60)
    messages = {rid: _msg(rid, "demo", params={"rows": 100, "chunk": 50, "pause": 0.0}) for rid in ("tired", "old")}

    async def seed() -> None:  # what three crashed claims, and a run first started 2 h ago then interrupted, leave
        conn = await asyncpg.connect(env.dsn)
        try:
            for rid, (state, attempts, started) in {"tired": ("running", 3, "1 minute"), "old": ("interrupted", 1, "2 hours")}.items():
                fp = parse_request(messages[rid][1], 1 << 20).fingerprint()
                await conn.execute(
                    f"INSERT INTO {env.table} (request_id, state, run_id, pipeline, owner, lease_until, attempts, "
                    "announced, fingerprint, started_at) VALUES ($1, $2, $3, 'demo', 'dead:1:x', now() - interval "
                    f"'1 minute', $4, true, $5, now() - interval '{started}')",
                    rid,
                    state,
                    f"run-{rid}",
                    attempts,
                    fp,
                )
        finally:
            await conn.close()

    anyio.run(seed)
    produce(env, list(messages.values()))

    def both_failed() -> dict[str, Any] | None:
        rows = ledger_rows(env)
        return rows if all(rows.get(k, {}).get("state") == "failed" for k in messages) else None

    rows = wait_for("both failed", both_failed, 60)
    assert "DAEMON__MAX_ATTEMPTS" in rows["tired"]["outcome"]["reason"] and rows["tired"]["attempts"] == 4
    assert "DAEMON__MAX_RUN_SECONDS" in rows["old"]["outcome"]["reason"], rows["old"]["outcome"]
    assert not (env.run_dir / "run-tired").exists() and not (env.run_dir / "run-old").exists(), "a run was started"
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
