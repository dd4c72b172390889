"""The daemon: consume run requests, run each once, tell its story, commit only what is recorded.

Flow of one message: parse and check it (requests.py; a bad one is dead-lettered with its reason) ->
record it in the ledger (``accepted``; a finished request's outcome is re-published instead) -> wait in a
priority queue for a run slot -> claim it (ledger lease) -> run it (fresh, or resumed if its run directory
has state) -> record the outcome -> publish the final status event and wait for the broker -> mark the
offset done. Offsets are committed per partition up to the first message not done (OffsetTracker), so a
crash anywhere re-delivers exactly what was not recorded, and the ledger makes the re-delivery harmless.

Several daemons in one consumer group split the partitions; the ledger's lease settles the moment where a
partition moves while its request still runs (the new owner waits for the lease, then re-publishes).
SIGTERM/SIGINT: stop fetching (an outage backoff ends too), start no pipeline (a request still being claimed
or set up gives its claim back, uncounted, as do queued ones claimed with their acceptance), give running
pipelines ``grace_seconds``, then interrupt them (their run directories keep the state; the ledger says
``interrupted``; their offsets stay uncommitted, so the next daemon resumes them), commit what is done, exit 0.
"""

from __future__ import annotations

import os
import signal
import socket
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from config.settings import Settings
from pipeline.daemon.execution import Execution
from pipeline.daemon.http import DaemonMetrics, serve_http, watch_lag
from pipeline.daemon.intake import Intake, Rebalance
from pipeline.daemon.ledger import Ledger
from pipeline.daemon.state import Board
from pipeline.daemon.status import StatusPublisher
from task_components.clients import kafka_consumer, kafka_producer

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

__all__ = ["Daemon", "DaemonStartError"]


class DaemonStartError(RuntimeError):
    """The ledger or the broker could not be reached at start: one line for the user, exit 2."""


log = structlog.get_logger("pipeline.daemon")


class Daemon:
    """The daemon's life: open the ledger and the clients, compose the intake (fetch, check, record, commit)
    and the execution (claim, run, record) around one ``Board``, hand waiting requests to free run slots,
    renew leases, serve /healthz and /metrics, and stop gracefully on a signal."""

    def __init__(self, settings: Settings, ledger: Ledger, *, owner: str | None = None) -> None:
        self.settings, self.ledger, self.d = settings, ledger, settings.daemon
        self.board = Board(owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
        self.metrics = DaemonMetrics()
        self.http_port: int | None = None
        self.hurry = anyio.Event()  # a second signal: skip the rest of the grace period
        self.intake: Intake | None = None  # (set while the daemon runs)

    @property
    def owner(self) -> str:
        return self.board.owner

    # -- life -------------------------------------------------------------------------------------
    async def run(self) -> None:
        k, d = self.settings.kafka, self.d
        try:
            await self.ledger.open()
        except Exception as exc:
            raise DaemonStartError(f"cannot open the request ledger: {type(exc).__name__}: {exc}") from exc
        producer = kafka_producer(self.settings, linger_ms=2, enable_idempotence=False, acks="all")
        consumer = kafka_consumer(
            self.settings,
            group_id=d.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=d.session_timeout_ms,
            heartbeat_interval_ms=d.heartbeat_interval_ms,
            max_poll_interval_ms=3_600_000,
            fetch_max_wait_ms=50,  # a request waits 50 ms for company, not 500
            fetch_max_bytes=max(52_428_800, d.max_request_bytes * 2),
            max_partition_fetch_bytes=max(1_048_576, d.max_request_bytes + 65_536),
        )
        try:
            try:
                await producer.start()
                consumer.subscribe([k.request_topic], listener=Rebalance(consumer, self.board))
                await consumer.start()
            except Exception as exc:
                raise DaemonStartError(
                    f"cannot reach the Kafka broker at {k.bootstrap_servers} (KAFKA__BOOTSTRAP_SERVERS): {type(exc).__name__}: {exc}"
                ) from exc
            await self._serve(consumer, producer)
        finally:
            with anyio.CancelScope(shield=True):
                for close in (consumer.stop, producer.stop, self.ledger.close):
                    try:
                        await close()
                    except BaseException as exc:  # noqa: BLE001 - e.g. a CancelledError from aiokafka's own tasks
                        log.warning("closing failed", what=close.__qualname__, error=f"{type(exc).__name__}: {exc}")
            log.info("daemon stopped", owner=self.owner)

    async def _serve(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        k, d = self.settings.kafka, self.d
        status = StatusPublisher(producer, k.status_topic, self.owner)
        log.info(
            "daemon started",
            owner=self.owner,
            topic=k.request_topic,
            group=d.consumer_group,
            max_runs=d.max_runs,
            inline_specs=d.inline_specs,
            signed_only=d.signing_secret is not None,
            topic_prefixes=d.topic_prefixes,
            max_run_seconds=d.max_run_seconds,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(status.run)
            tg.start_soon(serve_http, d.http_host, d.http_port, self.metrics, self.health, self._bound)
            tg.start_soon(self._renew_leases)
            tg.start_soon(watch_lag, consumer, self.board.committed, self.metrics)
            tg.start_soon(self._stop_on_signal)
            async with anyio.create_task_group() as runs:
                execution = Execution(self.settings, self.ledger, self.board, self.metrics, status, runs)
                self.intake = intake = Intake(
                    self.settings, self.ledger, self.board, self.metrics, status, consumer, producer, execution.start, runs
                )
                runs.start_soon(self._dispatch, execution)
                await intake.consume()
                await self._shutdown()
                runs.cancel_scope.cancel()
            await intake.commit()
            status.close()
            with anyio.move_on_after(10):
                await status.drained.wait()
            tg.cancel_scope.cancel()

    def _bound(self, port: int) -> None:
        self.http_port = port
        log.info("http listening", url=f"http://{self.d.http_host}:{port}/metrics")

    def health(self) -> dict[str, Any]:
        b = self.board
        assigned = sorted(f"{t}:{p}" for t, p in b.trackers)
        return {
            "status": "stopping" if b.stopping else "ok",
            "owner": self.owner,
            "partitions": assigned,
            "runs_active": len(b.running),
            "queued": len(b.waiting),
        }

    async def _stop_on_signal(self) -> None:
        """First signal: the graceful stop. A second: no more grace, interrupt the runs now (still recorded
        and resumable, still exit 0). The receiver stays open, so no signal falls back to a hard kill."""
        # a closed terminal (SIGHUP) stops it like SIGTERM, unless it was started ignoring hangups (nohup)
        hup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, *hup) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self.board.stopping:
                    log.info("stopping", signal=name, running=len(self.board.running), grace_s=self.d.grace_seconds)
                    self.stop()
                else:
                    log.info("stopping now: interrupting the running pipelines", signal=name)
                    self.hurry.set()

    def stop(self) -> None:
        self.board.stopping = True
        if self.intake is not None:
            self.intake.stop()
        self.board.wake()

    # -- running ----------------------------------------------------------------------------------
    async def _dispatch(self, execution: Execution) -> None:
        """Waiting requests to free run slots, highest priority first; woken by every change on the board."""
        board = self.board
        while True:
            while board.waiting and board.free_slot(self.d.max_runs):
                execution.start(board.next_waiting())
            await board.changed.wait()

    async def _shutdown(self) -> None:
        """Interrupt requests whose pipeline has not started, give running pipelines the grace period, then
        interrupt them resumably."""
        board = self.board
        for request in list(board.running.values()):  # no pipeline of theirs started: none starts now
            if request.starting and request.scope is not None:
                request.interrupted = True
                request.scope.cancel()
        if board.running:
            with anyio.move_on_after(self.d.grace_seconds) as grace:
                async with anyio.create_task_group() as watch:

                    async def cut_short() -> None:
                        await self.hurry.wait()
                        grace.cancel()

                    watch.start_soon(cut_short)
                    while board.running:
                        await board.changed.wait()
                    watch.cancel_scope.cancel()
        for request in list(board.running.values()):
            request.interrupted = True
            if request.scope is not None:
                request.scope.cancel()
        await self._give_back_queued()
        with anyio.move_on_after(30):
            while board.running or board.side:
                await board.changed.wait()

    async def _give_back_queued(self) -> None:
        """Queued requests claimed with their acceptance never ran: their claims go back uncounted, so the next
        daemon need not wait for their leases."""
        board = self.board
        queued = [it for rid, it in board.live.items() if it.claim is not None and rid not in board.running]
        with anyio.move_on_after(10):  # (all of them: a hanging ledger does not hold the stop up for long)
            for request in queued:
                request.claim = None
                try:
                    await self.ledger.unclaim(request.id, self.owner, uncount=request.id not in board.ran)
                except Exception as exc:  # noqa: BLE001 - its lease lapses on its own
                    log.warning("claim not given back", request_id=request.id, error=f"{type(exc).__name__}: {exc}")

    # -- background -------------------------------------------------------------------------------
    async def _renew_leases(self) -> None:
        board = self.board
        while True:
            await anyio.sleep(self.d.lease_seconds / 3)
            try:
                # running ones, and queued ones claimed with their acceptance (their claim is used when they start)
                queued = (r for r, it in board.live.items() if it.claim is not None and r not in board.running)
                held = [*board.running, *queued]
                await self.ledger.renew(self.owner, held, self.d.lease_seconds)
            except Exception as exc:  # noqa: BLE001 - the next renewal may work; the lease is 3 periods long
                log.warning("lease renewal failed", error=f"{type(exc).__name__}: {exc}")
