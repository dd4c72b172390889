"""A closed terminal is not a crash: SIGHUP to a running quickstart stops it like SIGTERM.

Tried on the real CLI with the embedded PostgreSQL running (the shadow task): a hangup sent to the
run's whole process group (workers, forkserver, resource tracker included, as a shell relays it), and
a real terminal (a pty whose master is closed, as when an ssh session drops) under an interactive
shell with the live progress view, where every later write to the terminal fails. Either way the
report says interrupted, no process of the run is left (the run's PostgreSQL included), and the run
resumes to the end. Two things a hangup must not do: cancel a run started under ``nohup``, and hide
the summary from a terminal that still works (a deliberate ``kill -HUP``).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import psutil

__all__ = ["run_root"]  # a fixture: imported for pytest to find

from tests.e2e.test_stranded import ROOT, cmd, embedded_env, run_root, wait_gone


def _start_args(run_dir: Path, *extra: str) -> list[str]:
    return cmd("run", "pipelines/quickstart.yaml", "--run-dir", str(run_dir), "--set", "rows=60000", *extra)


def _default_hangup() -> None:
    """In the child: SIGHUP at its default, whatever pytest itself inherited (it may run under nohup)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _await_shadow(lines: list[str]) -> str:
    """The run id once the shadow task (the one on the embedded PostgreSQL) has started, else ''."""
    run_id = ""
    for line in lines:
        event = json.loads(line) if line.startswith("{") else {}
        run_id = run_id or event.get("run_id", "")
        if event.get("event") == "task_started" and event.get("task") == "shadow":
            return run_id
    return ""


def _family(pid: int) -> list[psutil.Process]:
    """The process and its descendants now (the CLI, the forkserver, the pool's workers)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _survivors(family: list[psutil.Process], seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        left = []
        for p in family:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{p.pid}: {' '.join(p.cmdline())[:160]}")
            except psutil.NoSuchProcess:
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.3)


def _check_interrupted_and_clean(run_dir: Path, code: int | None) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    assert report["state"] == "cancelled" and "SIGHUP" in report["reason"], report["reason"]
    assert report["tasks"]["shadow"]["state"] == "cancelled"
    if code is not None:
        assert code == 130
    assert (run_dir / "postgres" / "data").is_dir()  # the server ran, so "none left" below means something
    left = wait_gone(run_dir, 15)
    assert not left, f"processes of the run outlived the hangup: {left}"


def _resume_finishes(root: Path, run_id: str) -> None:
    resumed = subprocess.run(
        cmd("run", "pipelines/quickstart.yaml", "--run-dir", str(root), "--no-progress", "--resume", run_id),
        cwd=ROOT,
        env=embedded_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "result=passed" in resumed.stdout
    assert not wait_gone(root / run_id, 15)


def test_sighup_to_the_process_group_interrupts_writes_the_report_and_resumes(run_root: Path) -> None:
    """The hangup reaches the whole group (the forkserver and the pool's workers too), as a shell sends it."""
    proc = subprocess.Popen(
        _start_args(run_root, "--no-progress"),
        cwd=ROOT,
        env=embedded_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_hangup,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    run_id = ""
    for line in proc.stderr:
        seen.append(line)
        run_id = _await_shadow(seen)
        if run_id:
            break
    assert run_id, "".join(seen)[-3000:]
    time.sleep(1.0)
    family = _family(proc.pid)
    assert len(family) > 1, "no worker processes: the group hangup would test nothing more than the CLI"
    os.killpg(proc.pid, signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err[-3000:]
    assert "interrupted by SIGHUP" in out + err
    _check_interrupted_and_clean(run_root / run_id, proc.returncode)
    assert not _survivors(family, 10)
    _resume_finishes(run_root, run_id)


def _as_controlling_terminal() -> None:
    """In the child, after setsid: make its stdin (the pty) the controlling terminal, like a login shell."""
    _default_hangup()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _read_until(master: int, done: Callable[[str], bool], seconds: float) -> str:
    buffer, deadline = "", time.monotonic() + seconds
    while not done(buffer) and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                buffer += os.read(master, 65536).decode(errors="replace")
            except OSError:  # the other side is gone
                break
    return buffer


def _started_server(root: Path) -> str:
    """The run id once the run's embedded PostgreSQL is up (the shadow task is on it), else ''."""
    for pid_file in root.glob("*/postgres/data/postmaster.pid"):
        return pid_file.parents[2].name
    return ""


def test_closing_the_terminal_of_a_shell_interrupts_the_run_and_its_workers_cleanly(run_root: Path) -> None:
    """An ssh session drops: the terminal hangs up, its interactive shell and foreground job get SIGHUP.

    The run is the shell's foreground job with its live progress view on the terminal, as a person
    runs it; every write to the terminal fails from then on.
    """
    master, slave = pty.openpty()
    line = " ".join(_start_args(run_root, "--progress"))
    proc = subprocess.Popen(
        ["bash", "--norc", "--noprofile", "-i", "-c", line],
        cwd=ROOT,
        env=embedded_env(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=_as_controlling_terminal,
    )
    os.close(slave)
    run_id, deadline = "", time.monotonic() + 120
    while not run_id and time.monotonic() < deadline and proc.poll() is None:
        _read_until(master, lambda _: False, 0.5)  # keep the terminal drained, as a terminal would
        run_id = _started_server(run_root)
    assert run_id, _read_until(master, lambda _: False, 1)[-3000:]
    time.sleep(1.0)
    family = _family(proc.pid)  # the shell, the run, its forkserver and workers
    assert len(family) > 2, family
    os.close(master)  # the terminal goes away: the kernel hangs up the session
    proc.wait(timeout=60)
    _check_interrupted_and_clean(run_root / run_id, None)  # the shell died of the hangup: its code is not the run's
    left = _survivors(family, 15)
    assert not left, f"processes of the run outlived the hangup: {left}"


def test_a_run_started_with_sighup_ignored_outlives_a_hangup(tmp_path: Path) -> None:
    """``nohup`` ignores SIGHUP before exec, so the run goes on after its terminal closes: it must."""

    def nohup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = subprocess.Popen(
        cmd("run", "tests/fixtures/slow.yaml", "--run-dir", str(tmp_path), "--no-progress", "--set", "pause=3"),
        cwd=ROOT,
        env=embedded_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=nohup,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if '"task_started"' in line and '"wait"' in line:
            break
    os.killpg(proc.pid, signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out + err)[-3000:]
    (report,) = tmp_path.glob("*/report.json")
    assert json.loads(report.read_text())["state"] == "succeeded"


def test_kill_hup_on_a_live_terminal_still_shows_the_summary_there(tmp_path: Path) -> None:
    """A deliberate ``kill -HUP`` while someone watches: the terminal still works, so the summary is shown."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cmd("run", "tests/fixtures/slow.yaml", "--run-dir", str(tmp_path), "--no-progress", "--set", "pause=30"),
        cwd=ROOT,
        env=embedded_env(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=_as_controlling_terminal,
    )
    os.close(slave)
    try:
        shown = _read_until(master, lambda b: '"task_started"' in b and '"wait"' in b, 60)
        assert '"wait"' in shown, shown[-3000:]
        os.kill(proc.pid, signal.SIGHUP)
        shown += _read_until(master, lambda b: "report:" in b and "resume with" in b, 60)
        code = proc.wait(timeout=60)
    finally:
        os.close(master)
    assert code == 130
    assert "interrupted by SIGHUP" in shown and "cancelled" in shown and "report:" in shown, shown[-3000:]
