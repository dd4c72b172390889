"""The daemon's parts on their own, without a broker or a ledger: the board's order and offsets, typed
outcomes in the JSON shape senders read, the outage retry, and an intake that waits on events (a stop
cuts its fetch short, a done offset wakes the committer) instead of polling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from aiokafka import TopicPartition

import pipeline.daemon.intake as intake_module
from config.settings import DaemonSettings, Settings
from dag_orchestrator.task import RetryPolicy
from pipeline.daemon.http import DaemonMetrics
from pipeline.daemon.intake import Intake, retry_until
from pipeline.daemon.outcome import Ending, Outcome, RunReport
from pipeline.daemon.requests import Resolved, RunRequest, resolve_request
from pipeline.daemon.state import Board, Request
from task_components.streaming.offsets import OffsetTracker

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
TP = ("requests", 0)


@pytest.fixture(scope="module")
def resolved() -> Resolved:
    return resolve_request(RunRequest(request_id="r", pipeline="demo"), PIPELINES)


def request(board: Board, resolved: Resolved, rid: str, priority: int = 0, offset: int = 0) -> Request:
    tracker = board.trackers.setdefault(TP, OffsetTracker())
    mark = (tracker, tracker.register({TP: offset + 1}))
    message = RunRequest(request_id=rid, pipeline="demo", priority=priority)
    return Request(TP, mark, 0.0, message, resolved)


# -- the board -------------------------------------------------------------------------------------------------
def test_waiting_requests_leave_highest_priority_first_then_oldest(resolved: Resolved) -> None:
    board = Board("me")
    for rid, priority in [("low", -1), ("a", 0), ("high", 5), ("b", 0)]:
        board.queue(request(board, resolved, rid, priority))
    assert [board.next_waiting().id for _ in range(4)] == ["high", "a", "b", "low"]


def test_an_offset_is_committable_only_once_its_request_and_every_earlier_one_are_done(resolved: Resolved) -> None:
    board = Board("me")
    first, second = request(board, resolved, "x", offset=0), request(board, resolved, "y", offset=1)
    second.also.append(request(board, resolved, "y", offset=2).mark)  # delivered again while it ran
    board.live = {"x": first, "y": second}
    board.release(second)
    assert board.commit_due.is_set() and board.trackers[TP].ready() == {}  # "x" still runs
    board.release(first)
    assert board.trackers[TP].ready() == {TP: 3} and board.live == {}


def test_a_revoked_partition_forgets_its_waiting_requests_and_a_stale_mark_is_ignored(resolved: Resolved) -> None:
    board = Board("me")
    queued, running = request(board, resolved, "q"), request(board, resolved, "r", offset=1)
    board.live, board.running = {"q": queued, "r": running}, {"r": running}
    board.queue(queued)
    board.forget_partitions({TP})
    assert board.waiting == [] and list(board.live) == ["r"] and board.trackers == {}
    board.trackers[TP] = OffsetTracker()  # the partition comes back: a new tracker
    board.release(running)  # done after the revoke: the new owner decides, nothing is marked here
    assert not board.commit_due.is_set() and board.trackers[TP].ready() == {}


@pytest.mark.anyio
async def test_wake_reaches_every_waiter_once() -> None:
    board, woken = Board("me"), []

    async def waiter(n: int) -> None:
        await board.changed.wait()
        woken.append(n)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, 1)
            tg.start_soon(waiter, 2)
            await anyio.sleep(0)
            board.wake()
    assert sorted(woken) == [1, 2] and not board.changed.is_set()  # a fresh event for the next change


# -- outcomes --------------------------------------------------------------------------------------------------
def test_outcomes_keep_the_json_shape_senders_and_the_ledger_read() -> None:
    refused = Outcome.failed("run-1", "the deadline passed before the run could start")
    assert refused.stored() == {"event": "failed", "run_id": "run-1", "reason": "the deadline passed before the run could start"}
    assert refused.told() == {"run_id": "run-1", "reason": "the deadline passed before the run could start"}
    stopped = Outcome.interrupted("run-2")
    assert stopped.stored() == {"event": "interrupted", "run_id": "run-2"}  # resumable: no reason kept
    assert stopped.told() == {"run_id": "run-2", "reason": "the daemon stopped; the run resumes later"}
    assert not stopped.ending.is_final and Ending.FAILED.is_final
    report = RunReport("demo", {"count": "succeeded"}, {"count": "3 rows"}, 1.5, True, "runs/run-3/report.json")
    ran = Outcome(Ending.SUCCEEDED, "run-3", None, report)
    assert list(ran.stored()) == ["event", "run_id", "pipeline", "reason", "tasks", "summary", "seconds", "resumed", "report"]
    assert ran.stored()["reason"] is None and ran.stored()["resumed"] is True
    assert ran.told() == {k: v for k, v in ran.stored().items() if k != "event"}


# -- the outage retry ------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_retry_until_rides_out_an_outage_and_gives_up_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_module, "OUTAGE_RETRY", RetryPolicy(attempts=2, backoff=0.0, jitter=0.0))
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 5:  # more failures than one round of attempts: the backoff starts again
            raise ConnectionError("ledger down")
        return "recorded"

    assert await retry_until(flaky, lambda _: True, "test") == "recorded" and len(calls) == 5
    stopping = [False]

    async def down() -> None:
        stopping[0] = len(calls) >= 7  # e.g. the daemon is told to stop meanwhile
        calls.append(1)
        raise ConnectionError("ledger down")

    with pytest.raises(ConnectionError):
        await retry_until(down, lambda _: not stopping[0], "test")


# -- the intake waits on events --------------------------------------------------------------------------------
class Consumer:
    """Just enough of a consumer: a fetch that waits as long as it is allowed to, and recorded commits."""

    def __init__(self) -> None:
        self.fetches = 0
        self.commits: list[dict[Any, Any]] = []

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        self.fetches += 1
        await anyio.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(*TP)}

    async def commit(self, offsets: dict[Any, Any]) -> None:
        self.commits.append(offsets)


def intake(board: Board, consumer: Consumer, tg: Any, prefetch: int = 16) -> Intake:
    settings = Settings(daemon=DaemonSettings(prefetch=prefetch, pipelines_dir=PIPELINES))
    return Intake(settings, None, board, DaemonMetrics(), None, consumer, None, lambda _: None, tg)  # type: ignore[arg-type]  # parts these paths never touch


@pytest.mark.anyio
async def test_a_stop_cuts_the_fetch_short_and_a_done_offset_wakes_the_committer(resolved: Resolved) -> None:
    board, consumer = Board("me"), Consumer()
    done = request(board, resolved, "x", offset=41)
    with anyio.fail_after(3):  # the fetch alone would wait 30 s
        async with anyio.create_task_group() as tg:
            part = intake(board, consumer, tg)
            tg.start_soon(part.consume)
            await anyio.sleep(0.05)
            board.release(done)
            while not consumer.commits:
                await anyio.sleep(0.01)
            board.stopping = True
            part.stop()
    assert consumer.commits[0] == {TopicPartition(*TP): intake_module.OffsetAndMetadata(42, "")}
    assert board.committed == {TP: 42} and consumer.fetches == 1


@pytest.mark.anyio
async def test_a_full_read_ahead_fetches_nothing_until_a_request_is_done(resolved: Resolved) -> None:
    board, consumer = Board("me"), Consumer()
    waiting = request(board, resolved, "x")
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            part = intake(board, consumer, tg, prefetch=1)
            tg.start_soon(part.consume)
            await anyio.sleep(0.1)
            assert consumer.fetches == 0  # asleep on the board, not asking the broker
            board.release(waiting)
            while not consumer.fetches:
                await anyio.sleep(0.01)
            board.stopping = True
            part.stop()
