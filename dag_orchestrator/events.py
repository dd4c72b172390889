"""Task and run events, delivered to observers (logs, progress view, metrics, later Kafka status).

Observers are plain callables. A broken observer must never break a run, so each call is guarded; an
observer that fails is reported once on stderr through the logger and then dropped.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["Event", "EventBus", "EventKind", "Observer", "log_observer"]


class EventKind(enum.StrEnum):
    RUN_STARTED = "run_started"
    TASK_STARTED = "task_started"
    TASK_RETRYING = "task_retrying"
    TASK_SUCCEEDED = "task_succeeded"
    TASK_FAILED = "task_failed"
    TASK_SKIPPED = "task_skipped"
    TASK_CANCELLED = "task_cancelled"
    TASK_RESUMED = "task_resumed"
    TASK_PROGRESS = "task_progress"
    RUN_FINISHED = "run_finished"


@dataclass(slots=True)
class Event:
    kind: EventKind
    run_id: str
    task: str | None = None
    attempt: int = 0
    error: str | None = None
    delay: float | None = None
    at: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)


Observer = Callable[[Event], None]


class EventBus:
    def __init__(self, observers: list[Observer] | None = None) -> None:
        self.observers: list[Observer] = list(observers or [])

    def __bool__(self) -> bool:
        return bool(self.observers)

    def emit(self, event: Event) -> None:
        for obs in list(self.observers):
            try:
                obs(event)
            except Exception as exc:  # noqa: BLE001 - see module docstring
                self.observers.remove(obs)
                structlog.get_logger("dag_orchestrator.events").error(
                    "observer failed and was removed", observer=repr(obs), error=repr(exc)
                )


_LEVELS = {
    EventKind.TASK_FAILED: "error",
    EventKind.TASK_RETRYING: "warning",
    EventKind.TASK_CANCELLED: "warning",
    EventKind.TASK_PROGRESS: "debug",
}


def log_observer(logger: Any = None) -> Observer:
    """Structured log lines for every event: the default view when stdout is not a terminal."""
    log = logger or structlog.get_logger("dag_orchestrator")

    def observe(event: Event) -> None:
        level = _LEVELS.get(event.kind, "info")
        fields: dict[str, Any] = {"run_id": event.run_id}
        if event.task:
            fields["task"] = event.task
        if event.attempt:
            fields["attempt"] = event.attempt
        if event.error:
            fields["error"] = event.error
        if event.delay is not None:
            fields["retry_in_s"] = round(event.delay, 3)
        fields.update(event.data)
        getattr(log, level)(event.kind.value, **fields)

    return observe
