"""Helpers for scheduling tests: tasks that record what the executor did to them, without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from dag_orchestrator import DAG, Task
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
