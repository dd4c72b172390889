"""The daemon's intake: fetch requests, check them, record them, queue them, dead-letter the bad ones,
and commit offsets only for messages whose effect is recorded.

Each message is checked and resolved here once (signature, parse, policy, spec and DAG) and becomes a
``Request`` carrying the result to its run. Offsets are tracked per partition by the tracker *object*: a
rebalance makes a new one, so a request still running from before can never mark a new delivery's
position done. Nothing here polls: a fetch waits for messages (cut short by a stop), a full read-ahead
waits for the board to change, and the committer for an offset to be done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from dag_orchestrator.context import new_run_id
from dag_orchestrator.retry import with_retries
from dag_orchestrator.task import RetryPolicy
from pipeline.daemon.ledger import Claim, LedgerRow
from pipeline.daemon.policy import check_request, check_signature, check_spec
from pipeline.daemon.requests import BadRequest, RunRequest, parse_request, resolve_request
from pipeline.daemon.state import TP, Board, Mark, Request
from task_components.streaming.offsets import OffsetTracker

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from anyio.abc import TaskGroup

    from config.settings import Settings
    from pipeline.daemon.http import DaemonMetrics
    from pipeline.daemon.ledger import Ledger
    from pipeline.daemon.status import StatusPublisher
    from pipeline.spec import PipelineSpec

__all__ = ["OUTAGE_RETRY", "Intake", "Rebalance", "Stopped", "commit_done", "retry_until"]

log = structlog.get_logger("pipeline.daemon")
T = TypeVar("T")
COMMIT_EVERY = 0.1  # seconds between offset commits while requests finish (a commit is a broker round trip)
FETCH_WAIT_MS = 30_000  # a fetch returns as soon as a message arrives; a stop cancels it sooner
# the ledger or broker down: nothing recorded, nothing committed; try again, slower, until it is back
OUTAGE_RETRY = RetryPolicy(attempts=1000, backoff=0.5, factor=2.0, max_delay=30.0)


class Stopped(Exception):
    """The daemon stopped while a call waited to be tried again: given up, nothing recorded."""


async def retry_until(
    fn: Callable[[], Awaitable[T]],
    transient: Callable[[BaseException], bool],
    what: str,
    stop: anyio.Event | None = None,
) -> T:
    """``with_retries`` for as long as ``transient`` says so (the backoff starts again after its 1000 attempts,
    ~8 h at the 30 s cap: ``RetryPolicy.delay`` would overflow a float past ~1024).

    ``stop``: once set, nothing is tried again and a backoff under way ends at once (raising ``Stopped``); a
    call under way is not cut (a ledger statement half-sent would leave a claim nobody knows of)."""
    if stop is None:
        return await _until(fn, transient, what)
    calling = False

    async def call() -> T:
        nonlocal calling
        if stop.is_set():
            raise Stopped(what)
        calling = True
        try:
            return await fn()
        finally:
            calling = False

    result: list[T] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def cut() -> None:
            await stop.wait()
            if not calling:  # backing off: no more waiting (a call under way ends, then is not tried again)
                tg.cancel_scope.cancel()

        tg.start_soon(cut)
        try:
            result.append(await _until(call, lambda exc: not stop.is_set() and transient(exc), what))
        except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group (not as a group)
            failure.append(exc)
        tg.cancel_scope.cancel()
    if failure:
        raise failure[0]
    if not result:
        raise Stopped(what)
    return result[0]


async def _until(fn: Callable[[], Awaitable[T]], transient: Callable[[BaseException], bool], what: str) -> T:
    while True:
        try:
            return await with_retries(fn, OUTAGE_RETRY, transient, what=what, log=log)
        except Exception as exc:
            if not transient(exc):
                raise


class Intake:
    """The consumer side: from a fetched message to a queued (or started) ``Request``, and its offset."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        board: Board,
        metrics: DaemonMetrics,
        status: StatusPublisher,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        start: Callable[[Request], None],
        tasks: TaskGroup,
    ) -> None:
        self.settings, self.d, self.ledger, self.board = settings, settings.daemon, ledger, board
        self.metrics, self.status, self.consumer, self.producer = metrics, status, consumer, producer
        self.start = start  # hands a claimed request to a run slot
        self.tasks = tasks  # background sends (dead letters, replays) live here, so shutdown waits for them
        secret = self.d.signing_secret
        self.secret = secret.get_secret_value() if secret is not None else None
        self._fetching: anyio.CancelScope | None = None

    def stop(self) -> None:
        """Stop fetching now (a request being accepted finishes first)."""
        if self._fetching is not None:
            self._fetching.cancel()

    async def consume(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._commit_when_due)
            while not self.board.stopping:
                room = self.d.prefetch - self.board.in_flight()
                if room <= 0:  # woken when a request is done, a partition is revoked or the daemon stops
                    await self.board.changed.wait()
                    continue
                for tp, messages in (await self._fetch(room)).items():
                    for msg in messages:
                        if self.board.stopping:  # the rest stays uncommitted: the next daemon reads it
                            break
                        await self._accept((tp.topic, tp.partition), msg)
            tg.cancel_scope.cancel()

    async def _fetch(self, room: int) -> dict[Any, list[Any]]:
        with anyio.CancelScope() as self._fetching:
            if self.board.stopping:
                return {}
            return await self.consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=room)
        return {}  # cancelled by a stop

    async def _commit_when_due(self) -> None:
        refused = 0  # commits the broker refused in a row: the next one waits longer
        while True:
            await self.board.commit_due.wait()
            self.board.commit_due = anyio.Event()
            refused = 0 if await self.commit() else refused + 1
            # not one commit per request: offsets done meanwhile go together
            await anyio.sleep(OUTAGE_RETRY.delay(min(refused, OUTAGE_RETRY.attempts)) if refused else COMMIT_EVERY)

    async def _accept(self, tp: TP, msg: Any) -> None:
        tracker = self.board.trackers.setdefault(tp, OffsetTracker())
        mark = (tracker, tracker.register({tp: msg.offset + 1}))
        run_id = new_run_id()
        try:
            # before anything reads the bytes
            check_signature(msg.value, msg.headers, self.secret, self.d.signature_max_age_seconds)
            message = parse_request(msg.value, self.d.max_request_bytes)
            run_path = self.settings.pipeline.run_dir / run_id

            def precheck(spec: PipelineSpec, baseline: PipelineSpec | None) -> None:  # before the DAG is built
                check_spec(message, spec, baseline, self.settings, run_path)

            resolved = resolve_request(message, self.d.pipelines_dir, precheck)
            check_request(message, resolved.dag, self.settings, run_path)
        except BadRequest as bad:
            return self._reject(tp, mark, msg, bad)
        except Exception as exc:  # a check we did not foresee failed: still one bad message, not a crash
            log.exception("request check crashed", partition=tp[1], offset=msg.offset)
            return self._reject(tp, mark, msg, BadRequest("invalid", f"cannot check: {exc!r}"))
        board, rid, fingerprint = self.board, message.request_id, message.fingerprint()
        twin = board.live.get(rid)
        if twin is not None and twin.message.fingerprint() == fingerprint:
            twin.also.append(mark)  # delivered twice while the first is still here: done when that one is
            self.metrics.duplicates.inc()
            return
        # a free slot and nobody waiting: accept and claim in one statement, and run it now
        now = board.free_slot(self.d.max_runs) and twin is None and not board.waiting
        name, owner, lease = resolved.spec.name, board.owner, self.d.lease_seconds

        async def record() -> tuple[bool, LedgerRow, Claim | None]:
            if not now:
                return (*await self.ledger.accept(rid, run_id, name, fingerprint), None)
            created, claim = await self.ledger.accept_claim(rid, run_id, name, fingerprint, owner, lease, rerun=rid in board.ran)
            return created, claim.row, claim if claim.verdict == "claimed" else None

        try:
            created, row, claim = await retry_until(record, lambda _: True, f"ledger: accept {rid}", board.stopped)
        except Exception as exc:  # noqa: BLE001 - stopping with the ledger down: nothing recorded, nothing committed
            log.warning("request not recorded (stopping)", request_id=rid, error=f"{type(exc).__name__}: {exc}")
            return
        if rid in board.live or (row.fingerprint and row.fingerprint != fingerprint):  # a key reused
            # (never claimed here: the folded claim requires the same fingerprint, and no live twin was asked)
            reused = BadRequest(
                "conflict",
                f"request_id {rid!r} was already used for a different request (its "
                "pipeline or params differ): nothing runs; use a new request_id",
                rid,
            )
            return self._reject(tp, mark, msg, reused)
        if row.state in ("succeeded", "failed"):
            self.metrics.duplicates.inc()
            board.side += 1
            self.tasks.start_soon(self._replay, mark, message, row)
            return
        if created:
            self._announce(message, row.run_id)
        request = Request(tp, mark, (msg.timestamp or 0) / 1000, message, resolved, claim=claim, claimed_at=time.monotonic())
        board.live[rid] = request
        if claim is not None and board.free_slot(self.d.max_runs):
            self.start(request)  # claimed: its lease is renewed from now on, so it may not wait in the queue
        else:  # the slot went meanwhile: a claim made with the acceptance waits with it, its lease renewed
            board.queue(request)

    def _reject(self, tp: TP, mark: Mark, msg: Any, bad: BadRequest) -> None:
        """Dead-letter a message in the background (counted, so shutdown waits for it)."""
        self.board.side += 1
        self.tasks.start_soon(self._dead_letter, tp, mark, msg, bad)

    def _announce(self, message: RunRequest, run_id: str) -> None:
        """Tell "accepted" (queued now, so it precedes "started"); once the broker has it, the claim (or, if
        that was already written, one more statement before "started") records it in the ledger.

        A daemon killed before that leaves ``announced`` false and the next claim tells it: the story always
        starts with "accepted" (twice at worst, never missing)."""
        board, rid = self.board, message.request_id
        acked = self.status.emit_acked(
            rid, "accepted", attempt=0, reply_topic=message.reply_topic, run_id=run_id, priority=message.priority
        )
        board.announcing[rid] = done = anyio.Event()

        async def confirm() -> None:
            try:
                await acked()
                board.told.add(rid)  # the ledger learns it with the claim (one statement less per request)
            except Exception as exc:  # noqa: BLE001 - the claim re-tells it
                log.warning("accepted event not confirmed", request_id=rid, error=f"{type(exc).__name__}: {exc}")
                board.announce_failed.add(rid)
            finally:
                board.announcing.pop(rid, None)
                done.set()

        self.tasks.start_soon(confirm)

    async def _replay(self, mark: Mark, message: RunRequest, row: LedgerRow) -> None:
        try:
            await self.status.replay(message.request_id, row, message.reply_topic)
            self.board.done(mark)
        except Exception as exc:  # noqa: BLE001 - not acknowledged: leave the offset, the next delivery replays
            log.warning("outcome not re-published", request_id=message.request_id, error=f"{type(exc).__name__}: {exc}")
        finally:
            self.board.side -= 1
            self.board.wake()

    async def _dead_letter(self, tp: TP, mark: Mark, msg: Any, bad: BadRequest) -> None:
        try:
            # the offset must not pass a bad request that is not in the dead-letter topic yet
            await retry_until(lambda: self._send_dead_letter(tp, msg, bad), lambda _: True, "dead-lettering")
            if bad.request_id:  # retried on its own: a refused event does not send the dead letter again
                rid = bad.request_id
                await retry_until(lambda: self._tell_rejected(rid, bad), lambda _: True, "telling the rejection")
            self.metrics.dead_lettered.labels(bad.kind).inc()
            log.warning("request dead-lettered", request_id=bad.request_id, reason=str(bad), kind=bad.kind)
            self.board.done(mark)
        finally:
            self.board.side -= 1
            self.board.wake()

    async def _send_dead_letter(self, tp: TP, msg: Any, bad: BadRequest) -> None:
        text = msg.value.decode("utf-8", errors="replace") if msg.value is not None else None
        letter = {
            "reason": str(bad),
            "kind": bad.kind,
            "request_id": bad.request_id,
            "daemon": self.board.owner,
            "source": {"topic": tp[0], "partition": tp[1], "offset": msg.offset},
            "value": text if text is None or len(text) <= 4096 else text[:4096] + "...",
            "at": time.time(),
        }
        key = bad.request_id.encode() if bad.request_id else None
        await self.producer.send_and_wait(self.d.dead_letter_topic, json.dumps(letter).encode(), key=key)

    async def _tell_rejected(self, rid: str, bad: BadRequest) -> None:
        # a known request's story is not told by a bad message that borrows its id
        if await self.ledger.row(rid) is None:
            await self.status.emit_final(rid, "rejected", attempt=0, reason=str(bad), kind=bad.kind)

    async def commit(self) -> bool:
        if await commit_done(self.consumer, self.board):
            return True
        self.board.commit_due.set()  # tried again at the next commit round, not only after another request ends
        return False


async def commit_done(consumer: AIOKafkaConsumer, board: Board) -> bool:
    """Commit each assigned partition up to its first message not done; False if the broker refused.

    A tracker hands each ready offset out once: what the broker refused stays in ``board.uncommitted`` for
    the next try (else it would wait for a later request of its partition to end)."""
    pending = board.uncommitted
    for t in board.trackers.values():
        for tp, off in t.ready().items():
            pending[tp] = max(off, pending.get(tp, off))
    assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    offsets = {TopicPartition(*tp): OffsetAndMetadata(off, "") for tp, off in pending.items() if tp in assigned}
    if not offsets:
        return True
    try:
        await consumer.commit(offsets)
    except Exception as exc:  # noqa: BLE001 - a rebalance raced us: the new owner re-reads, the ledger dedups
        log.warning("commit failed", error=f"{type(exc).__name__}: {exc}")
        return False
    for tp, om in offsets.items():
        key = (tp.topic, tp.partition)
        board.committed[key] = om.offset
        if pending.get(key) == om.offset:  # (not moved on while the broker answered)
            del pending[key]
    return True


class Rebalance(ConsumerRebalanceListener):
    """Revoked partitions: commit what is done there, forget their queued requests (the new owner has them)."""

    def __init__(self, consumer: AIOKafkaConsumer, board: Board) -> None:
        self.consumer, self.board = consumer, board

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if not await commit_done(self.consumer, self.board):
            self.board.commit_due.set()
        self.board.forget_partitions({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        for tp in assigned:
            self.board.trackers.setdefault((tp.topic, tp.partition), OffsetTracker())
        log.info("partitions assigned", owner=self.board.owner, partitions=sorted(tp.partition for tp in assigned))
