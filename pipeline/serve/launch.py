"""Starting and cancelling runs from the console: locally in a child process, or as a daemon request.

A local run is prepared here first (the same checks as ``run``: a bad parameter is refused before
anything starts, and the run's id is known at once), then run by a child ``run-pipeline run FILE
--resume RUN_ID``: resuming a run that never started runs it all, with the overrides prepare saved.
A child, not this server's event loop: a run's CPU work and a crash stay out of the server, and cancel
is the SIGTERM every run already handles (report written, resumable). Only runs this server started
are cancelled from here: another process's run belongs to whoever started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import anyio

from config.settings import Settings
from dag_orchestrator.backends.orphans import PARENT
from pipeline.runner import RunOptions, prepare_run
from pipeline.serve.catalog import ParamError, PipelineEntry
from pipeline.spec import SpecError

__all__ = ["Launcher", "NotOurs"]


class NotOurs(LookupError):
    """The run is not a live child of this server (finished, unknown, or started by someone else)."""


class Launcher:
    def __init__(self, run_dir: Path, settings: Settings) -> None:
        self.run_dir, self.settings = run_dir, settings
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()  # routes run in a thread pool, the reaper on the loop

    def live(self) -> set[str]:
        """The runs this server started whose process has not ended."""
        with self._lock:
            return {run_id for run_id, child in self.children.items() if child.poll() is None}

    def start_local(self, entry: PipelineEntry, params: dict[str, Any]) -> str:
        try:
            prepared = prepare_run(entry.file, params, RunOptions(run_dir=self.run_dir))
        except SpecError as exc:
            raise ParamError("params", str(exc)) from None  # names the task and field at fault
        if prepared.lock is not None:
            prepared.lock.release()  # the child takes it: --resume of a run that never ran runs it all
        # -m, not -c: a "-c" process that imported multiprocessing's forkserver takes itself for our forkserver
        command = [sys.executable, "-m", "pipeline", "run", str(entry.file), "--resume", prepared.run_id]
        command += ["--run-dir", str(self.run_dir), "--no-progress"]
        # the token stays here; and the run is a new process tree, not a worker of whoever started this server
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SERVE__") and k != PARENT}
        with open(prepared.path / "serve.log", "ab") as log:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True)
        with self._lock:
            self.children[prepared.run_id] = child
        return prepared.run_id

    async def submit_daemon(self, entry: PipelineEntry, params: dict[str, Any]) -> str:
        from pipeline.daemon_cli import send_request

        rid = uuid.uuid4().hex
        request = {"request_id": rid, "pipeline": entry.name, "params": params, "priority": 0, "deadline": None}
        with anyio.fail_after(30):
            await send_request(self.settings, request)
        return rid

    def cancel(self, run_id: str) -> None:
        with self._lock:
            child = self.children.get(run_id)
            if child is None or child.poll() is not None:
                raise NotOurs(run_id)
            child.send_signal(signal.SIGTERM)

    def reap(self) -> None:
        """Forget children that ended (their exit status is read, so none is left a zombie)."""
        with self._lock:
            for run_id, child in list(self.children.items()):
                if child.poll() is not None:
                    self.children.pop(run_id, None)

    def stop_all(self, grace: float = 20.0) -> None:
        """On the server's shutdown: SIGTERM each live child (it writes its report), then wait for it."""
        with self._lock:
            children = list(self.children.values())
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=grace)
