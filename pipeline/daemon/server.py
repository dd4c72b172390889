"""The daemon: consume run requests, run each once, tell its story, commit only what is recorded.

Flow of one message: parse and check it (requests.py; a bad one is dead-lettered with its reason) ->
record it in the ledger (``accepted``; a finished request's outcome is re-published instead) -> wait in a
priority queue for a run slot -> claim it (ledger lease) -> run it (fresh, or resumed if its run directory
has state) -> record the outcome -> publish the final status event and wait for the broker -> mark the
offset done. Offsets are committed per partition up to the first message not done (OffsetTracker), so a
crash anywhere re-delivers exactly what was not recorded, and the ledger makes the re-delivery harmless.

Several daemons in one consumer group split the partitions; the ledger's lease settles the moment where a
partition moves while its request still runs (the new owner waits for the lease, then re-publishes).
SIGTERM/SIGINT: stop fetching, give running pipelines ``grace_seconds``, then interrupt them (their run
directories keep the state; the ledger says ``interrupted``; their offsets stay uncommitted, so the next
daemon resumes them), commit what is done, exit 0.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from config.settings import Settings
from dag_orchestrator.context import new_run_id
from dag_orchestrator.events import Event, EventKind
from pipeline.daemon.execution import TASK_EVENTS, outcome_of, prepare_request, run_prepared
from pipeline.daemon.http import DaemonMetrics, serve_http
from pipeline.daemon.ledger import Ledger, LedgerRow
from pipeline.daemon.requests import BadRequest, RunRequest, parse_request, resolve_spec
from pipeline.daemon.status import StatusPublisher
from pipeline.runner import RunDirBusy
from pipeline.spec import SpecError
from task_components.connect import kafka_options
from task_components.sources.offsets import OffsetTracker

__all__ = ["Daemon", "DaemonStartError"]


class DaemonStartError(RuntimeError):
    """The ledger or the broker could not be reached at start: one line for the user, exit 2."""


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc

log = structlog.get_logger("pipeline.daemon")
TP = tuple[str, int]


@dataclass(eq=False)
class _Item:
    """One delivered request message, from fetch to its offset being done."""

    tp: TP
    mark: tuple[OffsetTracker, int]  # the partition's tracker *object* (a rebalance makes a new one) and seq
    timestamp: float
    request: RunRequest
    file: Path | None
    also: list[tuple[OffsetTracker, int]] = field(default_factory=list)  # duplicates while this one is live
    scope: anyio.CancelScope | None = None
    interrupted: bool = False


class Daemon:
    def __init__(self, settings: Settings, ledger: Ledger, *, owner: str | None = None) -> None:
        self.settings, self.ledger, self.d = settings, ledger, settings.daemon
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.metrics = DaemonMetrics()
        self.http_port: int | None = None
        self.trackers: dict[TP, OffsetTracker] = {}
        self.committed: dict[TP, int] = {}
        self.live: dict[str, _Item] = {}  # request_id -> its item, queued or running here
        self.waiting: list[tuple[int, int, _Item]] = []
        self.running: dict[str, _Item] = {}
        self.order = itertools.count()
        self.stopping = False
        self.hurry = anyio.Event()  # a second signal: skip the rest of the grace period
        self.side = 0  # dead-letter and replay sends in progress (shutdown lets them finish)
        self.announcing: dict[str, anyio.Event] = {}  # "accepted" sent, broker/ledger confirmation pending
        self.announce_failed: set[str] = set()  # ... and it failed: the claim tells it again
        self.changed = anyio.Event()  # something for the dispatcher (a request queued, a slot freed, a stop)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.status: StatusPublisher | None = None

    # -- life -------------------------------------------------------------------------------------
    async def run(self) -> None:
        k = self.settings.kafka
        opts = kafka_options(self.settings)
        try:
            await self.ledger.open()
        except Exception as exc:
            raise DaemonStartError(f"cannot open the request ledger: {type(exc).__name__}: {exc}") from exc
        self.producer = AIOKafkaProducer(**opts, linger_ms=2, enable_idempotence=False, acks="all")
        self.consumer = AIOKafkaConsumer(
            **opts, group_id=self.d.consumer_group, enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=self.d.session_timeout_ms, heartbeat_interval_ms=self.d.heartbeat_interval_ms,
            max_poll_interval_ms=3_600_000, fetch_max_wait_ms=50,  # a request waits 50 ms for company, not 500
            fetch_max_bytes=max(52_428_800, self.d.max_request_bytes * 2),
            max_partition_fetch_bytes=max(1_048_576, self.d.max_request_bytes + 65_536),
        )  # fmt: skip
        try:
            try:
                await self.producer.start()
                self.consumer.subscribe([k.request_topic], listener=_Rebalance(self))
                await self.consumer.start()
            except Exception as exc:
                raise DaemonStartError(f"cannot reach the Kafka broker at {k.bootstrap_servers} "
                                       f"(KAFKA__BOOTSTRAP_SERVERS): {type(exc).__name__}: {exc}") from exc  # fmt: skip
            self.status = StatusPublisher(self.producer, k.status_topic, self.owner)
            log.info("daemon started", owner=self.owner, topic=k.request_topic, group=self.d.consumer_group,
                     max_runs=self.d.max_runs)  # fmt: skip
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.status.run)
                if self.d.http_port is not None:
                    tg.start_soon(serve_http, self.d.http_host, self.d.http_port, self.metrics, self.health,
                                  self._bound)  # fmt: skip
                tg.start_soon(self._renew_leases)
                tg.start_soon(self._watch_lag)
                tg.start_soon(self._stop_on_signal)
                async with anyio.create_task_group() as runs:
                    runs.start_soon(self._dispatch, runs)
                    await self._consume(runs)
                    await self._shutdown()
                    runs.cancel_scope.cancel()
                await self._commit()
                self.status.close()
                with anyio.move_on_after(10):
                    await self.status.drained.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for close in (self.consumer.stop, self.producer.stop, self.ledger.close):
                    try:
                        await close()
                    except BaseException as exc:  # noqa: BLE001 - e.g. a CancelledError from aiokafka's own tasks
                        log.warning("closing failed", what=close.__qualname__, error=f"{type(exc).__name__}: {exc}")
            log.info("daemon stopped", owner=self.owner)

    def _bound(self, port: int) -> None:
        self.http_port = port
        log.info("http listening", url=f"http://{self.d.http_host}:{port}/metrics")

    def health(self) -> dict[str, Any]:
        assigned = sorted(f"{t}:{p}" for t, p in self.trackers)
        return {"status": "stopping" if self.stopping else "ok", "owner": self.owner, "partitions": assigned,
                "runs_active": len(self.running), "queued": len(self.waiting)}  # fmt: skip

    async def _stop_on_signal(self) -> None:
        """First signal: the graceful stop. A second: no more grace, interrupt the runs now (still recorded
        and resumable, still exit 0). The receiver stays open, so no signal falls back to a hard kill."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self.stopping:
                    log.info("stopping", signal=name, running=len(self.running), grace_s=self.d.grace_seconds)
                    self.stop()
                else:
                    log.info("stopping now: interrupting the running pipelines", signal=name)
                    self.hurry.set()

    def stop(self) -> None:
        self.stopping = True
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    # -- fetching ---------------------------------------------------------------------------------
    async def _consume(self, tg: Any) -> None:
        assert self.consumer is not None
        while not self.stopping:
            room = self.d.prefetch - sum(t.in_flight for t in self.trackers.values())
            if room <= 0:
                with anyio.move_on_after(0.2):
                    await self.changed.wait()
                await self._commit()
                continue
            batches = await self.consumer.getmany(timeout_ms=200, max_records=room)
            for tp, messages in batches.items():
                for msg in messages:
                    await self._accept(tg, (tp.topic, tp.partition), msg)
            await self._commit()

    async def _accept(self, tg: Any, tp: TP, msg: Any) -> None:
        tracker = self.trackers.setdefault(tp, OffsetTracker())
        mark = (tracker, tracker.register({tp: msg.offset + 1}))
        try:
            request = parse_request(msg.value, self.d.max_request_bytes)
            spec, file = resolve_spec(request, self.d.pipelines_dir)
        except BadRequest as bad:
            self.side += 1
            tg.start_soon(self._dead_letter, tp, mark, msg, bad)
            return
        except Exception as exc:  # a check we did not foresee failed: still one bad message, not a crash
            log.exception("request check crashed", partition=tp[1], offset=msg.offset)
            self.side += 1
            tg.start_soon(self._dead_letter, tp, mark, msg, BadRequest("invalid", f"cannot check: {exc!r}"))
            return
        rid = request.request_id
        k = self.settings.kafka
        if request.reply_topic in (k.request_topic, self.d.dead_letter_topic):  # would feed itself / its DLQ
            bad = BadRequest("invalid", f"field 'reply_topic': {request.reply_topic!r} is the daemon's own "
                                        "request or dead-letter topic", rid)  # fmt: skip
            self.side += 1
            tg.start_soon(self._dead_letter, tp, mark, msg, bad)
            return
        if rid in self.live and self.live[rid].request.fingerprint() == request.fingerprint():
            # delivered twice while the first is still here: done when that one is
            self.live[rid].also.append(mark)
            self.metrics.duplicates.inc()
            return
        delay = 0.5
        while True:
            try:
                created, row = await self.ledger.accept(rid, new_run_id(), spec.name, request.fingerprint())
                break
            except Exception as exc:  # noqa: BLE001 - the ledger is down: nothing recorded, nothing committed
                if self.stopping:
                    return
                log.warning("ledger unavailable; retrying", request_id=rid, error=f"{type(exc).__name__}: {exc}")
                await anyio.sleep(delay)
                delay = min(delay * 2, 30)
        assert self.status is not None
        if rid in self.live or (row.fingerprint and row.fingerprint != request.fingerprint()):  # a key reused
            bad = BadRequest("conflict", f"request_id {rid!r} was already used for a different request (its pipeline "
                                         "or params differ): nothing runs; use a new request_id", rid)  # fmt: skip
            self.side += 1
            tg.start_soon(self._dead_letter, tp, mark, msg, bad)
            return
        if row.state in ("succeeded", "failed"):
            self.metrics.duplicates.inc()
            self.side += 1
            tg.start_soon(self._replay, mark, request, row)
            return
        if created:
            self._announce(tg, request, row.run_id)
        item = _Item(tp, mark, (msg.timestamp or 0) / 1000, request, file)
        self.live[rid] = item
        self._queue(item)

    def _announce(self, tg: Any, request: RunRequest, run_id: str) -> None:
        """Tell "accepted" (queued now, so it precedes "started"); once the broker has it, the ledger says so.

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
                await self.ledger.announce(rid)
            except Exception as exc:  # noqa: BLE001 - the claim re-tells it
                log.warning("accepted event not confirmed", request_id=rid, error=f"{type(exc).__name__}: {exc}")
                self.announce_failed.add(rid)
            finally:
                self.announcing.pop(rid, None)
                done.set()

        tg.start_soon(record)

    def _queue(self, item: _Item) -> None:
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
            return
        for tp, om in offsets.items():
            self.committed[(tp.topic, tp.partition)] = om.offset

    # -- running ----------------------------------------------------------------------------------
    async def _dispatch(self, runs: Any) -> None:
        while True:
            while self.waiting and len(self.running) < self.d.max_runs and not self.stopping:
                _, _, item = heapq.heappop(self.waiting)
                self.running[item.request.request_id] = item
                self.metrics.runs_active.set(len(self.running))
                runs.start_soon(self._serve, item)
            await self.changed.wait()

    async def _serve(self, item: _Item) -> None:
        rid = item.request.request_id
        requeue = 0.0
        try:
            requeue = await self._claim_and_run(item)
        except Exception as exc:  # noqa: BLE001 - the ledger or broker failed: not recorded, so try again later
            log.error("request not recorded; will retry", request_id=rid, error=f"{type(exc).__name__}: {exc}")
            requeue = 5.0
        finally:
            self.running.pop(rid, None)
            self.metrics.runs_active.set(len(self.running))
            self._wake()
        if requeue and not self.stopping:
            await anyio.sleep(requeue)
            if self._ours(item.mark) and not self.stopping:
                self._queue(item)
                return
        if requeue:
            self.live.pop(rid, None)

    async def _claim_and_run(self, item: _Item) -> float:
        """Run the request if it is ours to run; returns seconds to wait before trying it again (0: done)."""
        assert self.status is not None
        req, rid, d = item.request, item.request.request_id, self.d
        claim = await self.ledger.claim(rid, self.owner, d.lease_seconds)
        if claim.verdict == "busy":  # another live daemon runs it (a partition moved): wait for its lease
            return d.lease_seconds / 2
        row = claim.row
        if claim.verdict == "finished":
            await self._publish_outcome(req, row)
            self._release(item)
            return 0.0
        if rid in self.announcing:  # our own "accepted" is still on its way: "started" must follow it
            await self.announcing[rid].wait()
        failed_here = rid in self.announce_failed
        self.announce_failed.discard(rid)
        if failed_here or (not row.announced and rid not in self.announcing):  # never reached the broker
            await self.status.emit_acked(rid, "accepted", attempt=0, reply_topic=req.reply_topic, run_id=row.run_id,
                                         priority=req.priority, retold=True)()  # fmt: skip
            await self.ledger.announce(rid)
        started = time.time()
        deadline = req.deadline_ts()
        if deadline is not None and started >= deadline:
            why = "the deadline passed before the run could start"
            outcome = {"event": "failed", "run_id": row.run_id, "reason": why}
            await self._record(item, row.attempts, outcome)
            return 0.0
        try:
            prepared = await anyio.to_thread.run_sync(prepare_request, req, item.file, row.run_id, self.settings)
        except RunDirBusy:
            return d.lease_seconds / 2
        except SpecError as exc:  # e.g. the pipeline file changed since the request was checked
            await self._record(item, row.attempts, {"event": "failed", "run_id": row.run_id, "reason": str(exc)})
            return 0.0
        self.status.emit(rid, "started", attempt=row.attempts, reply_topic=req.reply_topic, run_id=row.run_id,
                         resumed=prepared.resumed, pipeline=prepared.run.spec.name)  # fmt: skip
        if item.timestamp:
            self.metrics.request_to_start.observe(max(0.0, started - item.timestamp))
        result = None
        with anyio.CancelScope() as scope:
            item.scope = scope
            if deadline is not None:
                scope.deadline = anyio.current_time() + (deadline - time.time())
            try:
                result = await run_prepared(prepared, self.settings, self._observer(item, row.attempts, prepared))
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # a task crashed its run (SystemExit, its own BaseException...):
                crash = _innermost(exc)  # that is this request's outcome, not the daemon's end
                if isinstance(crash, anyio.get_cancelled_exc_class()):
                    raise
                outcome = {"event": "failed", "run_id": row.run_id,
                           "reason": f"the run crashed: {type(crash).__name__}: {crash}"}  # fmt: skip
                await self._record(item, row.attempts, outcome)
                return 0.0
        if result is None and item.interrupted:  # a stop after the grace period: resumable, not an outcome
            await self.ledger.finish(rid, self.owner, "interrupted", {"event": "interrupted", "run_id": row.run_id})
            why = "the daemon stopped; the run resumes later"
            await self.status.emit_final(rid, "interrupted", attempt=row.attempts, reply_topic=req.reply_topic,
                                         run_id=row.run_id, reason=why)  # fmt: skip
            return 0.0
        if result is None:
            outcome = {"event": "failed", "run_id": row.run_id, "reason": f"deadline {req.deadline} exceeded"}
        else:
            outcome = outcome_of(prepared, result, started)
        await self._record(item, row.attempts, outcome)
        return 0.0

    def _observer(self, item: _Item, attempt: int, prepared: Any) -> Any:
        assert self.status is not None
        emit, req = self.status.emit, item.request
        named = item.file is not None  # inline specs name their own tasks: one label for all, or a sender
        pipeline = prepared.run.spec.name if named else "inline"  # could grow /metrics without bound
        seconds, began = self.metrics.task_seconds, {}

        def observe(event: Event) -> None:
            state = TASK_EVENTS.get(event.kind)
            if state is None or event.task is None:
                return
            emit(req.request_id, "task", attempt=attempt, reply_topic=req.reply_topic, task=event.task, state=state,
                 error=event.error, task_attempt=event.attempt)  # fmt: skip
            if event.kind is EventKind.TASK_STARTED:
                began[event.task] = event.at
            elif event.kind in (EventKind.TASK_SUCCEEDED, EventKind.TASK_FAILED) and event.task in began:
                task = event.task if named else "inline"
                seconds.labels(pipeline, task, state).observe(event.at - began.pop(event.task))

        return observe

    async def _record(self, item: _Item, attempt: int, outcome: dict[str, Any]) -> None:
        """Ledger first, then the final event (acknowledged), then the offset: in that order, or not at all."""
        assert self.status is not None
        rid, req = item.request.request_id, item.request
        recorded = await self.ledger.finish(rid, self.owner, outcome["event"], outcome)
        if recorded:
            body = {k: v for k, v in outcome.items() if k != "event"}
            await self.status.emit_final(rid, outcome["event"], attempt=attempt, reply_topic=req.reply_topic, **body)
            self.metrics.runs.labels(outcome["event"]).inc()
        else:  # our lease lapsed and another daemon claimed it: its outcome is the one that counts
            log.warning("request taken over by another daemon; outcome not recorded", request_id=rid)
        self._release(item)

    def _release(self, item: _Item) -> None:
        self.live.pop(item.request.request_id, None)
        for mark in (item.mark, *item.also):
            self._done(mark)

    async def _shutdown(self) -> None:
        """Give running pipelines the grace period, then interrupt them resumably."""
        if self.running:
            with anyio.move_on_after(self.d.grace_seconds) as grace:
                async with anyio.create_task_group() as watch:

                    async def cut_short() -> None:
                        await self.hurry.wait()
                        grace.cancel()

                    watch.start_soon(cut_short)
                    while self.running:
                        await self.changed.wait()
                    watch.cancel_scope.cancel()
        for item in list(self.running.values()):
            item.interrupted = True
            if item.scope is not None:
                item.scope.cancel()
        with anyio.move_on_after(30):
            while self.running or self.side:
                await self.changed.wait()

    # -- background -------------------------------------------------------------------------------
    async def _renew_leases(self) -> None:
        while True:
            await anyio.sleep(self.d.lease_seconds / 3)
            try:
                await self.ledger.renew(self.owner, list(self.running), self.d.lease_seconds)
            except Exception as exc:  # noqa: BLE001 - the next renewal may work; the lease is 3 periods long
                log.warning("lease renewal failed", error=f"{type(exc).__name__}: {exc}")

    async def _watch_lag(self) -> None:
        assert self.consumer is not None
        while True:
            await anyio.sleep(2)
            tps = list(self.consumer.assignment())
            if not tps:
                continue
            try:
                # the fetch high watermark first: Tansu's ListOffsets(latest) can lag behind the log
                missing = [tp for tp in tps if self.consumer.highwater(tp) is None]
                ends = await self.consumer.end_offsets(missing) if missing else {}
                for tp in tps:
                    key = (tp.topic, tp.partition)
                    if key not in self.committed:
                        self.committed[key] = (await self.consumer.committed(tp)) or 0
                    end = self.consumer.highwater(tp)
                    end = ends.get(tp, 0) if end is None else end
                    self.metrics.lag.labels(str(tp.partition)).set(max(0, end - self.committed[key]))
            except Exception as exc:  # noqa: BLE001 - a figure for /metrics; try again next time
                log.debug("lag not measured", error=f"{type(exc).__name__}: {exc}")


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
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

    async def on_partitions_assigned(self, assigned: Any) -> None:
        for tp in assigned:
            self.daemon.trackers.setdefault((tp.topic, tp.partition), OffsetTracker())
        log.info("partitions assigned", owner=self.daemon.owner, partitions=sorted(tp.partition for tp in assigned))
