"""SIGTERM to a real `run_pipeline.py run` process: clean stop, honest report, resumable; and a run that
cannot be resumed (a one-shot command's) never says it can."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.test_stranded import run_root
from tests.logwait import wait_for_event

__all__ = ["run_root"]  # a fixture: imported for pytest to find

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
    out, _ = proc.communicate(timeout=5)
    assert time.monotonic() - sent < 5
    assert proc.returncode == 130
    assert f"resume with: --resume {run_id}" in out  # a pipeline file's run can be resumed, so it says how

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


def test_a_failed_verify_run_id_does_not_offer_a_resume(run_root: Path) -> None:
    """`verify RUN_ID` is a one-shot run built in code: `--resume` cannot take it up again, so no hint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS__", "S3__", "POSTGRES__"))}
    cli = [sys.executable, "run_pipeline.py"]
    args = ["run", "pipelines/quickstart.yaml", "--run-dir", str(run_root), "--no-progress", "--set", "rows=2000"]
    first = subprocess.run([*cli, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    (loaded,) = [d for d in run_root.iterdir() if d.is_dir()]
    shutil.rmtree(loaded / "milvus.db")  # Milvus Lite reopens empty: the collection the run loaded is gone
    again = subprocess.run(
        [*cli, "verify", loaded.name, "--run-dir", str(run_root), "--level", "count"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-2000:]
    assert "failed" in again.stdout
    assert "resume with" not in again.stdout + again.stderr
