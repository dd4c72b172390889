"""The daemon's parts under a stop and under retries, without a broker or a ledger: a request still being
claimed or prepared never starts its pipeline after a stop, an outage backoff ends on the stop, a requeue
forgets only its own request, the committer backs off while the broker refuses, and a dead letter is sent once
even when the rejection's status event needs another try."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from aiokafka import TopicPartition

import pipeline.daemon.execution as execution_module
import pipeline.daemon.intake as intake_module
from config.settings import DaemonSettings, PipelineSettings, Settings
from dag_orchestrator.task import RetryPolicy
from pipeline.daemon.execution import Execution
from pipeline.daemon.http import DaemonMetrics
from pipeline.daemon.intake import Intake, Stopped, retry_until
from pipeline.daemon.ledger import Claim, LedgerRow
from pipeline.daemon.requests import BadRequest, Resolved, RunRequest, resolve_request
from pipeline.daemon.server import Daemon
from pipeline.daemon.state import Board, Request
from task_components.streaming.offsets import OffsetTracker

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
TP = ("requests", 0)


@pytest.fixture(scope="module")
def resolved() -> Resolved:
    return resolve_request(RunRequest(request_id="r", pipeline="demo"), PIPELINES)


def make_request(board: Board, resolved: Resolved, rid: str = "r", offset: int = 0) -> Request:
    tracker = board.trackers.setdefault(TP, OffsetTracker())
    mark = (tracker, tracker.register({TP: offset + 1}))
    return Request(TP, mark, 0.0, RunRequest(request_id=rid, pipeline="demo"), resolved)


class Ledger:
    """A ledger whose claim takes ``claim_seconds`` (or fails ``failures`` times first); records every call."""

    def __init__(self, claim_seconds: float = 0.0, failures: int = 0) -> None:
        self.claim_seconds, self.failures = claim_seconds, failures
        self.calls: list[tuple[str, Any]] = []

    async def claim(self, request_id: str, owner: str, lease: float, announced: bool = False, rerun: bool = False) -> Claim:
        self.calls.append(("claim", request_id))
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ledger down")
        await anyio.sleep(self.claim_seconds)
        return Claim("claimed", LedgerRow(request_id, "running", "run-1", owner, 1, None, announced=True))

    async def unclaim(self, request_id: str, owner: str, uncount: bool = True) -> None:
        self.calls.append(("unclaim", uncount))

    async def finish(self, request_id: str, owner: str, state: str, outcome: dict[str, Any]) -> bool:
        self.calls.append(("finish", state))
        return True


class Status:
    def __init__(self) -> None:
        self.events: list[str] = []

    def emit(self, request_id: str, event: str, **fields: Any) -> None:
        self.events.append(event)

    async def emit_final(self, request_id: str, event: str, **fields: Any) -> None:
        self.events.append(event)


def settings(tmp_path: Path, **daemon: Any) -> Settings:
    return Settings(daemon=DaemonSettings(pipelines_dir=PIPELINES, **daemon), pipeline=PipelineSettings(run_dir=tmp_path))


# -- a stop before the pipeline starts ---------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("shutdown", [True, False], ids=["stop-cancels-the-claim", "stop-seen-after-the-claim"])
async def test_a_stop_while_a_request_is_being_claimed_never_starts_its_pipeline(
    tmp_path: Path, resolved: Resolved, monkeypatch: pytest.MonkeyPatch, shutdown: bool
) -> None:
    """Before: only a request whose pipeline already ran had a cancel scope, so the stop skipped one still in
    its claim; it then started its pipeline after the stop, and its row kept our lease and a counted attempt."""
    executed: list[str] = []

    async def execute(*args: Any, **kwargs: Any) -> Any:
        executed.append("ran")
        raise AssertionError("the pipeline started after the stop")

    monkeypatch.setattr(execution_module, "execute", execute)
    ledger, status = Ledger(claim_seconds=0.3), Status()
    daemon = Daemon(settings(tmp_path, grace_seconds=5.0), ledger)  # type: ignore[arg-type]  # the parts used
    board = daemon.board
    request = make_request(board, resolved)
    board.live[request.id] = request
    with anyio.fail_after(3):  # (a grace period of 5 s would be waited out before the fix)
        async with anyio.create_task_group() as runs:
            execution = Execution(daemon.settings, ledger, board, DaemonMetrics(), status, runs)  # type: ignore[arg-type]  # the parts used
            execution.start(request)
            await anyio.sleep(0.1)  # the claim is under way
            daemon.stop()
            if shutdown:
                await daemon._shutdown()
    assert executed == [] and "started" not in status.events
    assert ("unclaim", True) in ledger.calls and ("finish", "succeeded") not in ledger.calls  # given back, uncounted
    assert request.interrupted and board.running == {} and board.live == {"r": request}  # its offset stays
    assert not board.trackers[TP].ready()


# -- an outage backoff ends on the stop -----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_retry_until_ends_its_backoff_when_the_daemon_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_module, "OUTAGE_RETRY", RetryPolicy(attempts=1000, backoff=30.0, jitter=0.0))
    stop, calls = anyio.Event(), []

    async def down() -> None:
        calls.append(1)
        raise ConnectionError("ledger down")

    async def stop_soon() -> None:
        await anyio.sleep(0.1)
        stop.set()

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_soon)
            with pytest.raises(Stopped):
                await retry_until(down, lambda _: True, "test", stop)
    assert calls == [1]


class Consumer:
    """One batch of three valid requests, then fetches that wait as long as they are allowed to."""

    def __init__(self) -> None:
        self.batches = [
            [
                SimpleNamespace(value=json.dumps({"request_id": f"q{i}", "pipeline": "demo"}).encode(), headers=[], offset=i, timestamp=0)
                for i in range(3)
            ]
        ]

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        if self.batches:
            return {TopicPartition(*TP): self.batches.pop()}
        await anyio.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(*TP)}

    async def commit(self, offsets: dict[Any, Any]) -> None:
        raise ConnectionError("broker refuses")


class DownLedger:
    def __init__(self) -> None:
        self.calls = 0

    async def accept_claim(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise ConnectionError("ledger down")

    accept = accept_claim


@pytest.mark.anyio
async def test_a_stop_during_an_outage_backoff_ends_the_intake_and_its_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the backoff slept up to 30 s through the stop, and each remaining message made another try."""
    monkeypatch.setattr(intake_module, "OUTAGE_RETRY", RetryPolicy(attempts=1000, backoff=30.0, jitter=0.0))
    board, ledger = Board("me"), DownLedger()
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            part = Intake(
                settings(tmp_path),
                ledger,
                board,
                DaemonMetrics(),
                None,
                Consumer(),
                None,  # type: ignore[arg-type]  # the parts used
                lambda _: None,
                tg,
            )
            tg.start_soon(part.consume)
            while not ledger.calls:
                await anyio.sleep(0.01)
            await anyio.sleep(0.1)  # backing off
            board.stopping = True
            part.stop()
    assert ledger.calls == 1 and board.live == {}


# -- a requeue forgets only its own request ------------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_requeue_after_a_revoke_keeps_a_newer_delivery_of_the_same_id(
    tmp_path: Path, resolved: Resolved, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the old request's requeue popped ``live[request_id]`` whatever it held, dropping the new delivery."""
    monkeypatch.setattr(execution_module, "UNRECORDED_RETRY", RetryPolicy(attempts=5, backoff=0.2, jitter=0.0))
    board, ledger = Board("me"), Ledger(failures=1)
    old = make_request(board, resolved)
    board.live[old.id] = old
    with anyio.fail_after(3):
        async with anyio.create_task_group() as runs:
            execution = Execution(settings(tmp_path), ledger, board, DaemonMetrics(), Status(), runs)  # type: ignore[arg-type]  # the parts used
            execution.start(old)
            while old.unrecorded == 0:
                await anyio.sleep(0.01)
            board.forget_partitions({TP})  # revoked while the old one waits to be tried again ...
            new = make_request(board, resolved, offset=5)  # ... and delivered again after it came back
            board.live[new.id] = new
    assert board.live == {"r": new} and board.waiting == []
    board.release(old)  # a late release of the old one does not forget the new one either
    assert board.live == {"r": new}


# -- the committer backs off -------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_the_committer_backs_off_while_the_broker_refuses_and_commits_once_it_accepts(tmp_path: Path, resolved: Resolved) -> None:
    """Before: a try every 100 ms while the broker refused, each committing nothing after the first (the tracker
    hands a ready offset out once): the refused offset waited for a later request of its partition to end."""
    board, consumer = Board("me"), Consumer()
    consumer.batches.clear()
    tries: list[float] = []
    refusing = [True]

    async def commit(offsets: dict[Any, Any]) -> None:
        tries.append(anyio.current_time())
        if refusing[0]:
            raise ConnectionError("broker refuses")

    consumer.commit = commit  # type: ignore[method-assign]  # a broker that refuses, then accepts
    with anyio.fail_after(6):
        async with anyio.create_task_group() as tg:
            part = Intake(
                settings(tmp_path),
                None,
                board,
                DaemonMetrics(),
                None,
                consumer,
                None,  # type: ignore[arg-type]  # the parts used
                lambda _: None,
                tg,
            )
            tg.start_soon(part.consume)
            board.release(make_request(board, resolved))
            await anyio.sleep(1.7)
            refused = list(tries)
            refusing[0] = False
            while board.committed != {TP: 1}:
                await anyio.sleep(0.05)
            board.stopping = True
            part.stop()
    assert len(refused) == 3, refused  # at 0, 0.5 and 1.6 s: not seventeen tries
    assert refused[2] - refused[1] > 1.5 * (refused[1] - refused[0])  # the pause grows
    assert board.uncommitted == {}


# -- a dead letter is sent once --------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_refused_rejection_event_does_not_send_the_dead_letter_again(
    tmp_path: Path, resolved: Resolved, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_module, "OUTAGE_RETRY", RetryPolicy(attempts=5, backoff=0.0, jitter=0.0))
    letters: list[str] = []
    told: list[str] = []

    class Producer:
        async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
            letters.append(topic)

    class Rows:
        async def row(self, request_id: str) -> None:
            return None

    class Told:
        async def emit_final(self, request_id: str, event: str, **fields: Any) -> None:
            told.append(event)
            if len(told) == 1:
                raise ConnectionError("broker refuses the status event")

    board = Board("me")
    mark = make_request(board, resolved).mark
    msg = SimpleNamespace(value=b"{}", offset=0)
    board.side += 1
    async with anyio.create_task_group() as tg:
        part = Intake(
            settings(tmp_path),
            Rows(),
            board,
            DaemonMetrics(),
            Told(),
            Consumer(),
            Producer(),  # type: ignore[arg-type]  # the parts used
            lambda _: None,
            tg,
        )
        await part._dead_letter(TP, mark, msg, BadRequest("invalid", "no pipeline", "bad-1"))
    assert len(letters) == 1
    assert told == ["rejected", "rejected"] and board.side == 0 and board.trackers[TP].ready() == {TP: 1}


# -- claims made with the acceptance -------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_claim_older_than_a_lease_is_made_again_before_the_run(
    tmp_path: Path, resolved: Resolved, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a request claimed with its acceptance ran on that claim however long it had waited in the queue,
    though a lease lapsed meanwhile (renewals failing) may have let another daemon take it."""

    async def execute(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("stop here")  # (the run's outcome does not matter to this test)

    monkeypatch.setattr(execution_module, "execute", execute)
    board, ledger = Board("me"), Ledger()
    old = make_request(board, resolved)
    old.claim = Claim("claimed", LedgerRow("r", "running", "run-1", "me", 1, None))
    old.claimed_at = anyio.current_time() - 100  # (time.monotonic's clock) queued for 100 s, the lease is 15 s
    board.live[old.id] = old
    with anyio.fail_after(5):
        async with anyio.create_task_group() as runs:
            Execution(settings(tmp_path), ledger, board, DaemonMetrics(), Status(), runs).start(old)  # type: ignore[arg-type]  # the parts used
    assert ledger.calls[0] == ("claim", "r")


@pytest.mark.anyio
async def test_a_stop_gives_back_the_claims_of_queued_requests(tmp_path: Path, resolved: Resolved) -> None:
    """Before: a queued request claimed with its acceptance kept our lease after the stop: the next daemon waited
    it out, and the claim counted as an attempt."""
    ledger = Ledger()
    daemon = Daemon(settings(tmp_path), ledger)  # type: ignore[arg-type]  # the parts used
    queued, plain = make_request(daemon.board, resolved), make_request(daemon.board, resolved, "p", offset=1)
    queued.claim = Claim("claimed", LedgerRow("r", "running", "run-1", "me", 1, None))
    daemon.board.live = {"r": queued, "p": plain}
    daemon.stop()
    with anyio.fail_after(3):
        await daemon._shutdown()
    assert ledger.calls == [("unclaim", True)] and queued.claim is None


def test_a_request_forgotten_on_a_revoke_leaves_nothing_behind(resolved: Resolved) -> None:
    """Before: what was known about its "accepted" event stayed on the board for good (one entry per request)."""
    board = Board("me")
    told, failed = make_request(board, resolved, "t"), make_request(board, resolved, "f", offset=1)
    board.live = {"t": told, "f": failed}
    board.told.add("t")
    board.announce_failed.add("f")
    board.forget_partitions({TP})
    assert board.live == {} and board.told == set() and board.announce_failed == set()
