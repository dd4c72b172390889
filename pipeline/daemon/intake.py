"""The daemon's intake: fetch requests, check them, record them, queue them, dead-letter the bad ones,
and commit offsets only for messages whose effect is recorded.

A mixin of ``Daemon`` (server.py owns the state it uses; this half is the consumer side, the other half
runs what was queued). Offsets are tracked per partition by the tracker *object*: a rebalance makes a new
one, so a request still running from before can never mark a new delivery's position done.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from dag_orchestrator.context import new_run_id
from pipeline.daemon.ledger import Claim, LedgerRow
from pipeline.daemon.policy import check_request, check_signature, check_spec
from pipeline.daemon.requests import BadRequest, Resolved, RunRequest, parse_request, resolve_request
from task_components.streaming.offsets import OffsetTracker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from config.settings import DaemonSettings, Settings
    from pipeline.daemon.http import DaemonMetrics
    from pipeline.daemon.ledger import Ledger
    from pipeline.daemon.server import Daemon
    from pipeline.daemon.status import StatusPublisher
    from pipeline.spec import PipelineSpec

__all__ = ["TP", "Intake", "Item", "Rebalance"]

log = structlog.get_logger("pipeline.daemon")
TP = tuple[str, int]
COMMIT_EVERY = 0.1  # seconds between offset commits while requests finish (a commit is a broker round trip)


@dataclass(eq=False)
class Item:
    """One delivered request message, from fetch to its offset being done."""

    tp: TP
    mark: tuple[OffsetTracker, int]  # the partition's tracker *object* (a rebalance makes a new one) and seq
    timestamp: float
    request: RunRequest
    resolved: Resolved  # the checked spec and DAG, carried to the run (never parsed or built again)
    also: list[tuple[OffsetTracker, int]] = field(default_factory=list)  # duplicates while this one is live
    claim: Claim | None = None  # claimed together with its acceptance (it went straight to a free slot)
    scope: anyio.CancelScope | None = None
    interrupted: bool = False


class Intake:
    """The consumer side of ``Daemon``; the attributes below are Daemon's, set in its ``__init__``."""

    settings: Settings
    d: DaemonSettings
    ledger: Ledger
    metrics: DaemonMetrics
    status: StatusPublisher | None
    producer: AIOKafkaProducer | None
    consumer: AIOKafkaConsumer | None
    owner: str
    trackers: dict[TP, OffsetTracker]
    committed: dict[TP, int]
    live: dict[str, Item]
    waiting: list[tuple[int, int, Item]]
    order: Iterator[int]
    stopping: bool
    side: int
    to_commit: bool  # an offset was marked done since the last commit
    announcing: dict[str, anyio.Event]
    announce_failed: set[str]
    told: set[str]
    running: dict[str, Item]
    secret: str | None
    changed: anyio.Event
    _wake: Callable[[], None]
    _start: Callable[[Item], None]

    async def _consume(self, tg: Any) -> None:
        assert self.consumer is not None
        last_commit = 0.0
        while not self.stopping:
            room = self.d.prefetch - sum(t.in_flight for t in self.trackers.values())
            if room > 0:
                batches = await self.consumer.getmany(timeout_ms=200, max_records=room)
                for tp, messages in batches.items():
                    for msg in messages:
                        await self._accept(tg, (tp.topic, tp.partition), msg)
            else:  # woken when a request is done, a partition is revoked or the daemon stops (or a commit is due)
                due = last_commit + COMMIT_EVERY - time.monotonic() if self.to_commit else math.inf
                with anyio.move_on_after(max(0.0, due)):
                    await self.changed.wait()
            if self.to_commit and time.monotonic() - last_commit >= COMMIT_EVERY:  # not one commit per request
                last_commit, self.to_commit = time.monotonic(), False
                await self._commit()

    async def _accept(self, tg: Any, tp: TP, msg: Any) -> None:
        tracker = self.trackers.setdefault(tp, OffsetTracker())
        mark = (tracker, tracker.register({tp: msg.offset + 1}))
        run_id = new_run_id()
        try:
            # before anything reads the bytes
            check_signature(msg.value, msg.headers, self.secret, self.d.signature_max_age_seconds)
            request = parse_request(msg.value, self.d.max_request_bytes)
            run_path = self.settings.pipeline.run_dir / run_id

            def precheck(spec: PipelineSpec, baseline: PipelineSpec | None) -> None:  # before the DAG is built
                check_spec(request, spec, baseline, self.settings, run_path)

            resolved = resolve_request(request, self.d.pipelines_dir, precheck)
            check_request(request, resolved.dag, self.settings, run_path)
        except BadRequest as bad:
            return self._reject(tg, tp, mark, msg, bad)
        except Exception as exc:  # a check we did not foresee failed: still one bad message, not a crash
            log.exception("request check crashed", partition=tp[1], offset=msg.offset)
            return self._reject(tg, tp, mark, msg, BadRequest("invalid", f"cannot check: {exc!r}"))
        rid = request.request_id
        fingerprint = request.fingerprint()
        if rid in self.live and self.live[rid].request.fingerprint() == fingerprint:
            # delivered twice while the first is still here: done when that one is
            self.live[rid].also.append(mark)
            self.metrics.duplicates.inc()
            return
        # a free slot and nobody waiting: accept and claim in one statement, and run it now
        now = not self.stopping and rid not in self.live and not self.waiting and len(self.running) < self.d.max_runs
        claim: Claim | None = None
        delay = 0.5
        while True:
            try:
                if now:
                    created, claim = await self.ledger.accept_claim(rid, run_id, resolved.spec.name, fingerprint,
                                                                    self.owner, self.d.lease_seconds)  # fmt: skip
                    row = claim.row
                    claim = claim if claim.verdict == "claimed" else None
                else:
                    created, row = await self.ledger.accept(rid, run_id, resolved.spec.name, fingerprint)
                break
            except Exception as exc:  # noqa: BLE001 - the ledger is down: nothing recorded, nothing committed
                if self.stopping:
                    return
                log.warning("ledger unavailable; retrying", request_id=rid, error=f"{type(exc).__name__}: {exc}")
                await anyio.sleep(delay)
                delay = min(delay * 2, 30)
        assert self.status is not None
        if rid in self.live or (row.fingerprint and row.fingerprint != fingerprint):  # a key reused
            # (never claimed here: the folded claim requires the same fingerprint, and no live twin was asked)
            bad = BadRequest("conflict", f"request_id {rid!r} was already used for a different request (its pipeline "
                                         "or params differ): nothing runs; use a new request_id", rid)  # fmt: skip
            return self._reject(tg, tp, mark, msg, bad)
        if row.state in ("succeeded", "failed"):
            self.metrics.duplicates.inc()
            self.side += 1
            tg.start_soon(self._replay, mark, request, row)
            return
        if created:
            self._announce(tg, request, row.run_id)
        item = Item(tp, mark, (msg.timestamp or 0) / 1000, request, resolved, claim=claim)
        self.live[rid] = item
        if claim is not None and len(self.running) < self.d.max_runs and not self.stopping:
            self._start(item)  # claimed: its lease is renewed from now on, so it may not wait in the queue
        else:  # the slot went meanwhile: a claim made with the acceptance waits with it, its lease renewed
            self._queue(item)

    def _reject(self, tg: Any, tp: TP, mark: tuple[OffsetTracker, int], msg: Any, bad: BadRequest) -> None:
        """Dead-letter a message in the background (counted, so shutdown waits for it)."""
        self.side += 1
        tg.start_soon(self._dead_letter, tp, mark, msg, bad)

    def _announce(self, tg: Any, request: RunRequest, run_id: str) -> None:
        """Tell "accepted" (queued now, so it precedes "started"); once the broker has it, the claim (or, if
        that was already written, one more statement before "started") records it in the ledger.

        A daemon killed before that leaves ``announced`` false and the next claim tells it: the story always
        starts with "accepted" (twice at worst, never missing)."""
        assert self.status is not None
        rid = request.request_id
        acked = self.status.emit_acked(rid, "accepted", attempt=0, reply_topic=request.reply_topic, run_id=run_id,
                                       priority=request.priority)  # fmt: skip
        self.announcing[rid] = done = anyio.Event()

        async def record() -> None:
            try:
                await acked()
                self.told.add(rid)  # the ledger learns it with the claim (one statement less per request)
            except Exception as exc:  # noqa: BLE001 - the claim re-tells it
                log.warning("accepted event not confirmed", request_id=rid, error=f"{type(exc).__name__}: {exc}")
                self.announce_failed.add(rid)
            finally:
                self.announcing.pop(rid, None)
                done.set()

        tg.start_soon(record)

    def _queue(self, item: Item) -> None:
        heapq.heappush(self.waiting, (-item.request.priority, next(self.order), item))
        self._wake()

    async def _replay(self, mark: tuple[OffsetTracker, int], request: RunRequest, row: LedgerRow) -> None:
        try:
            await self._publish_outcome(request, row)
            self._done(mark)
        except Exception as exc:  # noqa: BLE001 - not acknowledged: leave the offset, the next delivery replays
            log.warning("outcome not re-published", request_id=request.request_id, error=f"{type(exc).__name__}: {exc}")
        finally:
            self.side -= 1
            self._wake()

    async def _publish_outcome(self, request: RunRequest, row: LedgerRow) -> None:
        """A finished request delivered again: say its recorded outcome again (marked replay), run nothing."""
        assert self.status is not None
        outcome = row.outcome or {}
        body = {k: v for k, v in outcome.items() if k != "event"}
        await self.status.emit_final(request.request_id, outcome.get("event", row.state), attempt=row.attempts,
                                     reply_topic=request.reply_topic, replay=True, **body)  # fmt: skip

    async def _dead_letter(self, tp: TP, mark: tuple[OffsetTracker, int], msg: Any, bad: BadRequest) -> None:
        try:
            await self._send_dead_letter(tp, msg, bad)
            self._done(mark)
        finally:
            self.side -= 1
            self._wake()

    async def _send_dead_letter(self, tp: TP, msg: Any, bad: BadRequest) -> None:
        assert self.producer is not None and self.status is not None
        text = msg.value.decode("utf-8", errors="replace") if msg.value is not None else None
        letter = {"reason": str(bad), "kind": bad.kind, "request_id": bad.request_id, "daemon": self.owner,
                  "source": {"topic": tp[0], "partition": tp[1], "offset": msg.offset},
                  "value": text if text is None or len(text) <= 4096 else text[:4096] + "...", "at": time.time()}
        key = bad.request_id.encode() if bad.request_id else None
        delay = 0.5
        while True:  # the offset must not pass a bad request that is not in the dead-letter topic yet
            try:
                await self.producer.send_and_wait(self.d.dead_letter_topic, json.dumps(letter).encode(), key=key)
                # a known request's story is not told by a bad message that borrows its id
                if bad.request_id and await self.ledger.row(bad.request_id) is None:
                    await self.status.emit_final(bad.request_id, "rejected", attempt=0, reason=str(bad),
                                                 kind=bad.kind)  # fmt: skip
                break
            except Exception as exc:  # noqa: BLE001 - the broker is down: keep trying, slower
                log.warning("dead-lettering failed; retrying", error=f"{type(exc).__name__}: {exc}", in_s=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 30)
        self.metrics.dead_lettered.labels(bad.kind).inc()
        log.warning("request dead-lettered", request_id=bad.request_id, reason=str(bad), kind=bad.kind)

    def _done(self, mark: tuple[OffsetTracker, int]) -> None:
        if self._ours(mark):  # else revoked meanwhile: the new owner decides
            mark[0].finish(mark[1])
            self.to_commit = True
        self._wake()

    def _ours(self, mark: tuple[OffsetTracker, int]) -> bool:
        return any(t is mark[0] for t in self.trackers.values())

    async def _commit(self) -> None:
        assert self.consumer is not None
        ready = {tp: off for t in self.trackers.values() for tp, off in t.ready().items()}
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        offsets = {TopicPartition(*tp): OffsetAndMetadata(off, "") for tp, off in ready.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - a rebalance raced us: the new owner re-reads, the ledger dedups
            log.warning("commit failed", error=f"{type(exc).__name__}: {exc}")
            self.to_commit = True  # tried again at the next commit round, not only after another request ends
            return
        for tp, om in offsets.items():
            self.committed[(tp.topic, tp.partition)] = om.offset


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked partitions: commit what is done there, forget their queued requests (the new owner has them)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def on_partitions_revoked(self, revoked: Any) -> None:
        d = self.daemon
        await d._commit()
        gone = {(tp.topic, tp.partition) for tp in revoked}
        d.waiting = [w for w in d.waiting if w[2].tp not in gone]
        heapq.heapify(d.waiting)
        for rid in [r for r, it in d.live.items() if it.tp in gone and r not in d.running]:
            d.live.pop(rid)
        for tp in gone:
            d.trackers.pop(tp, None)
            d.committed.pop(tp, None)
        d._wake()  # their requests no longer count against the read-ahead

    async def on_partitions_assigned(self, assigned: Any) -> None:
        for tp in assigned:
            self.daemon.trackers.setdefault((tp.topic, tp.partition), OffsetTracker())
        log.info("partitions assigned", owner=self.daemon.owner, partitions=sorted(tp.partition for tp in assigned))
