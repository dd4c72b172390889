"""Logging survives a caller that swaps stderr for a while (CliRunner, a test harness) and closes it."""

from __future__ import annotations

import io
import sys

import pytest
import structlog

from config.logging import configure_logging


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
