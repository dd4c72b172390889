"""Batches flowing down the engine's stream edges, and their acknowledgements flowing back to the source.

Why: the source may commit a batch's offsets only once every sink (and the dead-letter topic) took it,
yet the stages and sinks are now tasks of their own, downstream of the source, so the source no longer
sees their outcome directly. Each batch travels as a ``Flowing`` (the same in-process objects, never
copied) with its ``AckLedger``, which counts the copies of the batch still on their way, like Storm's
acker: a task that passes a batch on adds one count per consumer before sending, and removes its own
count once it is done with it. When the count of a batch reaches zero every task downstream of the
source has finished with it, and the ledger hands its sequence number back to the source, which commits
in order. A task that fails marks every ledger of the run broken (``participating``), so a source
waiting for acknowledgements stops instead of waiting for a batch that will never be finished.

The ledger also carries what all writers of one source share: the retry settings and the circuit
breaker (the source stops fetching while it is open), and the figures the source reports (records
written per sink, refusals).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import BaseModel, Field

from dag_orchestrator.context import PipelineContext
from task_components.contracts import StreamBatch, StreamRecord
from task_components.streaming.resilience import CircuitBreaker, RetrySettings

__all__ = ["AckLedger", "DownstreamFailed", "Flowing", "StepResult", "open_ledger", "participating", "pass_on"]

_LEDGERS = "streaming.ledgers"  # key of the run's live ledgers in ctx.services.scratch


class DownstreamFailed(RuntimeError):
    """A task downstream of the source failed: the batches it held will never be acknowledged."""


class StepResult(BaseModel):
    """What a streaming stage or sink returns: its own figures (the source's result has the run's)."""

    batches: int = 0
    records: int = Field(0, description="records handed on as dead letters (stages, refusing sinks) or written")
    written: int = 0
    refused: int = 0


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

    def hold(self, seq: int, copies: int) -> None:
        self.pending[seq] = self.pending.get(seq, 0) + copies

    def release(self, seq: int) -> None:
        left = self.pending[seq] - 1
        if left:
            self.pending[seq] = left
            return
        del self.pending[seq]
        self.on_done(seq)

    def count(self, label: str, written: int) -> None:
        self.written[label] = self.written.get(label, 0) + written

    def fail(self, task: str, exc: BaseException) -> None:
        if self.broken.is_set():
            return
        self.error = f"task {task!r} downstream of the source ended: {type(exc).__name__}: {exc}"[:1000]
        self.broken.set()
        if self.on_broken is not None:
            self.on_broken()


@dataclass(slots=True)
class Flowing:
    """One batch on a stream edge; ``dead`` are the records the sender hands to dead-letter consumers
    (rejected at its own step, or refused by a sink), each record dead-lettered by exactly one sender."""

    batch: StreamBatch
    ledger: AckLedger
    dead: list[StreamRecord] = field(default_factory=list)


@asynccontextmanager
async def open_ledger(ctx: PipelineContext, ledger: AckLedger) -> AsyncIterator[AckLedger]:
    """Register the source's ledger with the run, so a failing task anywhere downstream can break it."""
    ledgers: dict[int, AckLedger] = ctx.services.scratch.setdefault(_LEDGERS, {})
    ledgers[id(ledger)] = ledger
    try:
        yield ledger
    finally:
        ledgers.pop(id(ledger), None)


@asynccontextmanager
async def participating(ctx: PipelineContext) -> AsyncIterator[None]:
    """Around a stage's or sink's run: if it ends by an error or a cancellation, the run's sources stop
    waiting for its acknowledgements (they commit what was acknowledged and end too)."""
    try:
        yield
    except BaseException as exc:
        for ledger in list(ctx.services.scratch.get(_LEDGERS, {}).values()):
            ledger.fail(ctx.task_name, exc)
        raise


def consumers(ctx: PipelineContext) -> int:
    """How many tasks read the current task's stream."""
    hub = ctx.hubs.get(ctx.task_name)
    return len(hub.consumers) if hub is not None else 0


async def pass_on(ctx: PipelineContext, item: Flowing) -> None:
    """Send a batch to every task streaming from this one, counted first so no acknowledgement is early."""
    copies = consumers(ctx)
    if copies:
        item.ledger.hold(item.batch.seq, copies)
        await ctx.emit(item)


def only_stream(task_name: str, streams_from: Any) -> str:
    """The one producer a stage or sink reads (a batch must reach it exactly once)."""
    producers = list(streams_from)
    if len(producers) != 1:
        raise ValueError(f"task {task_name!r} must stream from exactly one batch producer, has {producers}")
    return producers[0]
