"""A SIGKILLed quickstart on embedded defaults strands nothing once it is resumed.

The embedded PostgreSQL runs as its own daemon (pg_ctl), so it survives the kill by design; the resume
must take it over and stop it when it ends, and the killed run's worker processes must already be gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS__", "S3__", "POSTGRES__"))}
    return {**env, "LOGGING__FORMAT": "json"}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_pipeline.py"), *args]


def _processes_of(run_dir: Path) -> list[str]:
    """Processes whose command line names the run directory (the embedded PostgreSQL does)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(run_dir) in cmd and p.status() != psutil.STATUS_ZOMBIE:
            found.append(f"{p.pid}: {cmd[:120]}")
    return found


def test_killed_during_shadow_then_resumed_leaves_no_process(tmp_path: Path) -> None:
    args = ("run", "pipelines/quickstart.yaml", "--run-dir", str(tmp_path), "--no-progress", "--set", "rows=60000")
    proc = subprocess.Popen(_cmd(*args), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stderr is not None
    run_id = ""
    for line in proc.stderr:
        event = json.loads(line) if line.startswith("{") else {}
        run_id = run_id or event.get("run_id", "")
        if event.get("event") == "task_started" and event.get("task") == "shadow":
            break
    time.sleep(1.5)
    # the embedded PostgreSQL (its command line names the run dir) is meant to outlive the kill: checked below
    family = psutil.Process(proc.pid).children(recursive=True)
    workers = [c.pid for c in family if "/postgres" not in " ".join(c.cmdline())]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    run_dir = tmp_path / run_id
    deadline = time.monotonic() + 10
    while (left := [p for p in workers if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]) and \
            time.monotonic() < deadline:  # fmt: skip
        time.sleep(0.2)
    assert not left, f"worker processes outlived the killed run: {left}"

    resumed = subprocess.run(_cmd("run", "pipelines/quickstart.yaml", "--run-dir", str(tmp_path), "--no-progress",
                                  "--resume", run_id), cwd=ROOT, env=_env(), capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "result=passed" in resumed.stdout
    deadline = time.monotonic() + 15
    while (left_pg := _processes_of(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not left_pg, f"processes outlived the resumed run: {left_pg}"
