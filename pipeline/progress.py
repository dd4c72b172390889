"""The live view of a run on a terminal: one line per task, a bar where the task reports progress.

Driven purely by executor events (observer), so the engine knows nothing about rich. Off a TTY the
CLI uses the structured log observer instead. Only the state column is markup (our own words); task
names and a task's figures are printed literally.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from dag_orchestrator.events import Event, EventKind

_STATE_TEXT = {
    EventKind.TASK_STARTED: "[cyan]running",
    EventKind.TASK_RETRYING: "[yellow]retrying",
    EventKind.TASK_SUCCEEDED: "[green]done",
    EventKind.TASK_FAILED: "[red]failed",
    EventKind.TASK_SKIPPED: "[dim]skipped",
    EventKind.TASK_CANCELLED: "[yellow]cancelled",
    EventKind.TASK_RESUMED: "[green]resumed",
}


class RichProgress:
    def __init__(self, task_names: list[str], console: Console | None = None) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<24}", markup=False),  # a task name is the user's: "[x]" stays literal
            TextColumn("{task.fields[state]:<10}"),  # ours: _STATE_TEXT
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}", markup=False),  # a task's own figures: may hold brackets
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self.ids: dict[str, TaskID] = {
            n: self.progress.add_task(n, total=None, start=False, state="[dim]waiting", rate="") for n in task_names
        }
        self.started: dict[str, float] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        if event.task is None or event.task not in self.ids:
            return
        tid = self.ids[event.task]
        if event.kind is EventKind.TASK_PROGRESS:
            self._progress(tid, event)
            return
        state = _STATE_TEXT.get(event.kind)
        if state is None:
            return
        if event.kind is EventKind.TASK_STARTED:
            self.started[event.task] = event.at
            self.progress.start_task(tid)
        update: dict[str, Any] = {"state": state}
        if event.kind in (EventKind.TASK_SUCCEEDED, EventKind.TASK_RESUMED):
            task = self.progress.tasks[tid]
            update["total"] = task.total or 1
            update["completed"] = task.total or 1
        if event.kind in (
            EventKind.TASK_SUCCEEDED,
            EventKind.TASK_FAILED,
            EventKind.TASK_CANCELLED,
            EventKind.TASK_SKIPPED,
            EventKind.TASK_RESUMED,
        ):
            self.progress.stop_task(tid)
        self.progress.update(tid, **update)

    def _progress(self, tid: TaskID, event: Event) -> None:
        done, total = event.data.get("done"), event.data.get("total")
        rate = ""
        start = self.started.get(event.task or "")
        if event.data.get("detail"):  # a task's own live figures (e.g. streaming: rates, invalid share, lag)
            rate = str(event.data["detail"])
        elif done and start and event.at > start:
            unit = event.data.get("unit", "rows")
            rate = f"{done / (event.at - start):,.0f} {unit}/s"
        self.progress.update(tid, completed=done, total=total, rate=rate)
