"""A SIGKILLed quickstart on embedded defaults strands nothing, resumed or not.

The embedded PostgreSQL runs as its own daemon (pg_ctl), so it survives the kill itself; its watchdog
stops it within seconds once no user is alive, a resume takes over a server still running, and the
killed run's worker processes must already be gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_root() -> Iterator[Path]:
    """Runs' root outside pytest's base directory, for runs with an embedded PostgreSQL.

    As root, pgserver runs PostgreSQL as its own OS user, which must traverse every parent of the run
    directory; pytest keeps its base at 0700 and re-tightens it whenever another pytest session starts,
    so a server there can lose access to its own data directory mid-run.
    """
    root = Path(tempfile.mkdtemp(prefix="dag-pipeline-e2e-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def embedded_env() -> dict[str, str]:
    """The quickstart on embedded defaults (no server configured), logging JSON lines to read events from."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS__", "S3__", "POSTGRES__"))}
    return {**env, "LOGGING__FORMAT": "json"}


def cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_pipeline.py"), *args]


def processes_of(run_dir: Path) -> list[str]:
    """Processes whose command line names the run directory (the embedded PostgreSQL and its watchdog do)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(p.info["cmdline"] or [])
            if str(run_dir) in line and p.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{p.pid}: {line[:160]}")
        except psutil.NoSuchProcess:  # ended while we looked: that is what we wait for
            continue
    return found


def wait_gone(run_dir: Path, seconds: float) -> list[str]:
    """Processes of the run still there after waiting up to ``seconds`` for them to end."""
    deadline = time.monotonic() + seconds
    while (left := processes_of(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return left


def _kill_during_shadow(root: Path) -> tuple[str, list[int]]:
    """Start the quickstart, SIGKILL it while the shadow task writes to the embedded PostgreSQL.

    Returns the run id and the run's worker pids (its children other than the PostgreSQL and watchdog).
    """
    args = ("run", "pipelines/quickstart.yaml", "--run-dir", str(root), "--no-progress", "--set", "rows=60000")
    proc = subprocess.Popen(cmd(*args), cwd=ROOT, env=embedded_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stderr is not None
    run_id = ""
    for line in proc.stderr:
        event = json.loads(line) if line.startswith("{") else {}
        run_id = run_id or event.get("run_id", "")
        if event.get("event") == "task_started" and event.get("task") == "shadow":
            break
    time.sleep(1.5)
    family = psutil.Process(proc.pid).children(recursive=True)
    workers = [c.pid for c in family if "/postgres" not in " ".join(c.cmdline())]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return run_id, workers


def test_killed_during_shadow_without_resume_leaves_no_process(run_root: Path) -> None:
    run_id, _ = _kill_during_shadow(run_root)
    run_dir = run_root / run_id
    assert (run_dir / "postgres" / "data" / "PG_VERSION").is_file()  # the server existed to be stranded
    left = wait_gone(run_dir, 10)  # nobody resumes: the watchdog alone must stop the server
    assert not left, f"processes of the killed run are still running: {left}"


def test_killed_during_shadow_then_resumed_leaves_no_process(run_root: Path) -> None:
    run_id, workers = _kill_during_shadow(run_root)
    run_dir = run_root / run_id
    deadline = time.monotonic() + 10
    while (left := [p for p in workers if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]) and \
            time.monotonic() < deadline:  # fmt: skip
        time.sleep(0.2)
    assert not left, f"worker processes outlived the killed run: {left}"

    resumed = subprocess.run(cmd("run", "pipelines/quickstart.yaml", "--run-dir", str(run_root), "--no-progress",
                                 "--resume", run_id), cwd=ROOT, env=embedded_env(), capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "result=passed" in resumed.stdout
    left_pg = wait_gone(run_dir, 15)
    assert not left_pg, f"processes outlived the resumed run: {left_pg}"
