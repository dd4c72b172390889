"""SIGTERM to a real `run_pipeline.py run` process: clean stop, honest report, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.logwait import wait_for_event

ROOT = Path(__file__).resolve().parents[2]
SLOW = ROOT / "tests" / "fixtures" / "slow.yaml"


def start_run(run_dir: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LOGGING__FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "run_pipeline.py", "run", str(SLOW), "--run-dir", str(run_dir), "--no-progress", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    proc = start_run(tmp_path)
    run_id = wait_for_event(proc, "wait", "task_started", timeout=30)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=5)
    assert time.monotonic() - sent < 5
    assert proc.returncode not in (0, None)

    report = json.loads((tmp_path / run_id / "report.json").read_text())
    states = {name: t["state"] for name, t in report["tasks"].items()}
    assert states == {"count": "succeeded", "total": "succeeded", "wait": "cancelled", "final": "cancelled"}
    assert report["state"] == "cancelled" and "SIGTERM" in report["reason"]

    resumed = subprocess.run(
        [
            sys.executable,
            "run_pipeline.py",
            "run",
            str(SLOW),
            "--run-dir",
            str(tmp_path),
            "--no-progress",
            "--resume",
            run_id,
            "--set",
            "pause=0.1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((tmp_path / run_id / "report.json").read_text())
    assert report["state"] == "succeeded"
    assert report["tasks"]["count"]["resumed"] and report["tasks"]["total"]["resumed"]
    assert not report["tasks"]["wait"]["resumed"] and report["tasks"]["final"]["state"] == "succeeded"
