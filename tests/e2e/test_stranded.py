"""A SIGKILLed quickstart on embedded defaults strands nothing, resumed or not.

The embedded PostgreSQL runs as its own daemon (pg_ctl), so it survives the kill itself; its watchdog
stops it within seconds once no user is alive, a resume takes over a server still running, and the
killed run's worker processes must already be gone.
"""

from __future__ import annotations

import contextlib
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
    """Processes of the run's own servers: any whose command line names the run directory (the
    postmaster, the watchdog), whose working directory is inside it (PostgreSQL's backends and
    auxiliary processes, ``postgres: checkpointer``, name nothing but run in the data directory), or
    the postmaster recorded in its postmaster.pid with its children."""
    family: set[int] = set()
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        postmaster = psutil.Process(int((run_dir / "postgres" / "data" / "postmaster.pid").read_text().split()[0]))
        if str(run_dir) in " ".join(postmaster.cmdline()):  # the number may belong to someone else by now
            family = {postmaster.pid, *(c.pid for c in postmaster.children(recursive=True))}
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(p.info["cmdline"] or [])
            try:
                cwd = p.cwd()
            except psutil.AccessDenied:
                cwd = ""
            ours = str(run_dir) in line or cwd == str(run_dir) or cwd.startswith(f"{run_dir}/") or p.pid in family
            if ours and p.status() != psutil.STATUS_ZOMBIE:
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


def _kill_during_shadow(root: Path, after: float | None = 1.5) -> tuple[str, list[int]]:
    """Start the quickstart, SIGKILL it ``after`` seconds into the shadow task, while it writes to the
    embedded PostgreSQL; with ``after=None``, as soon as it starts that server (initdb or pg_ctl running:
    on a slow disk, 1.5 s into the task is still there too).

    Returns the run id and the run's worker pids (its children other than the PostgreSQL and watchdog).
    """
    args = ("run", "pipelines/quickstart.yaml", "--run-dir", str(root), "--no-progress", "--set", "rows=60000")
    proc = subprocess.Popen(cmd(*args), cwd=ROOT, env=embedded_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    run_id = ""
    for line in proc.stderr:
        event = json.loads(line) if line.startswith("{") else {}
        run_id = run_id or event.get("run_id", "")
        if event.get("event") == "task_started" and event.get("task") == "shadow":
            break
    if after is None:  # the starter records itself before initdb/pg_ctl, and drops itself once registered
        starting = root / run_id / "postgres" / "starting.json"
        deadline = time.monotonic() + 60
        while str(proc.pid) not in (starting.read_text() if starting.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        time.sleep(after)
    workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True) if not _of_the_server(c)]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return run_id, workers


def _of_the_server(p: psutil.Process) -> bool:
    """initdb, pg_ctl and, while pg_ctl waits for it, the postmaster and its 'postgres: checkpointer' and
    the like are the run's descendants too: they are the watchdog's to stop, not the kernel's."""
    try:
        line = " ".join(p.cmdline())
        return "/postgres" in line or line.startswith("postgres:") or p.name() == "postgres"
    except psutil.Error:  # gone already
        return True


@pytest.mark.parametrize("after", [None, 1.5], ids=["during-server-start", "during-copy"])
def test_killed_during_shadow_without_resume_leaves_no_process(run_root: Path, after: float | None) -> None:
    run_id, _ = _kill_during_shadow(run_root, after)
    run_dir = run_root / run_id
    assert (run_dir / "postgres").is_dir()  # the server was being started or running: it could be stranded
    left = wait_gone(run_dir, 40)  # nobody resumes: the watchdog alone must stop the server (pg_ctl may need
    # seconds to bring it up after the kill; the watchdog stops it as soon as it is up)
    assert not left, f"processes of the killed run are still running: {left}"


def test_killed_during_shadow_then_resumed_leaves_no_process(run_root: Path) -> None:
    run_id, workers = _kill_during_shadow(run_root)
    run_dir = run_root / run_id
    deadline = time.monotonic() + 10
    while (left := [p for p in workers if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"worker processes outlived the killed run: {left}"

    resumed = subprocess.run(
        cmd("run", "pipelines/quickstart.yaml", "--run-dir", str(run_root), "--no-progress", "--resume", run_id),
        cwd=ROOT,
        env=embedded_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
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
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fasteners, sys, time\n"
            "lock = fasteners.InterProcessLock(sys.argv[1]); lock.acquire()\n"
            "print('held', flush=True); time.sleep(1.0); lock.release()",
            str(lock_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
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


def test_watchdog_started_before_the_server_stops_one_that_comes_up_after_its_starter_died(tmp_path: Path) -> None:
    """A run killed while pg_ctl starts the server: pg_ctl finishes without it, and nobody registered."""
    from dag_orchestrator.watchdog import watchdog_script

    starter = subprocess.Popen(["sleep", "60"])
    (tmp_path / "starting.json").write_text(json.dumps([starter.pid]))
    args = [str(tmp_path / "pids.json"), str(tmp_path / "lock"), str(tmp_path / "postmaster.pid"), str(tmp_path / "starting.json")]
    watchdog = subprocess.Popen([sys.executable, "-I", watchdog_script(), *args])
    server = None
    try:
        time.sleep(1.0)
        assert watchdog.poll() is None  # no server yet, a live starter: it waits
        starter.kill()
        starter.wait()
        time.sleep(1.0)
        assert watchdog.poll() is None  # the start may still bring a server up without its starter
        server = subprocess.Popen(["sleep", "60"])  # stands in for the postmaster pg_ctl brought up
        (tmp_path / "postmaster.pid").write_text(f"{server.pid}\n/data\n")
        assert server.wait(timeout=5) == -signal.SIGINT
        assert watchdog.wait(timeout=5) == 0
        assert json.loads((tmp_path / "starting.json").read_text()) == []
    finally:
        for p in (starter, watchdog, *([server] if server else [])):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_watchdog_keeps_a_restarted_server_while_a_new_starter_is_alive(tmp_path: Path) -> None:
    """Someone stopped the server it saw, and another run is starting it again: that is not 'gone'."""
    from dag_orchestrator.watchdog import watchdog_script

    server = subprocess.Popen(["sleep", "60"])
    starter = subprocess.Popen(["sleep", "60"])
    (tmp_path / "pids.json").write_text(json.dumps([os.getpid()]))
    (tmp_path / "postmaster.pid").write_text(f"{server.pid}\n/data\n")
    (tmp_path / "starting.json").write_text(json.dumps([]))
    args = [str(tmp_path / "pids.json"), str(tmp_path / "lock"), str(tmp_path / "postmaster.pid"), str(tmp_path / "starting.json")]
    watchdog = subprocess.Popen([sys.executable, "-I", watchdog_script(), *args])
    second = None
    try:
        time.sleep(1.0)
        (tmp_path / "pids.json").write_text(json.dumps([]))
        (tmp_path / "starting.json").write_text(json.dumps([starter.pid]))
        server.terminate()  # stopped by its last user while the new starter waits for the lock
        server.wait()
        time.sleep(1.0)
        assert watchdog.poll() is None, "left while a new start was under way"
        second = subprocess.Popen(["sleep", "60"])
        (tmp_path / "postmaster.pid").write_text(f"{second.pid}\n/data\n")
        time.sleep(1.0)
        assert second.poll() is None  # its starter lives
        starter.kill()
        starter.wait()
        assert second.wait(timeout=5) == -signal.SIGINT
        assert watchdog.wait(timeout=5) == 0
    finally:
        for p in (server, starter, watchdog, *([second] if second else [])):
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


def test_two_threads_start_embedded_servers_at_once_without_breaking_the_lock(run_root: Path) -> None:
    """Two runs of one process (two shadow tasks, a daemon's runs) reach embedded_dsn from worker threads.

    pgserver's lock is held per process, so without a thread lock the second thread enters it while
    the first holds it, and the first's release fails ('Unable to release an unaquired lock').
    """
    import threading

    from task_components import connect

    dirs = [run_root / "a", run_root / "b"]
    results: dict[str, str] = {}

    def start(d: Path) -> None:
        try:
            results[d.name] = connect.embedded_dsn(d)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[d.name] = f"FAILED: {type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=start, args=(d,)) for d in dirs]
    try:
        for t in threads:
            t.start()
            time.sleep(0.2)  # the second arrives while the first is inside pgserver's initdb/start
        for t in threads:
            t.join(timeout=120)
        assert all(v.startswith("postgresql://") for v in results.values()) and len(results) == 2, results
        for d in dirs:  # one watchdog each, recognised as one
            assert connect._watchdog_running(d / "postgres" / "watchdog.pid", d / "postgres" / "data")
    finally:
        for d in dirs:
            server = connect._embedded.pop(str(d.resolve()), None)
            if server is not None:
                server.cleanup()
    for d in dirs:
        assert not wait_gone(d, 15)


def test_a_watchdog_pid_now_used_by_another_process_does_not_stop_a_new_watchdog(tmp_path: Path) -> None:
    """After a reboot the pid in watchdog.pid may be anyone's: the server must still get its watchdog."""
    from task_components.connect import _start_watchdog, _watchdog_running

    base, data = tmp_path / "postgres", tmp_path / "postgres" / "data"
    data.mkdir(parents=True)
    server = subprocess.Popen(["sleep", "60"])  # stands in for the postmaster
    (data / "postmaster.pid").write_text(f"{server.pid}\n{data}\n")
    (data / ".handle_pids.json").write_text(json.dumps([os.getpid()]))
    (base / "watchdog.pid").write_text(str(os.getpid()))  # alive, but not a watchdog
    try:
        _start_watchdog(base, data)
        watchdog = int((base / "watchdog.pid").read_text())
        assert watchdog != os.getpid() and _watchdog_running(base / "watchdog.pid", data)
        server.terminate()
        server.wait()
        deadline = time.monotonic() + 5
        while psutil.pid_exists(watchdog) and psutil.Process(watchdog).status() != "zombie" and time.monotonic() < deadline:
            time.sleep(0.1)
        log = (base / "watchdog.log").read_text()  # what it said is kept where a person can look
        assert "watching the server" in log and "the server is gone" in log, log
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_watchdog_skips_rounds_while_the_user_list_is_empty_or_half_written(tmp_path: Path) -> None:
    """pgserver truncates the list before it rewrites it: an empty or broken file is not 'no users'."""
    server = subprocess.Popen(["sleep", "60"])
    watchdog = _watch(tmp_path, [os.getpid()], server.pid)
    try:
        for text in ("", "[12", "{}"):
            (tmp_path / "pids.json").write_text(text)
            time.sleep(1.2)  # two rounds of the watchdog
            assert server.poll() is None and watchdog.poll() is None, f"stopped on a list reading {text!r}"
        (tmp_path / "pids.json").write_text(json.dumps([_dead_pid()]))
        assert server.wait(timeout=5) == -signal.SIGINT
        assert watchdog.wait(timeout=5) == 0
    finally:
        for p in (server, watchdog):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_pgserver_import_warning_filter_is_set_once_not_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """catch_warnings swaps the process-wide filters: from worker threads, on every call, it races."""
    import warnings

    from task_components import connect

    first = connect._pgserver()

    def swapped() -> None:
        raise AssertionError("warning filters swapped on a later call")

    monkeypatch.setattr(warnings, "catch_warnings", swapped)
    assert connect._pgserver() is first
