"""``run.result``: the stored result of a task of an earlier run, as this run's task result.

It lets a command re-use what a finished run produced through the state store's public API instead
of unpickling files itself: ``verify RUN_ID`` is a two- or three-task pipeline whose inputs are the
earlier run's import and shadow results. Nothing is re-run; a missing run or task is a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.state import StateStore
from task_components.base import Component


class StoredResultParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str = Field(description="the earlier run's directory")
    task: str = Field(description="the task of that run whose result to take")


class StoredResult(Component[StoredResultParams]):
    __slots__ = ()
    component = "run.result"
    summary = "the stored result of one task of an earlier run (nothing is run again)"
    Params = StoredResultParams

    async def run(self, ctx: PipelineContext) -> Any:
        p = self.params
        store = StateStore.existing(Path(p.run))
        done = store.succeeded()
        if p.task not in done:
            raise LookupError(f"run {p.run} has no stored result for task {p.task!r} (finished: {sorted(done)})")
        return done[p.task]


COMPONENTS = [StoredResult]
