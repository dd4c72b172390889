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


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_forget_dead_handles_edits_pgserver_list_under_pgserver_lock(tmp_path: Path) -> None:
    """A process registering with pgserver at the same moment must not be lost: the edit waits for its lock."""
    from task_components.connect import _pgserver, forget_dead_handles

    lock_path = _pgserver().PostgresServer.lock_path
    handles = tmp_path / ".handle_pids.json"
    dead = _dead_pid()
    handles.write_text(json.dumps([os.getpid(), dead]))
    holder = subprocess.Popen([sys.executable, "-c", "import fasteners, sys, time\n"
                               "lock = fasteners.InterProcessLock(sys.argv[1]); lock.acquire()\n"
                               "print('held', flush=True); time.sleep(1.0); lock.release()", str(lock_path)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    assert forget_dead_handles(tmp_path) == [dead]
    waited = time.monotonic() - started
    holder.communicate(timeout=10)
    assert json.loads(handles.read_text()) == [os.getpid()]
    assert waited > 0.5, "the list was edited while another process held pgserver's lock"


def _watch(tmp_path: Path, users: list[int], server: int) -> subprocess.Popen[bytes]:
    from dag_orchestrator.watchdog import watchdog_script

    (tmp_path / "pids.json").write_text(json.dumps(users))
    (tmp_path / "postmaster.pid").write_text(f"{server}\n/data\n")
    args = [str(tmp_path / "pids.json"), str(tmp_path / "lock"), str(tmp_path / "postmaster.pid")]
    return subprocess.Popen([sys.executable, "-I", watchdog_script(), *args])


def test_watchdog_stops_the_server_once_its_last_user_is_killed(tmp_path: Path) -> None:
    server = subprocess.Popen(["sleep", "60"])  # stands in for the postmaster: SIGINT ends both
    user = subprocess.Popen(["sleep", "60"])
    watchdog = _watch(tmp_path, [user.pid, _dead_pid()], server.pid)
    try:
        time.sleep(1.0)
        assert server.poll() is None and watchdog.poll() is None  # a live user keeps the server up
        user.kill()
        user.wait()
        assert server.wait(timeout=5) == -signal.SIGINT  # a fast shutdown, within seconds
        assert watchdog.wait(timeout=5) == 0
        assert json.loads((tmp_path / "pids.json").read_text()) == []
    finally:
        for p in (server, user, watchdog):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_watchdog_leaves_when_someone_else_stopped_the_server(tmp_path: Path) -> None:
    server = subprocess.Popen(["sleep", "60"])
    watchdog = _watch(tmp_path, [os.getpid()], server.pid)
    try:
        time.sleep(0.5)
        server.terminate()
        server.wait()
        assert watchdog.wait(timeout=5) == 0
        assert json.loads((tmp_path / "pids.json").read_text()) == [os.getpid()]  # users it never touched
    finally:
        for p in (server, watchdog):
            if p.poll() is None:
                p.kill()
                p.wait()
