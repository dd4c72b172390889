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
import os
import signal
import socket
import time
import uuid
from typing import Any

import anyio
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config.settings import Settings
from dag_orchestrator.events import Event, EventKind
from pipeline.daemon.execution import TASK_EVENTS, Prepared, outcome_of, prepare_request, run_prepared
from pipeline.daemon.http import DaemonMetrics, serve_http, watch_lag
from pipeline.daemon.intake import TP, Intake, Item, Rebalance
from pipeline.daemon.ledger import Ledger, LedgerRow
from pipeline.daemon.requests import BadRequest
from pipeline.daemon.status import StatusPublisher
from pipeline.runner import RunDirBusy, innermost
from pipeline.spec import SpecError
from task_components.connect import kafka_options
from task_components.streaming.offsets import OffsetTracker

__all__ = ["Daemon", "DaemonStartError"]


class DaemonStartError(RuntimeError):
    """The ledger or the broker could not be reached at start: one line for the user, exit 2."""


log = structlog.get_logger("pipeline.daemon")


class Daemon(Intake):
    def __init__(self, settings: Settings, ledger: Ledger, *, owner: str | None = None) -> None:
        self.settings, self.ledger, self.d = settings, ledger, settings.daemon
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.metrics = DaemonMetrics()
        self.http_port: int | None = None
        self.trackers: dict[TP, OffsetTracker] = {}
        self.committed: dict[TP, int] = {}
        self.live: dict[str, Item] = {}  # request_id -> its item, queued or running here
        self.waiting: list[tuple[int, int, Item]] = []
        self.running: dict[str, Item] = {}
        self.order = itertools.count()
        self.stopping = False
        self.hurry = anyio.Event()  # a second signal: skip the rest of the grace period
        self.side = 0  # dead-letter, replay and final-event sends in progress (shutdown lets them finish)
        self.to_commit = False
        self.announcing: dict[str, anyio.Event] = {}  # "accepted" sent, broker/ledger confirmation pending
        self.announce_failed: set[str] = set()  # ... and it failed: the claim tells it again
        self.told: set[str] = set()  # ... and the broker has it (the claim records that in the ledger)
        secret = self.d.signing_secret
        self.secret = secret.get_secret_value() if secret is not None else None
        self.changed = anyio.Event()  # something for the dispatcher (a request queued, a slot freed, a stop)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.status: StatusPublisher | None = None
        self.runs: Any = None  # the task group running requests (set while the daemon runs)

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
                self.consumer.subscribe([k.request_topic], listener=Rebalance(self))
                await self.consumer.start()
            except Exception as exc:
                raise DaemonStartError(f"cannot reach the Kafka broker at {k.bootstrap_servers} "
                                       f"(KAFKA__BOOTSTRAP_SERVERS): {type(exc).__name__}: {exc}") from exc  # fmt: skip
            self.status = StatusPublisher(self.producer, k.status_topic, self.owner)
            log.info("daemon started", owner=self.owner, topic=k.request_topic, group=self.d.consumer_group,
                     max_runs=self.d.max_runs, inline_specs=self.d.inline_specs, signed_only=self.secret is not None,
                     topic_prefixes=self.d.topic_prefixes, max_run_seconds=self.d.max_run_seconds)  # fmt: skip
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.status.run)
                tg.start_soon(serve_http, self.d.http_host, self.d.http_port, self.metrics, self.health, self._bound)
                tg.start_soon(self._renew_leases)
                tg.start_soon(watch_lag, self.consumer, self.committed, self.metrics)
                tg.start_soon(self._stop_on_signal)
                async with anyio.create_task_group() as runs:
                    self.runs = runs
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
        # a closed terminal (SIGHUP) stops it like SIGTERM, unless it was started ignoring hangups (nohup)
        hup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, *hup) as signals:
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

    # -- running ----------------------------------------------------------------------------------
    async def _dispatch(self, runs: Any) -> None:
        while True:
            while self.waiting and len(self.running) < self.d.max_runs and not self.stopping:
                _, _, item = heapq.heappop(self.waiting)
                self._start(item)
            await self.changed.wait()

    def _start(self, item: Item) -> None:
        self.running[item.request.request_id] = item
        self.metrics.runs_active.set(len(self.running))
        self.runs.start_soon(self._serve, item)

    async def _serve(self, item: Item) -> None:
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

    async def _claim_and_run(self, item: Item) -> float:
        """Run the request if it is ours to run; returns seconds to wait before trying it again (0: done)."""
        assert self.status is not None
        req, rid, d = item.request, item.request.request_id, self.d
        claim, item.claim = item.claim, None
        if claim is None:  # (else claimed with its acceptance) told here already: the claim records it too
            claim = await self.ledger.claim(rid, self.owner, d.lease_seconds, announced=rid in self.told)
        if claim.verdict == "busy":  # another live daemon runs it (a partition moved): wait for its lease
            return d.lease_seconds / 2
        row = claim.row
        if claim.verdict == "finished":
            await self._publish_outcome(req, row)
            self._release(item)
            return 0.0
        started = time.time()
        deadline = req.deadline_ts()
        # the daemon's own limit, whatever the sender asked for, counted from the first start (resumes included)
        cap = started - row.ran_for + d.max_run_seconds
        if row.attempts > d.max_attempts:  # e.g. a request whose run kills the daemon: never claimed for ever
            await self._told(item, row)
            why = (f"claimed {row.attempts} times (DAEMON__MAX_ATTEMPTS={d.max_attempts}): each earlier attempt was "
                   "interrupted or its daemon died; not run again")  # fmt: skip
            await self._record(item, row.attempts, {"event": "failed", "run_id": row.run_id, "reason": why})
            return 0.0
        if started >= cap:
            await self._told(item, row)
            why = f"the run exceeded the daemon's maximum run time {d.max_run_seconds:g} s (DAEMON__MAX_RUN_SECONDS)"
            await self._record(item, row.attempts, {"event": "failed", "run_id": row.run_id, "reason": why})
            return 0.0
        if deadline is not None and started >= deadline:
            await self._told(item, row)
            why = "the deadline passed before the run could start"
            await self._record(item, row.attempts, {"event": "failed", "run_id": row.run_id, "reason": why})
            return 0.0
        # A fresh run is prepared while "accepted" is still on its way (no await in between: nothing can cancel
        # it half-way); a resume waits, since it reads its files in a thread.
        fresh = not (self.settings.pipeline.run_dir / row.run_id / "request.json").is_file()
        if not fresh:
            await self._told(item, row)
        prepared, failure = None, None
        try:
            prepared = await self._prepare(item, row.run_id, fresh)
        except (RunDirBusy, SpecError, BadRequest) as exc:
            failure = exc
        if fresh:
            try:
                await self._told(item, row)
            except BaseException:
                if prepared is not None and prepared.run.lock is not None:
                    prepared.run.lock.release()
                raise
        if isinstance(failure, RunDirBusy):
            return d.lease_seconds / 2
        if failure is not None or prepared is None:  # e.g. the pipeline file changed since the request was checked
            reason = f"forbidden: {failure}" if isinstance(failure, BadRequest) else str(failure)
            await self._record(item, row.attempts, {"event": "failed", "run_id": row.run_id, "reason": reason})
            return 0.0
        self.status.emit(rid, "started", attempt=row.attempts, reply_topic=req.reply_topic, run_id=row.run_id,
                         resumed=prepared.resumed, pipeline=prepared.run.spec.name)  # fmt: skip
        if item.timestamp:
            self.metrics.request_to_start.observe(max(0.0, started - item.timestamp))
        result = None
        with anyio.CancelScope() as scope:
            item.scope = scope
            scope.deadline = anyio.current_time() + (min(cap, deadline or cap) - time.time())
            try:
                result = await run_prepared(prepared, self.settings, self._observer(item, row.attempts, prepared))
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # a task crashed its run (SystemExit, its own BaseException...):
                crash = innermost(exc)  # that is this request's outcome, not the daemon's end
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
            why = f"the run exceeded the daemon's maximum run time {d.max_run_seconds:g} s (DAEMON__MAX_RUN_SECONDS)"
            if deadline is not None and deadline <= cap:
                why = f"deadline {req.deadline} exceeded"
            outcome = {"event": "failed", "run_id": row.run_id, "reason": why}
        else:
            outcome = outcome_of(prepared, result, started)
        await self._record(item, row.attempts, outcome)
        return 0.0

    async def _told(self, item: Item, row: LedgerRow) -> None:
        """Before "started": the story's "accepted" is on the topic and the ledger knows (else a takeover after a
        crash would tell "accepted" again, after this attempt's "started")."""
        assert self.status is not None
        req, rid = item.request, item.request.request_id
        if rid in self.announcing:  # our own "accepted" is still on its way
            await self.announcing[rid].wait()
        failed_here = rid in self.announce_failed
        self.announce_failed.discard(rid)
        if failed_here or (not row.announced and rid not in self.told):  # never reached the broker
            await self.status.emit_acked(rid, "accepted", attempt=0, reply_topic=req.reply_topic, run_id=row.run_id,
                                         priority=req.priority, retold=True)()  # fmt: skip
            await self.ledger.announce(rid)
        elif not row.announced:  # told after the claim was written
            await self.ledger.announce(rid)

    async def _prepare(self, item: Item, run_id: str, fresh: bool) -> Prepared:
        """A fresh run's preparation is a few small file operations (the spec and DAG came with the item): done
        here, like the runner does, since a worker thread would wait for the GIL behind this busy loop. A resume
        reads the run's files, so it goes to a thread."""
        args = (item.request, item.resolved, run_id, self.settings)
        if not fresh:
            return await anyio.to_thread.run_sync(prepare_request, *args)
        return prepare_request(*args)

    def _observer(self, item: Item, attempt: int, prepared: Any) -> Any:
        assert self.status is not None
        emit, req = self.status.emit, item.request
        named = item.resolved.file is not None  # inline specs name their own tasks: one label for all, or a sender
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

    async def _record(self, item: Item, attempt: int, outcome: dict[str, Any]) -> None:
        """Ledger first, then the final event (acknowledged), then the offset: in that order, or not at all."""
        assert self.status is not None
        rid, req = item.request.request_id, item.request
        recorded = await self.ledger.finish(rid, self.owner, outcome["event"], outcome)
        if recorded:
            body = {k: v for k, v in outcome.items() if k != "event"}
            # the pipeline is over and recorded: its slot may run the next request while the broker acknowledges
            if self.running.pop(rid, None) is not None:
                self.metrics.runs_active.set(len(self.running))
                self._wake()
            self.side += 1  # (shutdown waits for it like for a dead letter)
            try:
                await self.status.emit_final(rid, outcome["event"], attempt=attempt, reply_topic=req.reply_topic,
                                             **body)  # fmt: skip
            finally:
                self.side -= 1
                self._wake()
            self.metrics.runs.labels(outcome["event"]).inc()
        else:  # our lease lapsed and another daemon claimed it: its outcome is the one that counts
            log.warning("request taken over by another daemon; outcome not recorded", request_id=rid)
        self._release(item)

    def _release(self, item: Item) -> None:
        self.live.pop(item.request.request_id, None)
        self.told.discard(item.request.request_id)
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
                # running ones, and queued ones claimed with their acceptance (their claim is used when they start)
                queued = (r for r, it in self.live.items() if it.claim is not None and r not in self.running)
                held = [*self.running, *queued]
                await self.ledger.renew(self.owner, held, self.d.lease_seconds)
            except Exception as exc:  # noqa: BLE001 - the next renewal may work; the lease is 3 periods long
                log.warning("lease renewal failed", error=f"{type(exc).__name__}: {exc}")
