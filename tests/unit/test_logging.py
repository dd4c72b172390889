"""Logging survives a caller that swaps stderr for a while (CliRunner, a test harness) and closes it,
and a terminal that was closed; a newcomer's terminal shows no other library's noise."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from config.logging import configure_logging

ROOT = Path(__file__).resolve().parents[2]


def test_log_lines_go_to_the_stderr_of_the_moment(capsys: pytest.CaptureFixture[str]) -> None:
    real, swapped = sys.stderr, io.StringIO()
    sys.stderr = swapped
    try:
        configure_logging(force_format="json")
        structlog.get_logger().info("while swapped")
    finally:
        sys.stderr = real
        swapped_text = swapped.getvalue()
        swapped.close()
    structlog.get_logger().info("after the swap")  # used to raise: I/O operation on closed file
    assert "while swapped" in swapped_text
    assert "after the swap" in capsys.readouterr().err


class _HungUpTerminal(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError(5, "Input/output error")  # what a write to a closed terminal gets


def test_a_log_line_to_a_hung_up_terminal_is_lost_not_raised() -> None:
    real, sys.stderr = sys.stderr, _HungUpTerminal()
    try:
        configure_logging(force_format="json")
        structlog.get_logger().warning("nobody reads this")  # raised OSError(EIO) and ended the run
    finally:
        sys.stderr = real


_FORK_WHILE_GRPC_IS_BUSY = """
import os, sys, threading, time
if sys.argv[1] == "configured":
    from config.logging import configure_logging
    configure_logging()
import grpc
call = grpc.insecure_channel("127.0.0.1:9").unary_unary("/x.Y/Z")
def spin():
    while True:
        try:
            call(b"", timeout=0.05, wait_for_ready=True)
        except grpc.RpcError:
            pass
threading.Thread(target=spin, daemon=True).start()
time.sleep(0.3)
for _ in range(10):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(0.01)
"""


def _fork_lines(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    done = subprocess.run(
        [sys.executable, "-c", _FORK_WHILE_GRPC_IS_BUSY, mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr.count("fork_posix.cc")


def test_grpc_fork_lines_are_not_printed_once_logging_is_configured() -> None:
    """gRPC's "skipping fork() handlers" line per fork (a pg_ctl run as pgserver's user forks) is gone."""
    assert _fork_lines("bare") > 0  # the line this test is about: gRPC prints it without our setting
    assert _fork_lines("configured") == 0


def test_pgserver_imports_without_the_xdg_runtime_dir_warning() -> None:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    code = "from task_components.connect import _pgserver; _pgserver()"
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "XDG_RUNTIME_DIR" not in done.stderr, done.stderr[-2000:]
