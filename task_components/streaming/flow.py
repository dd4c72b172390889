"""Batches flowing down the engine's stream edges, and their acknowledgements flowing back to the source.

Why: the source may commit a batch's offsets only once every sink (and the dead-letter topic) took it,
yet the stages and sinks are now tasks of their own, downstream of the source, so the source no longer
sees their outcome directly. Each batch travels as a ``Flowing`` (the same in-process objects, never
copied) with its ``AckLedger``, which counts the copies of the batch still on their way, like Storm's
acker: a task that passes a batch on adds one count per consumer before sending, and removes its own
count once it is done with it. When the count of a batch reaches zero every task downstream of the
source has finished with it, and the ledger hands its sequence number back to the source, which commits
in order. A task that fails breaks the ledgers of the sources it reads from, directly or through the
steps before it (``participating``), so such a source stops instead of waiting for a batch that will
never be finished; a source it does not read from goes on. A batch's records rejected on the way are
owed to a dead-letter sink: a batch whose dead letters no dead-letter sink wrote breaks the ledger
instead of being acknowledged (nothing is committed that nothing kept).

The ledger also carries what all writers of one source share: the retry settings and the circuit
breaker (the source stops fetching while it is open), and the figures the source reports (records
written per sink, refusals), also counted in the run's ``/metrics`` when it serves them (``metrics``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from pydantic import BaseModel, Field

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.streams import StreamConsumerGone
from task_components.contracts import StreamBatch, StreamRecord
from task_components.streaming.metrics import SourceMetrics
from task_components.streaming.resilience import CircuitBreaker, RetrySettings

__all__ = [
    "AckLedger",
    "DownstreamFailed",
    "Flowing",
    "SinkResult",
    "StageResult",
    "StepResult",
    "StreamWiringError",
    "open_ledger",
    "participating",
    "pass_on",
]

_LEDGERS = "streaming.ledgers"  # key of the run's live ledgers in ctx.services.scratch


class DownstreamFailed(RuntimeError):
    """A task downstream of the source failed: the batches it held will never be acknowledged."""


class StreamWiringError(ValueError):
    """A streaming step wired so that batches or rejected records would reach no one (found at run start)."""


class StepResult(BaseModel):
    """What a streaming stage or sink returns: its own figures (the source's result has the run's)."""

    batches: int = 0
    records: int = Field(0, description="records handed on as dead letters (stages, refusing sinks) or written")
    written: int = 0
    refused: int = 0


class StageResult(StepResult):
    """A stage's figures; its own type so the wiring check tells a stage (a batch producer) from a sink."""


class SinkResult(StepResult):
    """A sink's figures (a sink passes on only its refusals: no stage or sink may read it)."""


@dataclass(slots=True)
class AckLedger:
    retry: RetrySettings
    breaker: CircuitBreaker
    on_done: Callable[[int], None]
    pending: dict[int, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    error: str | None = None
    broken: anyio.Event = field(default_factory=anyio.Event)
    on_broken: Callable[[], None] | None = None
    owed: dict[int, dict[str, int]] = field(default_factory=dict)  # per batch: sender -> dead letters unwritten
    metrics: SourceMetrics | None = None  # the source's /metrics figures, when the run serves them

    def hold(self, seq: int, copies: int) -> None:
        self.pending[seq] = self.pending.get(seq, 0) + copies

    def owe(self, seq: int, sender: str, records: int) -> None:
        """``sender`` handed on ``records`` dead letters of batch ``seq``: a dead-letter sink must write them."""
        self.owed.setdefault(seq, {})[sender] = records

    def paid(self, seq: int, sender: str) -> None:
        """A dead-letter sink wrote the dead letters ``sender`` handed on with batch ``seq``."""
        records = self.owed.get(seq, {}).pop(sender, None)
        if records and self.metrics is not None:
            self.metrics.dead_lettered.inc(records)

    def release(self, seq: int) -> None:
        left = self.pending[seq] - 1
        if left:
            self.pending[seq] = left
            return
        del self.pending[seq]
        unpaid = self.owed.pop(seq, None)
        if unpaid:  # every task finished the batch, yet rejected records of it were written nowhere
            sender, records = next(iter(unpaid.items()))
            self.fail(
                sender,
                StreamWiringError(
                    f"{records} records it rejected in batch {seq} reached no dead-letter sink (sink.dead_letter): "
                    f"add {sender!r} to the dead-letter sink's needs"
                ),
            )
            return
        self.on_done(seq)

    def count(self, label: str, written: int) -> None:
        self.written[label] = self.written.get(label, 0) + written
        if self.metrics is not None:
            self.metrics.written(label, written)

    def fail(self, task: str, exc: BaseException) -> None:
        if self.broken.is_set():
            return
        self.error = f"task {task!r} downstream of the source ended: {type(exc).__name__}: {exc}"[:1000]
        self.broken.set()
        if self.metrics is not None:
            self.metrics.broken = self.error
        if self.on_broken is not None:
            self.on_broken()


@dataclass(slots=True)
class Flowing:
    """One batch on a stream edge; ``dead`` are the records the sender hands to dead-letter consumers
    (rejected at its own step, or refused by a sink), each record dead-lettered by exactly one sender."""

    batch: StreamBatch
    ledger: AckLedger
    dead: list[StreamRecord] = field(default_factory=list)
    sender: str = ""  # the task that handed ``dead`` on (set by pass_on): whose dead letters a sink pays

    def __reduce__(self) -> Any:
        raise TypeError(
            "a streaming batch (Flowing) cannot be pickled: it carries the source's ledger (settings, callbacks) "
            "and lives in this process only; a streaming step must not set stream_spill"
        )


@asynccontextmanager
async def open_ledger(ctx: PipelineContext, ledger: AckLedger) -> AsyncIterator[AckLedger]:
    """Register the source's ledger with the run (by the source's task name), so a failing task downstream
    of it can break it."""
    ledgers: dict[str, AckLedger] = ctx.services.scratch.setdefault(_LEDGERS, {})
    ledgers[ctx.task_name] = ledger
    try:
        yield ledger
    finally:
        if ledgers.get(ctx.task_name) is ledger:
            del ledgers[ctx.task_name]


def _sources_upstream(ctx: PipelineContext, task: str) -> set[str]:
    """The tasks ``task`` reads from, directly or through the steps before it (the engine's hubs know)."""
    seen: set[str] = set()
    todo = [task]
    while todo:
        name = todo.pop()
        for producer, hub in ctx.hubs.items():
            if producer not in seen and hub.feeds(name):
                seen.add(producer)
                todo.append(producer)
    return seen


def break_upstream(ctx: PipelineContext, exc: BaseException) -> None:
    """The current task cannot finish its batches: the sources it reads from stop waiting for them."""
    ledgers: dict[str, AckLedger] = ctx.services.scratch.get(_LEDGERS, {})
    upstream = _sources_upstream(ctx, ctx.task_name)
    for source, ledger in list(ledgers.items()):
        if source in upstream:
            ledger.fail(ctx.task_name, exc)


@asynccontextmanager
async def participating(ctx: PipelineContext) -> AsyncIterator[None]:
    """Around all of a stage's or sink's run, its start-up checks included: if it ends by an error or a
    cancellation, the sources it reads from stop waiting for its acknowledgements (they commit what was
    acknowledged and end too); a source it does not read from is not its concern."""
    try:
        yield
    except BaseException as exc:
        break_upstream(ctx, exc)
        raise


def consumers(ctx: PipelineContext) -> int:
    """How many tasks read the current task's stream."""
    hub = ctx.hubs.get(ctx.task_name)
    return len(hub.consumers) if hub is not None else 0


async def pass_on(ctx: PipelineContext, item: Flowing) -> None:
    """Send a batch to every task streaming from this one, counted first so no acknowledgement is early.

    Its dead letters are owed to a dead-letter sink until one writes them (``AckLedger.release``). A
    consumer the engine dropped (skipped: another of its needs failed) will never take its copy, so the
    ledger breaks: the source commits what was acknowledged and ends with ``DownstreamFailed``.
    """
    hub = ctx.hubs.get(ctx.task_name)
    if hub is not None:  # batches already in a dropped reader's buffer are never acknowledged: break now
        hub.on_drop(id(item.ledger), partial(_dropped, item.ledger, ctx.task_name))
    if hub is not None and hub.dropped:
        raise DownstreamFailed(item.ledger.error or f"a reader of {ctx.task_name!r} was skipped")
    copies = len(hub.consumers) if hub is not None else 0
    if item.dead:
        if not copies:
            raise StreamWiringError(
                f"task {ctx.task_name!r} rejected {len(item.dead)} records and no task reads its stream, so no "
                "dead-letter sink takes them: add it to the dead-letter sink's needs"
            )
        item.sender = ctx.task_name
        item.ledger.owe(item.batch.seq, ctx.task_name, len(item.dead))
    if copies:
        item.ledger.hold(item.batch.seq, copies)
        try:
            await ctx.emit(item)
        except StreamConsumerGone as exc:  # a reader failed: its own failure broke the ledger, say that one
            if item.ledger.broken.is_set():
                raise DownstreamFailed(item.ledger.error or str(exc)) from exc
            raise


def _dropped(ledger: AckLedger, producer: str, consumer: str) -> None:
    """The engine skipped ``consumer`` (another of its needs failed): it will never take its copies."""
    ledger.fail(consumer, StreamWiringError(f"skipped (another of its needs failed): it will never take the batches of {producer!r}"))


def only_stream(task_name: str, streams_from: Any) -> str:
    """The one producer a stage or sink reads (a batch must reach it exactly once)."""
    producers = list(streams_from)
    if len(producers) != 1:
        raise ValueError(f"task {task_name!r} must stream from exactly one batch producer, has {producers}")
    return producers[0]
