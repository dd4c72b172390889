"""The daemon on the real broker (Tansu) and PostgreSQL ledger: one effect per request, every bad one
dead-lettered with its reason, stories in order, a SIGKILL resumed, a SIGTERM graceful.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from tests.integration.conftest import service_uri
from tests.integration.daemon_helpers import (
    ROOT,
    DaemonEnv,
    check_story,
    committed_and_end,
    create_topics,
    ledger_rows,
    produce,
    read_topic,
    stories,
    wait_for,
)

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def env(tmp_path: Path) -> DaemonEnv:
    e = DaemonEnv(service_uri("TEST_KAFKA_BOOTSTRAP"), service_uri("TEST_POSTGRES_DSN"), tmp_path)
    create_topics(e)
    yield e
    e.stop_all()


def _req(rid: str, pause: float = 0.3, **extra: object) -> tuple[bytes, bytes]:
    body = {"request_id": rid, "pipeline": "demo", "params": {"rows": 2000, "chunk": 500, "pause": pause}, **extra}
    return rid.encode(), json.dumps(body).encode()


INLINE_OK = {"name": "inline-ok", "tasks": {"nap": {"uses": "demo.sleep", "with": {"seconds": 0.1}}}}

# (key, raw value, expected dead-letter kind, a word the reason must contain)
MALFORMED: list[tuple[bytes | None, bytes | None, str, str]] = [
    (b"m1", b"{not json", "not_json", "not JSON"),
    (b"m2", b"\xff\xfe binary", "not_json", "UTF-8"),
    (b"m3", json.dumps({"request_id": "m3", "pipeline": "demo", "priority": "high"}).encode(), "invalid", "priority"),
    (b"m4", json.dumps({"request_id": "m4"}).encode(), "missing_field", "pipeline"),
    (b"m5", json.dumps({"request_id": "m5", "pipeline": "nope"}).encode(), "unknown_pipeline", "nope"),
    (b"m6", json.dumps({"request_id": "m6", "pipeline": "../pipelines/demo"}).encode(), "bad_pipeline", "plain name"),
    (b"m7", json.dumps({"request_id": "m7", "pipeline": "demo", "params": {"speed": 3}}).encode(), "bad_params", "params.speed"),
    (b"m8", json.dumps({"request_id": "m8", "pipeline": "demo", "params": {"rows": "many"}}).encode(), "bad_params", "params.rows"),
    (
        b"m9",
        json.dumps({"request_id": "m9", "pipeline": {"name": "x", "tasks": {"a": {"uses": "os.system"}}}}).encode(),
        "bad_spec",
        "unknown component",
    ),
    (
        b"m10",
        json.dumps(
            {
                "request_id": "m10",
                "pipeline": {"name": "x", "tasks": {"a": {"uses": "demo.sleep", "with": {"seconds": "${env.POSTGRES__DSN}"}}}},
            }
        ).encode(),
        "bad_spec",
        "environment",
    ),
    (b"m11", json.dumps({"request_id": "m11", "pipeline": "demo", "pad": "x" * 30_000}).encode(), "oversize", "limit"),
    (b"m12", json.dumps({"request_id": "m12", "pipeline": "demo", "colour": "red"}).encode(), "invalid", "colour"),
]


def test_fifty_requests_two_daemons_one_killed(env: DaemonEnv) -> None:
    valid = [_req(f"r{i:02d}", pause=2.5 if i % 6 == 0 else 0.2, priority=i % 3) for i in range(31)]
    valid += [
        (b"inline-1", json.dumps({"request_id": "inline-1", "pipeline": INLINE_OK}).encode()),
        (b"inline-2", json.dumps({"request_id": "inline-2", "pipeline": INLINE_OK}).encode()),
    ]
    duplicates = [valid[0], valid[6], valid[12], valid[20], valid[32]]
    valid_ids = {k.decode() for k, _ in valid}
    first = valid[:20] + [(k, v) for k, v, *_ in MALFORMED] + valid[20:]
    assert len(first) + len(duplicates) == 50

    a, b = env.start("a"), env.start("b")
    wait_for("both daemons up", lambda: "daemon started" in env.log("a") and "daemon started" in env.log("b"), 60)
    produce(env, first)

    def a_running() -> bool:
        return any(r["state"] == "running" and env.owner_prefix(a) in (r["owner"] or "") for r in ledger_rows(env).values())

    wait_for("daemon a to be running a request", a_running, 90, every=0.1)
    mine = env.owner_prefix(a)
    killed = {rid for rid, r in ledger_rows(env).items() if r["state"] == "running" and mine in r["owner"]}
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    a2 = env.start("a2")
    produce(env, duplicates)

    def all_done() -> bool:
        rows = ledger_rows(env)
        return valid_ids <= set(rows) and all(rows[r]["state"] in ("succeeded", "failed") for r in valid_ids)

    wait_for("every valid request to finish", all_done, 240)

    seen: list[object] = []

    def all_committed() -> bool:
        committed, end = committed_and_end(env)
        seen[:] = [committed, end]
        return committed == end

    wait_for("every request offset committed", all_committed, 90, why=lambda: f"committed/end: {seen}")
    for proc in (a2, b):
        proc.send_signal(signal.SIGTERM)
    assert a2.wait(60) == 0 and b.wait(60) == 0, "a daemon did not exit 0 on SIGTERM"

    rows = ledger_rows(env)
    assert set(rows) == valid_ids, f"ledger rows differ: extra {set(rows) - valid_ids}, missing {valid_ids - set(rows)}"
    failed = {r: rows[r]["outcome"] for r in rows if rows[r]["state"] != "succeeded"}
    assert not failed, f"requests did not succeed: {failed}"
    assert all(rows[r]["attempts"] >= 2 for r in killed), "a request running in the killed daemon was not taken over"
    resumed = [rows[r]["outcome"]["resumed"] for r in killed]
    run_dirs = {p.name for p in env.run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert run_dirs == {r["run_id"] for r in rows.values()}, "not exactly one run directory per valid request"
    for r in rows.values():
        report = json.loads((env.run_dir / r["run_id"] / "report.json").read_text())
        assert report["state"] == "succeeded", f"{r['request_id']}: report says {report['state']}"

    letters = [json.loads(m.value) for m in read_topic(env, env.dlq)]
    by_offset = {(lt["source"]["partition"], lt["source"]["offset"]): lt for lt in letters}
    assert len(by_offset) == len(MALFORMED), f"{len(by_offset)} distinct dead letters for {len(MALFORMED)} bad requests"
    kinds = sorted(lt["kind"] for lt in by_offset.values())
    assert kinds == sorted(k for *_, k, _ in MALFORMED), f"dead-letter kinds {kinds}"
    for key, _, kind, word in MALFORMED:
        match = [lt for lt in by_offset.values() if lt["kind"] == kind and word in lt["reason"]]
        assert match, f"no {kind} dead letter whose reason mentions {word!r} (request {key!r})"

    told = stories(env)
    for rid in valid_ids:
        check_story(rid, told[rid])
    for key, _, _, _ in MALFORMED:
        rid = key.decode()
        if rid not in ("m1", "m2"):  # no request_id can be read from those
            # at least once: a rebalance between the dead letter and its commit re-delivers the request
            assert {e["event"] for e in told[rid]} == {"rejected"}, f"{rid}: story {told[rid]}"
    replays = [e for rid in {k.decode() for k, _ in duplicates} for e in told[rid] if e.get("replay")]
    assert replays or any(resumed), "duplicates of finished requests were not answered with their outcome"


@pytest.mark.parametrize("ledger", ["postgres", "mongodb"])
def test_sigterm_interrupts_resumably_and_commits_the_rest(env: DaemonEnv, ledger: str) -> None:
    if ledger == "mongodb":
        env.extra.update(
            {
                "DAEMON__LEDGER": "mongodb",
                "MONGODB__CONNECTION_STRING": service_uri("TEST_MONGO_URI"),
                "MONGODB__DATABASE": f"ledger_{env.tag}",
            }
        )
    env.extra["DAEMON__GRACE_SECONDS"] = "0.5"
    daemon = env.start("d1")
    wait_for("daemon up", lambda: "daemon started" in env.log("d1"), 60)
    (quick_at, slow_at) = produce(env, [_req("quick", pause=0.0), (b"quick", _req("slow", pause=8.0)[1])])
    assert quick_at[0] == slow_at[0] and slow_at[1] == quick_at[1] + 1  # same key, same partition, in order

    def quick_done_slow_running() -> bool:
        rows = ledger_rows(env)
        return rows.get("quick", {}).get("state") == "succeeded" and rows.get("slow", {}).get("state") == "running"

    wait_for("quick done, slow running", quick_done_slow_running, 60, every=0.1)
    wait_for("quick committed", lambda: committed_and_end(env)[0][quick_at[0]] == slow_at[1], 30)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, env.log("d1")[-2000:]

    rows = ledger_rows(env)
    assert rows["slow"]["state"] == "interrupted"
    committed, _ = committed_and_end(env)
    assert committed[slow_at[0]] == slow_at[1], "the interrupted request's offset was committed (it would be lost)"
    journal = (env.run_dir / rows["slow"]["run_id"] / "state.jsonl").read_text()
    assert '"count"' in journal and "succeeded" in journal, "the interrupted run kept no state to resume from"
    assert [e["event"] for e in stories(env)["slow"]][-1] == "interrupted"

    env.extra.pop("DAEMON__GRACE_SECONDS")
    again = env.start("d2")
    wait_for("slow finished by the next daemon", lambda: ledger_rows(env)["slow"]["state"] == "succeeded", 90)
    again.send_signal(signal.SIGTERM)
    assert again.wait(30) == 0
    row = ledger_rows(env)["slow"]
    assert row["outcome"]["resumed"] is True and row["attempts"] == 2
    story = stories(env)["slow"]
    second = [e for e in story if e["attempt"] == 2 and e["event"] == "task"]
    assert {e["task"] for e in second if e["state"] == "resumed"} >= {"count", "sum_a", "sum_b"}, second
    assert {e["task"] for e in second if e["state"] == "started"} == {"wait", "done"}, second
    check_story("slow", story)


def test_a_crashing_run_a_self_feeding_reply_topic_and_a_second_signal(env: DaemonEnv, tmp_path: Path) -> None:
    crash = {"name": "crash", "tasks": {"boom": {"uses": "demo.fail", "with": {"crash": True}}}}
    daemon = env.start("h1")
    wait_for("daemon up", lambda: "daemon started" in env.log("h1"), 60)
    produce(
        env,
        [
            (b"crash-1", json.dumps({"request_id": "crash-1", "pipeline": crash}).encode()),
            (b"loop-1", json.dumps({"request_id": "loop-1", "pipeline": "demo", "reply_topic": env.requests}).encode()),
            _req("after-crash", pause=0.0),
            (b"after-crash", _req("after-crash", pause=0.1)[1]),  # the same id for another request: a conflict
        ],
    )
    wait_for("the request after the crash", lambda: ledger_rows(env).get("after-crash", {}).get("state") == "succeeded", 60)
    assert daemon.poll() is None, "a run's crash ended the daemon"
    rows = ledger_rows(env)
    assert rows["crash-1"]["state"] == "failed" and "crashed" in rows["crash-1"]["outcome"]["reason"]
    assert "loop-1" not in rows
    letters = {lt["request_id"]: lt for lt in (json.loads(m.value) for m in read_topic(env, env.dlq))}
    assert set(letters) == {"loop-1", "after-crash"}
    assert "reply_topic" in letters["loop-1"]["reason"]
    assert letters["after-crash"]["kind"] == "conflict" and "already used" in letters["after-crash"]["reason"]
    ran = json.loads((env.run_dir / rows["after-crash"]["run_id"] / "request.json").read_text())
    assert ran["overrides"]["pause"] == 0.0, "the conflicting body must not be what ran"

    produce(env, [_req("long-1", pause=30.0)])
    # its pipeline started (the ledger says running from the claim on, before a run is begun: a signal then
    # stops the daemon at once and the second one would find it gone)
    wait_for("long-1's first task", lambda: any(e["event"] == "task" for e in stories(env).get("long-1", [])), 60, every=0.2)
    daemon.send_signal(signal.SIGTERM)  # grace 30 s by default ...
    time.sleep(0.5)
    daemon.send_signal(signal.SIGTERM)  # ... cut short by the second signal
    assert daemon.wait(20) == 0, env.log("h1")[-2000:]
    assert ledger_rows(env)["long-1"]["state"] == "interrupted"

    env.extra["POSTGRES__DSN"] = "postgresql://postgres@127.0.0.1:1/postgres"
    proc = subprocess.run(
        [sys.executable, "run_pipeline.py", "daemon"], cwd=ROOT, env=env.environ(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "error: cannot open the request ledger" in proc.stderr


@pytest.mark.anyio
@pytest.mark.parametrize("store", ["postgres", "mongodb"])
async def test_accept_and_claim_in_one_statement_keeps_the_claim_rules(store: str) -> None:
    """The folded statement claims only what ``claim`` would: new, waiting or lapsed rows of the same request."""
    import uuid

    from pipeline.daemon.ledger import Ledger, PostgresLedger
    from pipeline.daemon.ledger_mongo import MongoLedger

    tag = uuid.uuid4().hex[:10]
    ledger: Ledger = (
        PostgresLedger(service_uri("TEST_POSTGRES_DSN"), f"fold_{tag}")
        if store == "postgres"
        else MongoLedger(service_uri("TEST_MONGO_URI"), f"fold_{tag}", "requests")
    )
    await ledger.open()
    try:
        created, claim = await ledger.accept_claim("r1", "run-a", "demo", "fp1", "me", 30)
        assert created and claim.verdict == "claimed" and claim.row.run_id == "run-a" and claim.row.attempts == 1
        assert claim.row.state == "running" and claim.row.owner == "me" and not claim.row.announced
        created, claim = await ledger.accept_claim("r1", "run-b", "demo", "fp1", "other", 30)  # live lease
        assert not created and claim.verdict == "busy" and claim.row.run_id == "run-a"
        created, claim = await ledger.accept_claim("r1", "run-c", "demo", "fp2", "me", 30)  # another body
        assert not created and claim.verdict == "busy" and claim.row.fingerprint == "fp1" and claim.row.attempts == 1
        assert await ledger.finish("r1", "me", "succeeded", {"event": "succeeded"})
        created, claim = await ledger.accept_claim("r1", "run-d", "demo", "fp1", "me", 30)
        assert not created and claim.verdict == "finished" and claim.row.run_id == "run-a"
        created, _ = await ledger.accept("r2", "run-e", "demo", "fp1")  # waiting in the queue
        claim = await ledger.claim("r2", "me", 0.001, announced=True)  # told while it waited: recorded now
        assert created and claim.verdict == "claimed" and claim.row.announced
        await anyio.sleep(0.05)  # the lease lapses: its daemon died; the folded statement takes it over
        created, claim = await ledger.accept_claim("r2", "run-f", "demo", "fp1", "heir", 30)
        assert not created and claim.verdict == "claimed" and claim.row.run_id == "run-e" and claim.row.attempts == 2
    finally:
        if isinstance(ledger, PostgresLedger) and ledger.pool is not None:
            await ledger.pool.execute(f"DROP TABLE fold_{tag}")
        elif isinstance(ledger, MongoLedger) and ledger.client is not None:
            await ledger.client.drop_database(f"fold_{tag}")
        await ledger.close()


def test_sighup_stops_like_sigterm_unless_started_ignoring_it(env: DaemonEnv) -> None:
    """A closed terminal (SIGHUP) is a graceful stop: the running request is interrupted (resumable), exit 0.
    Started under nohup (SIGHUP ignored), the daemon keeps running."""
    env.extra["DAEMON__GRACE_SECONDS"] = "0.5"
    daemon = env.start("hup")
    wait_for("daemon up", lambda: "daemon started" in env.log("hup"), 60)
    produce(env, [_req("hup-slow", pause=30.0)])
    wait_for("hup-slow running", lambda: ledger_rows(env).get("hup-slow", {}).get("state") == "running", 60, every=0.1)
    daemon.send_signal(signal.SIGHUP)
    assert daemon.wait(30) == 0, env.log("hup")[-2000:]
    assert ledger_rows(env)["hup-slow"]["state"] == "interrupted"
    assert "SIGHUP" in env.log("hup")

    with (env.base / "nohup.log").open("ab") as log:
        nohup = subprocess.Popen(
            [sys.executable, "run_pipeline.py", "daemon"],
            cwd=ROOT,
            env=env.environ(),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
        )
    env.procs.append(nohup)
    wait_for("nohup daemon up", lambda: "daemon started" in env.log("nohup"), 60)
    nohup.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    assert nohup.poll() is None, "a daemon started with SIGHUP ignored stopped on SIGHUP"
    nohup.send_signal(signal.SIGTERM)
    assert nohup.wait(30) == 0


def test_submit_wait_follows_the_story_to_its_outcome_and_names_an_odd_id_verbatim(env: DaemonEnv) -> None:
    """``submit --wait`` reads the status topic as events arrive and exits with the outcome; a request it never
    hears about times out naming the id as typed (brackets included: no value is read as markup)."""
    env.start("s1")
    wait_for("daemon up", lambda: "daemon started" in env.log("s1"), 60)

    def submit(rid: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "run_pipeline.py",
                "submit",
                "demo",
                "--set",
                "rows=400",
                "--set",
                "chunk=200",
                "--set",
                "pause=0",
                "--request-id",
                rid,
                "--wait",
                "--timeout",
                str(timeout),
            ],
            cwd=ROOT,
            env=env.environ(),
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )

    done = submit("sub-1", 120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "request sub-1 sent to" in lines[0]
    said = [line.split("] ", 1)[1] for line in lines[1:]]
    assert said[0] == "accepted" and said[1] == "started" and said[-1] == "succeeded", said
    assert ledger_rows(env)["sub-1"]["state"] == "succeeded"

    odd = submit("odd[x]", 3)  # the daemon dead-letters it without its (invalid) id: no outcome comes back
    assert odd.returncode == 1 and "no outcome for request odd[x] within 3 s" in odd.stderr, odd.stderr[-2000:]
    assert "request odd[x] sent to" in odd.stdout
