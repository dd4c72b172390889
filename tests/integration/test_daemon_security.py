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
    tasks: dict[str, Any] = {"gen": {"uses": "generate", "with": {"schema": "simple", "total_rows": 20}},
                             "part": {"uses": "partition", "needs": ["gen"]}}  # fmt: skip
    if uses == "partition":
        tasks["part"]["with"] = with_
    else:
        tasks["t"] = {"uses": uses, "needs": ["part"], "with": with_}
    return {"name": name, "tasks": tasks}


def _letters(env: DaemonEnv) -> dict[tuple[int, int], dict[str, Any]]:
    return {(lt["source"]["partition"], lt["source"]["offset"]): lt
            for lt in (json.loads(m.value) for m in read_topic(env, env.dlq))}  # fmt: skip


def test_each_hostile_request_is_forbidden_and_writes_nothing(env: DaemonEnv, tmp_path: Path) -> None:
    outside = tmp_path / "outside"  # every target below lives here; the run directory is env.run_dir
    escape = os.path.relpath(outside / "escaped", ROOT)  # "../../..": relative to the daemon's working dir
    assert escape.startswith("..")
    env.extra.update({
        "DAEMON__SIGNING_SECRET": SECRET,
        "DAEMON__TOPIC_PREFIXES": json.dumps([f"ok-{env.tag}."]),
        "DAEMON__MAX_RUN_SECONDS": "4",
        # wider than the default, so the path and topic checks themselves are what refuses
        "DAEMON__INLINE_COMPONENTS": json.dumps(["generate", "partition", "storage.upload", "testdata.produce",
                                                 "demo.sleep"]),
    })  # fmt: skip
    daemon = env.start("s1")
    wait_for("daemon up", lambda: "daemon started" in env.log("s1"), 60)
    hostile = {
        "abs-out": (_gen_then("a", "partition", out=str(outside / "abs")), "'out'"),
        "rel-out": (_gen_then("b", "partition", out=escape), "'out'"),
        "local-root": (_gen_then("c", "storage.upload", backend="local", local_root=str(outside / "store")),
                       "'local_root'"),
        "other-topic": ({"name": "d", "tasks": {"p": {"uses": "testdata.produce",
                                                       "with": {"topic": f"sink-{env.tag}", "total": 5}}}}, "'topic'"),
        "sleep-forever": ({"name": "e", "tasks": {"z": {"uses": "demo.sleep", "with": {"seconds": 1e9}}}},
                          "'seconds'"),
    }  # fmt: skip
    at = _signed(env, [_msg(rid, spec) for rid, (spec, _) in hostile.items()])
    at["reply-dlq"] = _signed(env, [_msg("reply-dlq", "demo", reply_topic=f"otherdlq-{env.tag}")])["reply-dlq"]
    at["unsigned"] = produce(env, [_msg("unsigned", "demo")])[0]
    key, value = _msg("forged", "demo")
    at["forged"] = produce(env, [(key, value)], sign("not-the-secret", value))[0]
    naps = {f"n{i}": {"uses": "demo.sleep", "needs": [f"n{i - 1}"] if i else [], "with": {"seconds": 3}}
            for i in range(3)}  # each within the limit, together not  # fmt: skip
    _signed(env, [_msg("too-long", {"name": "long", "tasks": naps})])
    at["legit"] = _signed(env, [_msg("legit", "demo", params={"rows": 100, "chunk": 50, "pause": 0.0},
                                     reply_topic=f"ok-{env.tag}.replies")])["legit"]  # fmt: skip

    wait_for("the legitimate request", lambda: ledger_rows(env).get("legit", {}).get("state") == "succeeded", 90)
    letters = wait_for("a dead letter for each hostile request", lambda: (lambda d: d if len(d) >= 8 else None)(
        _letters(env)), 60)  # fmt: skip
    reasons = {rid: letters[where] for rid, where in at.items() if where in letters}
    assert set(reasons) == set(at) - {"legit"}, f"dead-lettered: {sorted(reasons)}"
    assert all(lt["kind"] == "forbidden" for lt in reasons.values()), {r: lt["kind"] for r, lt in reasons.items()}
    for rid, (_, word) in hostile.items():
        assert word in reasons[rid]["reason"], f"{rid}: {reasons[rid]['reason']}"
    assert "reply_topic" in reasons["reply-dlq"]["reason"]
    assert "unsigned" in reasons["unsigned"]["reason"] and "bad signature" in reasons["forged"]["reason"]

    rows = wait_for("the long run to end", lambda: (lambda r: r if r.get("too-long", {}).get("state") == "failed"
                                                                   else None)(ledger_rows(env)), 60)  # fmt: skip
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
