"""A closed terminal is not a crash: SIGHUP to a running quickstart stops it like SIGTERM.

Both ways a hangup arrives are tried on the real CLI with the embedded PostgreSQL running (the shadow
task): ``kill -HUP`` with the output on pipes, and a real terminal (a pty whose master is closed, as
when an ssh session drops) where every later write to the terminal fails. Either way the report says
interrupted, the exit code is 130, no process of the run is left (the run's PostgreSQL included), and
the run resumes to the end.
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
from pathlib import Path

__all__ = ["run_root"]  # a fixture: imported for pytest to find

from tests.e2e.test_stranded import ROOT, cmd, embedded_env, run_root, wait_gone


def _start_args(run_dir: Path) -> list[str]:
    return cmd("run", "pipelines/quickstart.yaml", "--run-dir", str(run_dir), "--no-progress", "--set", "rows=60000")


def _await_shadow(lines: list[str]) -> str:
    """The run id once the shadow task (the one on the embedded PostgreSQL) has started, else ''."""
    run_id = ""
    for line in lines:
        event = json.loads(line) if line.startswith("{") else {}
        run_id = run_id or event.get("run_id", "")
        if event.get("event") == "task_started" and event.get("task") == "shadow":
            return run_id
    return ""


def _check_interrupted_and_clean(run_dir: Path, code: int | None) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    assert report["state"] == "cancelled" and "SIGHUP" in report["reason"], report["reason"]
    assert report["tasks"]["shadow"]["state"] == "cancelled"
    assert code == 130
    assert (run_dir / "postgres" / "data").is_dir()  # the server ran, so "none left" below means something
    left = wait_gone(run_dir, 15)
    assert not left, f"processes of the run outlived the hangup: {left}"


def _resume_finishes(root: Path, run_id: str) -> None:
    resumed = subprocess.run(cmd("run", "pipelines/quickstart.yaml", "--run-dir", str(root), "--no-progress",
                                 "--resume", run_id), cwd=ROOT, env=embedded_env(), capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "result=passed" in resumed.stdout
    assert not wait_gone(root / run_id, 15)


def test_sighup_on_pipes_interrupts_writes_the_report_and_resumes(run_root: Path) -> None:
    proc = subprocess.Popen(_start_args(run_root), cwd=ROOT, env=embedded_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
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
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err[-3000:]
    assert "interrupted by SIGHUP" in out + err
    _check_interrupted_and_clean(run_root / run_id, proc.returncode)
    _resume_finishes(run_root, run_id)


def _as_controlling_terminal() -> None:
    """In the child, after setsid: make its stdin (the pty) the controlling terminal, like a login shell."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_closing_the_terminal_interrupts_cleanly(run_root: Path) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(_start_args(run_root), cwd=ROOT, env=embedded_env(), stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True, preexec_fn=_as_controlling_terminal)  # fmt: skip
    os.close(slave)
    buffer, run_id, deadline = "", "", time.monotonic() + 120
    while not run_id and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                buffer += os.read(master, 65536).decode(errors="replace")
            except OSError:
                break
            run_id = _await_shadow(buffer.replace("\r\n", "\n").splitlines())
    assert run_id, buffer[-3000:]
    time.sleep(1.0)
    os.close(master)  # the terminal goes away: the kernel hangs up the session (SIGHUP to the run)
    code = proc.wait(timeout=60)
    _check_interrupted_and_clean(run_root / run_id, code)
