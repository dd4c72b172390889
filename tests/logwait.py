"""Reading a real CLI process's JSON log lines until a task event shows up."""

from __future__ import annotations

import json
import subprocess
import time


def wait_for_event(proc: subprocess.Popen[str], task: str, event: str, timeout: float = 60) -> str:
    """Block until ``event`` is logged for ``task``; returns the run id. Fails if it never comes."""
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if data.get("event") == event and data.get("task") == task:
            return str(data["run_id"])
    raise AssertionError(f"never saw {event} for task {task!r}")
