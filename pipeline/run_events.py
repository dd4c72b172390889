"""``<run dir>/events.jsonl``: a run's events as they happen, for whoever watches it live (``serve``).

report.json is written once, at the end; a page that shows a run while it runs needs the states in
between. Every state change is one JSON line, appended and flushed at once; progress reports are kept
to one line per task per second (a stream reports far more often), and once the file passes
``QUIET_AFTER`` bytes to one per task per half minute, so a run of days keeps a bounded file. The first
line of each attempt (a resume appends) describes the DAG, so a page can draw it before any report.
A line torn by a crash is skipped by the reader, never fatal.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog

from dag_orchestrator.events import Event, EventKind
from task_components.sources.decode import loads_finite

__all__ = ["EVENTS", "EventLog", "RunView", "alive_holder", "clean_event", "live_since", "read_events", "read_lines"]

EVENTS = "events.jsonl"
QUIET_AFTER = 4 * 1024 * 1024
PROGRESS_EVERY = 1.0
QUIET_EVERY = 30.0
MAX_LINE = 64 * 1024  # one event's JSON; a longer line (a huge error text) is cut to this


class EventLog:
    """An executor observer appending each event to the run's ``events.jsonl``."""

    def __init__(self, run_path: Path, pipeline: str, params: dict[str, Any], tasks: Iterable[str], edges: list[dict[str, Any]]) -> None:
        self.path = run_path / EVENTS
        self._last_progress: dict[str, float] = {}
        self._broken = False
        with contextlib.suppress(OSError), open(self.path, "rb+") as fh:  # a line torn by a crash ends here
            if fh.seek(0, os.SEEK_END) and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n":
                fh.write(b"\n")
        self._write({"kind": "dag", "at": time.time(), "pipeline": pipeline, "params": params, "tasks": list(tasks), "edges": edges})

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.TASK_PROGRESS and not self._progress_due(event):
            return
        line: dict[str, Any] = {"kind": event.kind.value, "at": event.at, "task": event.task, "attempt": event.attempt}
        if event.error:
            line["error"] = event.error
        if event.data:
            line["data"] = event.data
        self._write(line)

    def _progress_due(self, event: Event) -> bool:
        """At most one line per task per ``PROGRESS_EVERY`` seconds, but always the last one (done == total)."""
        key = event.task or ""
        if event.data.get("total") is not None and event.data.get("done") == event.data.get("total"):
            return True
        every = PROGRESS_EVERY
        with contextlib.suppress(OSError):
            if self.path.stat().st_size > QUIET_AFTER:
                every = QUIET_EVERY
        if event.at - self._last_progress.get(key, 0.0) < every:
            return False
        self._last_progress[key] = event.at
        return True

    def _write(self, line: dict[str, Any]) -> None:
        """One line, or nothing: a watcher's file must never fail the run (a full disk is said once)."""
        if self._broken:
            return
        text = json.dumps(line, default=str)
        if len(text) > MAX_LINE:
            line = {k: v for k, v in line.items() if k != "data"}
            line["error"] = str(line.get("error", ""))[: MAX_LINE // 2]
            text = json.dumps(line, default=str)
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as exc:
            self._broken = True
            log = structlog.get_logger("pipeline.run_events")
            log.warning("events.jsonl not written; live views will stop", path=str(self.path), error=str(exc))


def read_events(run_path: Path, offset: int = 0, limit: int = 8 * 1024 * 1024) -> tuple[list[dict[str, Any]], int]:
    """Whole lines from byte ``offset`` on (at most ``limit`` bytes), and the offset after the last one read."""
    lines = read_lines(run_path, offset, limit)
    return [event for event, _ in lines], (lines[-1][1] if lines else offset)


def read_lines(run_path: Path, offset: int = 0, limit: int = 8 * 1024 * 1024) -> list[tuple[dict[str, Any], int]]:
    """Each event from byte ``offset`` on with the offset just after its line (where a reader resumes).

    A line still being written (no newline yet) is left for the next call; an unreadable one is skipped
    (its offset still moves on, carried by the next good line).
    """
    path = run_path / EVENTS
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read(limit)
    except OSError:
        return []
    out: list[tuple[dict[str, Any], int]] = []
    start = 0
    while (end := chunk.find(b"\n", start)) >= 0:
        with contextlib.suppress(ValueError):
            event = loads_finite(chunk[start:end])
            if isinstance(event, dict) and isinstance(event.get("kind"), str):
                out.append((event, offset + end + 1))
        start = end + 1
    return out


_STATE_OF = {
    "task_started": "running",
    "task_retrying": "retrying",
    "task_succeeded": "succeeded",
    "task_failed": "failed",
    "task_skipped": "skipped",
    "task_cancelled": "cancelled",
    "task_resumed": "succeeded",
}


class RunView:
    """A run's live state folded from its events: the tasks' states, progress and ETA, the DAG."""

    def __init__(self) -> None:
        self.pipeline = "?"
        self.params: dict[str, Any] = {}
        self.edges: list[dict[str, Any]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.started: float | None = None
        self.finished: float | None = None
        self.state = "running"

    def apply(self, raw: dict[str, Any]) -> None:
        """Fold one event; a field of the wrong type (a hostile or damaged file) is dropped, never fatal."""
        event = clean_event(raw)
        kind, name = event["kind"], event["task"]
        if kind == "dag":
            self.pipeline, self.params, self.edges = event["pipeline"], event["params"], event["edges"]
            for t in event["tasks"]:
                self.tasks.setdefault(t, {"state": "waiting"})
            self.finished, self.state = None, "running"
            return
        if kind == "run_started":
            self.started = self.started or event["at"]
        elif kind == "run_finished":
            self.finished = event["at"] or time.time()
            self.state = str(event["data"].get("state") or "finished")[:40]
        if name is None:
            return
        task = self.tasks.setdefault(name, {"state": "waiting"})
        if kind == "task_progress":
            task["progress"] = progress_of(task, event)
        elif kind in _STATE_OF:
            task["state"] = _STATE_OF[kind]
            task["attempt"] = event["attempt"]
            if kind == "task_started":  # a new attempt: the last one's error and figures are history
                task["started"] = event["at"]
                task.pop("error", None)
                task.pop("progress", None)
            elif kind in ("task_succeeded", "task_resumed"):
                task.pop("error", None)
            if event["error"]:
                task["error"] = event["error"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "params": self.params,
            "edges": self.edges,
            "tasks": self.tasks,
            "started": self.started,
            "finished": self.finished,
            "state": self.state,
        }


def clean_event(raw: dict[str, Any]) -> dict[str, Any]:
    """An event with each field of the type a reader expects (else its empty value): the shape the page gets."""

    def text(value: Any, limit: int = 200) -> str | None:
        return value[:limit] if isinstance(value, str) else None

    def number(value: Any) -> float | None:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) else None

    data = raw.get("data")
    out: dict[str, Any] = {
        "kind": text(raw.get("kind"), 40) or "?",
        "task": text(raw.get("task")),
        "at": number(raw.get("at")),
        "attempt": int(a) if (a := number(raw.get("attempt"))) is not None and 0 <= a < 1e6 else 0,
        "error": text(raw.get("error"), MAX_LINE),
        "data": data if isinstance(data, dict) else {},
    }
    if out["kind"] == "dag":
        params, tasks, edges = raw.get("params"), raw.get("tasks"), raw.get("edges")
        out["pipeline"] = text(raw.get("pipeline")) or "?"
        out["params"] = params if isinstance(params, dict) else {}
        out["tasks"] = [t[:200] for t in tasks if isinstance(t, str)] if isinstance(tasks, list) else []
        out["edges"] = [e for e in edges if isinstance(e, dict)] if isinstance(edges, list) else []
    return out


def progress_of(task: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """done/total/unit, a rate since the task started and an ETA where the total is known."""
    data = event["data"]
    out: dict[str, Any] = {}
    for key in ("done", "total"):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = value
    for key in ("unit", "detail"):
        if isinstance(data.get(key), str):
            out[key] = data[key][:200]
    done, total, started, at = out.get("done"), out.get("total"), task.get("started"), event["at"]
    if done is not None and started and at and at > started and done > 0:
        rate = done / (at - started)
        out["rate"] = round(rate, 2)
        if total is not None and total >= done:
            out["eta_seconds"] = round((total - done) / rate, 1)
    return out


def alive_holder(run_path: Path) -> int | None:
    """The pid holding the run directory's lock if that process is alive (the run is live), else None."""
    holder = _live_lock(run_path)
    return None if holder is None else holder[0]


def live_since(run_path: Path) -> float | None:
    """When the live holder took the run's lock: a report older than that is a resumed run's history."""
    holder = _live_lock(run_path)
    return None if holder is None else holder[1]


def _live_lock(run_path: Path) -> tuple[int, float] | None:
    try:
        info = json.loads((run_path / ".lock").read_text() or "{}")
        pid, since = int(info.get("pid", 0)), float(info.get("since", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's process: alive as far as we can tell
    with contextlib.suppress(OSError, IndexError):  # an exited child nobody reaped yet is not a live run
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
    return pid, since
