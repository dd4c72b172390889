"""Run state: typed records of what happened, and a store that lets a run resume.

The store is an append-only JSON-lines journal (``state.jsonl``) plus one pickle per successful
result. Appending one line per terminal transition costs microseconds and survives a crash at any
point: the last line for a task wins, a torn last line is ignored. A task is resumable only when its
result could be persisted; otherwise it is simply run again, which is always safe because tasks
whose effects are external (uploads, imports) are written to be idempotent.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dag_orchestrator.diskspace import naming_enospc

__all__ = ["RunResult", "StateStore", "TaskRun", "TaskState"]


class TaskState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # never started because something it needs failed
    CANCELLED = "cancelled"  # started or waiting, then stopped by fail-fast, a signal or its stream

    @property
    def is_terminal(self) -> bool:
        return self not in (TaskState.PENDING, TaskState.RUNNING)


@dataclass(slots=True)
class TaskRun:
    name: str
    state: TaskState = TaskState.PENDING
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    error_type: str | None = None
    resumed: bool = False  # taken from an earlier run instead of running again
    # For reports: when every need was met (waiting = first start - ready_at), and each attempt's span,
    # so retries and the backoff between them are visible rather than folded into one duration.
    ready_at: float | None = None
    # Tuples, not lists: a tuple of floats/strings leaves the garbage collector's lists once it survives a
    # collection, so 100,000 finished records do not make every full collection walk 200,000 more lists.
    attempt_times: tuple[tuple[float, float], ...] = ()
    retry_errors: tuple[str, ...] = ()  # why each retried attempt failed (else lost)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        d["duration"] = self.duration
        d["attempt_times"], d["retry_errors"] = list(self.attempt_times), list(self.retry_errors)  # as JSON reads back
        return d


@dataclass(slots=True)
class RunResult:
    run_id: str
    dag: str
    state: TaskState
    tasks: dict[str, TaskRun]
    started_at: float
    ended_at: float
    results: dict[str, Any] = field(default_factory=dict, repr=False)
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.state is TaskState.SUCCEEDED

    def failed(self) -> list[TaskRun]:
        return [t for t in self.tasks.values() if t.state is TaskState.FAILED]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dag": self.dag,
            "state": self.state.value,
            "reason": self.reason,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration": self.ended_at - self.started_at,
            "tasks": {n: t.to_dict() for n, t in self.tasks.items()},
        }

    def write_report(self, path: Path, extra: dict[str, Any] | None = None) -> Path:
        data = self.to_dict()
        if extra:
            data.update(extra)
        tmp = path.with_suffix(".tmp")
        with naming_enospc(path):
            tmp.write_text(json.dumps(data, indent=2, default=str))
        tmp.replace(path)
        return path


class StateStore:
    """Journal of terminal task states for one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.journal = self.run_dir / "state.jsonl"
        self.results_dir = self.run_dir / "results"
        self._fh: Any = None

    @classmethod
    def existing(cls, run_dir: Path) -> StateStore:
        """The store of a run that must already exist (reading it creates nothing)."""
        if not (Path(run_dir) / "state.jsonl").is_file():
            raise FileNotFoundError(f"no run at {run_dir} (no state.jsonl)")
        return cls(run_dir)

    def open(self) -> None:
        with naming_enospc(self.journal):
            self._fh = open(self.journal, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def close(self) -> None:
        """Flush, fsync and close; a failed flush raises the named DiskFullError, not the close's repeat.

        ``close()`` flushes the same unwritten buffer again and fails the same way, and an error raised
        in a ``finally`` would replace the named one with a bare ``[Errno 28]``: it is suppressed.
        """
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                with naming_enospc(self.journal):
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    fh.close()
                raise
            fh.close()

    def record(self, run: TaskRun, *, resumable: bool = False) -> None:
        """Append a terminal state; a success is resumable when ``save_result`` stored its result first."""
        entry: dict[str, Any] = {"task": run.name, "state": run.state.value, "attempts": run.attempts}
        entry["at"] = time.time()
        if run.state is TaskState.SUCCEEDED:
            entry["resumable"] = resumable
        if run.error:
            entry["error"] = run.error
        if self._fh is None:
            self.open()
        with naming_enospc(self.journal):
            self._fh.write(json.dumps(entry) + "\n")
            self._fh.flush()

    def _result_path(self, name: str) -> Path:
        """``results/NAME.pkl``; a name that would reach outside ``results/`` is refused (the front ends
        check names when a pipeline is built: this is the last guard for a DAG composed by hand)."""
        if not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(f"task name {name!r} cannot name a file in {self.results_dir}")
        return self.results_dir / f"{name}.pkl"

    def save_result(self, name: str, result: Any) -> bool:
        """Pickle a task's result for resume (blocking: the executor calls it in a worker thread)."""
        self.results_dir.mkdir(exist_ok=True)
        target = self._result_path(name)
        try:
            payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an unpicklable result only means "run it again on resume"
            target.unlink(missing_ok=True)
            return False
        tmp = target.with_suffix(".tmp")
        try:
            with naming_enospc(target):
                tmp.write_bytes(payload)
        except OSError:
            tmp.unlink(missing_ok=True)  # a torn copy only takes space the run is short of
            raise
        tmp.replace(target)
        return True

    def succeeded(self) -> dict[str, Any]:
        """Tasks whose last journal entry is a resumable success, with their stored results."""
        last: dict[str, dict[str, Any]] = {}
        if self.journal.exists():
            for line in self.journal.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash
                last[entry["task"]] = entry
        done: dict[str, Any] = {}
        for name, entry in last.items():
            if entry["state"] == TaskState.SUCCEEDED.value and entry.get("resumable"):
                path = self._result_path(name)
                if path.exists():
                    done[name] = pickle.loads(path.read_bytes())
        return done
