"""The tasks downstream of a streaming source: stages, sinks and the dead-letter sink, as stream edges.

Why here: every stage and sink reads batches the same way (from one producer, in order), passes them
on the same way and acknowledges them the same way (flow.py); a component only says what it does to a
batch (``stage()`` gives its processor, ``sink()`` its writer). Each task is a component of its own in
the DAG, so ``graph`` and the report draw the data's way: source -> standardize -> quality -> sinks,
with the dead-letter sink after every step whose records it takes.

* A stage processes batches one at a time in arrival order (the duplicate window sees them in order),
  in a detached thread so a signal is honoured while its rules run (detached.py), then passes the batch
  on with the records it rejected as dead letters. A stage whose ``config_file`` changes takes the new
  configuration from the next batch on (reload.py), so each batch sees exactly one configuration.
* A sink writes the valid records of up to as many batches at once as the source lets through
  (``max_in_flight``), with the source's retries and circuit breaker; records it refuses are passed on
  as dead letters (a sink with refusals and no dead-letter consumer fails: nothing is dropped silently).
* The dead-letter sink reads every producer it needs and writes what each handed it.

What ``validate`` refuses (``needs_problem``; ``--only`` asks again about the tasks it keeps): a stage
or sink reading other than exactly one batch producer, a stage or sink reading a sink (only the source
and the stages produce batches), a producer read by a stage and by any other stage or sink (the stage
changes the batch's records in place: the others would see them half processed), a step whose rejected
records no dead-letter sink takes, and ``retries:`` on a step (a failure breaks the source's ledger at
once: the sinks' write retries are the source's ``retry_count``). The batches are in-process objects
tied to the source's ledger, so a streaming step may not spill its input to disk (``stream_spill``).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.task import Task
from task_components.base import Component
from task_components.contracts import BatchProcessor, BatchSink, BatchStage, Rejection, SinkWriter, StreamResult
from task_components.streaming.detached import run_detached
from task_components.streaming.flow import (
    Flowing,
    SinkResult,
    StageResult,
    StepResult,
    StreamWiringError,
    consumers,
    only_stream,
    participating,
    pass_on,
)
from task_components.streaming.reload import ReloadableParams, Reloading
from task_components.streaming.resilience import PermanentSinkError, write_with_retry

__all__ = ["StreamDeadLetters", "StreamSink", "StreamStage", "dead_letter_problem", "streams_from_source"]

P = TypeVar("P", bound=BaseModel)
BATCHES = ((StreamResult, StageResult),)  # a stage or sink reads a producer of batches: the source or a stage
DEAD_LETTERS = ((StreamResult, StepResult),)  # the dead-letter sink reads the source, the stages and the sinks


WIRING_CHANGED = (
    "needs nothing, as streaming pipelines were wired before: the wiring changed, data order now: the source "
    "needs nothing, each stage and sink needs the step before it (source.kafka -> standardize -> quality -> "
    "sinks) and the dead-letter sink needs every step; see docs/streaming.md"
)


def dead_letter_problem(name: str, tasks: dict[str, Task]) -> str | None:
    """A step whose rejected records no dead-letter sink takes would lose them: exit 2 before the run."""
    if any(isinstance(t, StreamDeadLetters) and name in t.needs for t in tasks.values()):
        return None
    return (
        "no dead-letter sink (sink.dead_letter) needs this task, so the records it rejects would be lost: "
        f"add {name!r} to the dead-letter sink's needs"
    )


def _step_problem(step: Task, tasks: dict[str, Task]) -> str | None:
    """What every stage and sink must satisfy beyond its needs' types (see the module's docstring)."""
    if step.retry.attempts > 1:
        return (
            "retries do nothing on streaming steps: a failure stops the source at once; a sink's writes are "
            "retried with the source's retry_count and retry_delay"
        )
    producers = list(step.streams_from)
    if not step.needs:
        return WIRING_CHANGED
    if len(producers) != 1:
        return (
            f"reads {len(producers)} batch producers ({', '.join(producers) or 'none'}): a stage or sink "
            "reads exactly one, the step before it"
        )
    producer = tasks.get(producers[0])
    if isinstance(producer, StreamSink | StreamDeadLetters):
        return f"reads sink {producers[0]!r}, which passes on only the records it refused: read the stage (or source) before it"
    for other in tasks.values():
        if other is step or isinstance(other, StreamDeadLetters) or producers[0] not in other.streams_from:
            continue
        if len(other.streams_from) > 1:  # refused for that itself, by its own check
            continue
        if isinstance(step, StreamStage) or isinstance(other, StreamStage):
            return (
                f"reads {producers[0]!r} with {other.name!r}, and a stage changes the batch's records in "
                "place: a producer feeding a stage feeds only that stage (chain the stages instead)"
            )
    if isinstance(step, StreamStage) and not streams_from_source(step.name, tasks):
        return "no stage or sink reads its batches: its valid records would reach no sink"
    return dead_letter_problem(step.name, tasks)


def streams_from_source(name: str, tasks: dict[str, Task]) -> list[str]:
    """The stages and sinks reading ``name``'s batches."""
    return [t.name for t in tasks.values() if isinstance(t, StreamStage | StreamSink) and name in t.streams_from]


def _inputs(step: Component[Any]) -> list[tuple[type, ...]]:
    """No needs at all: the pipeline is wired the old way, which ``needs_problem`` explains instead."""
    return [] if not step.needs else [t if isinstance(t, tuple) else (t,) for t in step.needs_types]


def _refuse_spill(cls: type) -> None:
    if getattr(cls, "stream_spill", False):
        raise TypeError(
            f"{cls.__name__}: a streaming step cannot set stream_spill: its batches carry the source's ledger and live in this process only"
        )


class _StreamStep(Component[P]):
    """What every streaming step shares: it reads batches of its needs, never spills them (a batch carries
    its source's ledger), and finds its inputs and wiring problems the same way."""

    __slots__ = ()
    stream_input = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _refuse_spill(cls)

    def required_inputs(self) -> list[tuple[type, ...]]:
        return _inputs(self)

    def needs_problem(self, tasks: dict[str, Task]) -> str | None:
        return _step_problem(self, tasks)


class StreamStage(_StreamStep[P]):
    """A per-batch step between the source and the sinks (``stage()``: the configured step)."""

    __slots__ = ()
    emits = True
    Result = StageResult
    needs_types = BATCHES

    @abstractmethod
    def stage(self) -> BatchStage: ...

    def stage_for(self, params: P) -> BatchStage:
        """The stage of other parameters (a reloaded ``config_file``): a stage whose parameters derive
        from ``ReloadableParams`` says how to build itself from them."""
        raise NotImplementedError(f"{type(self).__name__} cannot reload its configuration")

    def processor(self, ctx: PipelineContext) -> BatchProcessor:
        """A fresh processor for this run; one that reloads a watched ``config_file`` between batches
        when the parameters name one (reload.py: every batch sees exactly one configuration)."""
        params = self.params
        if isinstance(params, ReloadableParams) and params.config_file is not None and params.reload:
            return Reloading(self.name, params, self.stage_for, ctx.log)
        return self.stage().processor()

    async def run(self, ctx: PipelineContext) -> StageResult:
        result = StageResult()
        async with participating(ctx):
            if not consumers(ctx):  # before reading a batch: its valid records would reach no sink
                raise StreamWiringError(f"task {self.name!r}: no stage or sink reads its batches")
            process = self.processor(ctx)
            async for item in ctx.stream(only_stream(self.name, self.streams_from)):
                batch = item.batch
                before = {id(r) for r in batch.records if r.rejection is None}
                await run_detached(process, batch)  # a BatchThresholdError fails the run: never committed
                dead = [r for r in batch.records if r.rejection is not None and id(r) in before]
                result.batches += 1
                result.records += len(dead)
                await pass_on(ctx, Flowing(batch, item.ledger, dead))
                item.ledger.release(batch.seq)
        return result

    def summarize(self, result: StepResult) -> dict[str, Any]:
        return {"batches": result.batches, "rejected": result.records}


class StreamSink(_StreamStep[P]):
    """A sink of valid records (``sink()``: the configured sink, whose writer must be idempotent)."""

    __slots__ = ()
    emits = True  # its refusals, to the dead-letter sink
    Result = SinkResult
    needs_types = BATCHES

    @abstractmethod
    def sink(self) -> BatchSink: ...

    async def run(self, ctx: PipelineContext) -> SinkResult:
        result = SinkResult()
        async with participating(ctx):
            sink = self.sink()
            producer = only_stream(self.name, self.streams_from)
            async with sink.open(ctx.services.settings) as writer, anyio.create_task_group() as tg:
                async for item in ctx.stream(producer):
                    tg.start_soon(self._write, ctx, sink.label, writer, item, result)
        return result

    async def _write(self, ctx: PipelineContext, label: str, writer: SinkWriter, item: Flowing, result: StepResult) -> None:
        ledger, valid = item.ledger, item.batch.valid()
        if valid:
            written = await write_with_retry(label, writer, valid, ledger.retry, ledger.breaker)
            ledger.count(label, written.count)
            result.written += written.count
            if written.refused:
                first = written.refused[0]
                ctx.log.warning(
                    "records_refused",
                    sink=label,
                    records=len(written.refused),
                    rule=first.rule,
                    reason=first.reason[:300],
                    first_record_id=first.record.correlation_id,
                )
                if not consumers(ctx):
                    raise PermanentSinkError(
                        f"{label} refused {len(written.refused)} records and no dead-letter "
                        f"sink needs task {self.name!r}; first: {first.reason}"
                    )
                refused = [dataclasses.replace(f.record, rejection=Rejection(f"sink.{label}", f.rule, f.reason)) for f in written.refused]
                ledger.refused += len(refused)
                result.refused += len(refused)
                await pass_on(ctx, Flowing(item.batch, ledger, refused))
        result.batches += 1
        ledger.release(item.batch.seq)

    def summarize(self, result: StepResult) -> dict[str, Any]:
        return {"batches": result.batches, "written": result.written, "refused": result.refused}


class StreamDeadLetters(_StreamStep[P]):
    """The sink of every record rejected upstream: reads each producer it needs, writes what it was handed."""

    __slots__ = ()
    Result = SinkResult
    needs_types = DEAD_LETTERS

    @abstractmethod
    def sink(self) -> BatchSink: ...

    def needs_problem(self, tasks: dict[str, Task]) -> str | None:
        if not self.needs:
            return WIRING_CHANGED
        if self.retry.attempts > 1:
            return "retries do nothing on streaming steps: a failure stops the source at once"
        return None

    async def run(self, ctx: PipelineContext) -> SinkResult:
        result = SinkResult()
        async with participating(ctx):
            sink = self.sink()
            if not self.streams_from:
                raise ValueError(f"task {self.name!r} streams from no batch producer: add the streaming steps to its needs")
            async with sink.open(ctx.services.settings) as writer, anyio.create_task_group() as tg:
                for producer in self.streams_from:
                    tg.start_soon(self._read, ctx, producer, sink.label, writer, tg, result)
        return result

    async def _read(self, ctx: PipelineContext, producer: str, label: str, writer: SinkWriter, tg: TaskGroup, result: StepResult) -> None:
        async for item in ctx.stream(producer):
            if item.dead:
                tg.start_soon(self._write, ctx, label, writer, item, result)
            else:
                item.ledger.release(item.batch.seq)

    async def _write(self, ctx: PipelineContext, label: str, writer: SinkWriter, item: Flowing, result: StepResult) -> None:
        ledger = item.ledger
        written = await write_with_retry(label, writer, item.dead, ledger.retry, ledger.breaker)
        if written.refused:  # the dead-letter topic refusing a dead letter: nowhere left to put it
            first = written.refused[0]
            raise PermanentSinkError(f"{label} refused {len(written.refused)} dead letters; first: {first.reason}")
        log = ctx.log
        for r in item.dead:  # correlation ids travel to the logs too (debug: one line per record)
            why = r.rejection
            log.debug(
                "record_rejected",
                record_id=r.correlation_id,
                step=why and why.step,
                rule=why and why.rule,
                source=f"{r.topic}:{r.partition}@{r.offset}",
            )
        ledger.count(label, written.count)
        ledger.paid(item.batch.seq, item.sender)
        result.batches += 1
        result.written += written.count
        ledger.release(item.batch.seq)

    def summarize(self, result: StepResult) -> dict[str, Any]:
        return {"dead_letters": result.written}
