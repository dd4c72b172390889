"""Small built-in tasks for trying the engine and testing it end to end without any service."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from dag_orchestrator.context import PipelineContext
from task_components.base import Component, NoParams


class CountParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    total: int = Field(1000, ge=0, description="how many integers to emit")
    chunk: int = Field(100, ge=1, description="integers per chunk")
    delay: float = Field(0.0, ge=0, description="seconds to wait between chunks")


class Count(Component[CountParams]):
    """Emit ``0..total-1`` as a stream of lists: a stand-in for a data source."""

    __slots__ = ()
    component = "demo.count"
    Result = dict
    summary = "emit integers 0..total-1 as a chunk stream"
    Params = CountParams
    emits = True

    async def run(self, ctx: PipelineContext) -> dict[str, int]:
        p = self.params
        chunks = 0
        for start in range(0, p.total, p.chunk):
            await ctx.emit(list(range(start, min(start + p.chunk, p.total))))
            chunks += 1
            ctx.progress(done=min(start + p.chunk, p.total), total=p.total)
            if p.delay:
                await anyio.sleep(p.delay)
        return {"rows": p.total, "chunks": chunks}

    def summarize(self, result: dict[str, int]) -> dict[str, Any]:
        return dict(result)


class Sum(Component[NoParams]):
    """Sum the integers streamed by its needs: a stand-in for a sink."""

    __slots__ = ()
    component = "demo.sum"
    Result = dict
    summary = "sum the integers streamed by its needs"
    stream_input = True

    async def run(self, ctx: PipelineContext) -> dict[str, int]:
        total = count = 0
        for producer in self.streams_from:
            async for chunk in ctx.stream(producer):
                total += sum(chunk)
                count += len(chunk)
        return {"rows": count, "sum": total}

    def summarize(self, result: dict[str, int]) -> dict[str, Any]:
        return dict(result)


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(1.0, ge=0)


class Sleep(Component[SleepParams]):
    """Wait, then succeed: for exercising timeouts, signals and resume."""

    __slots__ = ()
    component = "demo.sleep"
    summary = "wait for `seconds`, then succeed"
    Params = SleepParams

    async def run(self, ctx: PipelineContext) -> float:
        await anyio.sleep(self.params.seconds)
        return self.params.seconds


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = "demo failure"
    crash: bool = Field(False, description="raise a BaseException (a crash) instead of an Exception")
    fail_times: int | None = Field(None, ge=0, description="fail only the first N attempts of this run, then succeed (for retries)")


class DemoCrash(BaseException):
    """Not an Exception: the engine treats it as a crash that ends the run."""


class Fail(Component[FailParams]):
    """Fail with ``message`` (always, or the first ``fail_times`` attempts): for failure policies and retries."""

    __slots__ = ()
    component = "demo.fail"
    summary = "fail with `message` (always, or only the first `fail_times` attempts)"
    Params = FailParams

    async def run(self, ctx: PipelineContext) -> None:
        limit = self.params.fail_times
        if limit is not None:  # counted per run in the context, so a task object stays immutable
            seen = ctx.services.scratch.setdefault("demo.fail.attempts", {})
            seen[self.name] = seen.get(self.name, 0) + 1
            if seen[self.name] > limit:
                return
        if self.params.crash:
            raise DemoCrash(self.params.message)
        raise RuntimeError(self.params.message)


COMPONENTS = [Count, Sum, Sleep, Fail]
