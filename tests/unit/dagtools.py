"""Helpers for scheduling tests: tasks that record what the executor did to them, without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from dag_orchestrator import DAG, PipelineContext, Task, task
from dag_orchestrator.task import RetryPolicy


@dataclass
class Recorder:
    events: list[tuple[str, str]] = field(default_factory=list)  # ("start"|"end", task)
    running: int = 0
    peak: int = 0
    kind_running: dict[str, int] = field(default_factory=dict)
    kind_peak: dict[str, int] = field(default_factory=dict)

    def started(self, name: str) -> list[str]:
        return [n for e, n in self.events if e == "start" and n == name]

    def order(self, kind: str) -> list[str]:
        return [n for e, n in self.events if e == kind]


class RecTask(Task):
    __slots__ = ("calls", "fails", "rec", "steps")

    def __init__(
        self,
        name: str,
        needs: list[str],
        rec: Recorder,
        *,
        steps: int = 1,
        fails: int = 0,
        kind: str = "default",
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(name, needs, kind=kind, retry=retry, timeout=timeout)
        self.rec, self.steps, self.fails, self.calls = rec, steps, fails, 0

    async def run(self, ctx: Any) -> str:
        rec = self.rec
        rec.events.append(("start", self.name))
        rec.running += 1
        rec.peak = max(rec.peak, rec.running)
        rec.kind_running[self.kind] = rec.kind_running.get(self.kind, 0) + 1
        rec.kind_peak[self.kind] = max(rec.kind_peak.get(self.kind, 0), rec.kind_running[self.kind])
        try:
            for _ in range(self.steps):
                await anyio.sleep(0)
            self.calls += 1
            if self.calls <= self.fails:
                raise RuntimeError(f"{self.name} failed on purpose")
            return self.name.upper()
        finally:
            rec.running -= 1
            rec.kind_running[self.kind] -= 1
            rec.events.append(("end", self.name))


def build(spec: dict[str, list[str]], rec: Recorder, **per_task: dict[str, Any]) -> DAG:
    return DAG("t", [RecTask(n, needs, rec, **per_task.get(n, {})) for n, needs in spec.items()])


def stream_dag(
    n_chunks: int,
    *,
    fail_producer_at: int | None = None,
    fail_consumer_at: int | None = None,
    seen: list[int] | None = None,
    slow_consumer: bool = False,
) -> DAG:
    log = seen if seen is not None else []

    @task(emits_stream=True)
    async def produce(ctx: PipelineContext) -> int:
        for i in range(n_chunks):
            if i == fail_producer_at:
                raise ValueError("producer broke")
            await ctx.emit(i)
            log.append(("emitted", i))
        return n_chunks

    @task(needs=["produce"], streams_from=["produce"])
    async def fast(ctx: PipelineContext) -> int:
        return len([c async for c in ctx.stream("produce")])

    @task(needs=["produce"], streams_from=["produce"])
    async def slow(ctx: PipelineContext) -> int:
        n = 0
        async for c in ctx.stream("produce"):
            if c == fail_consumer_at:
                raise ValueError("consumer broke")
            if slow_consumer:
                await anyio.sleep(0.01)
            log.append(("consumed", c))
            n += 1
        return n

    @task(needs=["fast", "slow"])
    async def after(ctx: PipelineContext) -> tuple[int, int]:
        return ctx.result("fast"), ctx.result("slow")

    return DAG("s", [produce, fast, slow, after])
