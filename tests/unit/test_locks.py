"""One process per run directory and one live run per collection; a killed holder frees both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from dag_orchestrator.context import PipelineContext, RunServices
from task_components.connect import CollectionBusyError, guard_collection
from task_components.contracts import MilvusTarget
from tests.logwait import wait_for_event

ROOT = Path(__file__).resolve().parents[2]
SLOW = ROOT / "tests" / "fixtures" / "slow.yaml"


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_pipeline.py"), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "LOGGING__FORMAT": "json"}


def test_a_second_process_on_one_run_directory_is_refused(tmp_path: Path) -> None:
    first = subprocess.Popen(
        _cli("run", str(SLOW), "--run-dir", str(tmp_path), "--no-progress", "--set", "pause=20"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = wait_for_event(first, "wait", "task_started", timeout=60)
        second = subprocess.run(
            _cli("run", str(SLOW), "--run-dir", str(tmp_path), "--resume", run_id, "--no-progress"),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr[-2000:]
        text = " ".join(second.stderr.split())
        assert "is in use by another live process" in text and f"pid {first.pid}" in text
        assert "Traceback" not in second.stderr
        journal = (tmp_path / run_id / "state.jsonl").read_text().splitlines()
        assert all(json.loads(line)["task"] in ("count", "total") for line in journal)  # nothing interleaved
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    # the kernel freed the lock with the killed holder: the resume now runs to the end
    args = _cli("run", str(SLOW), "--run-dir", str(tmp_path), "--resume", run_id, "--no-progress", "--set", "pause=0")
    resumed = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_a_collection_loaded_by_a_live_run_is_refused_naming_it(tmp_path: Path) -> None:
    target = MilvusTarget(f"http://127.0.0.1:1/{tmp_path.name}", None, "default", lite=False)
    first = PipelineContext(run_id="run-one", run_dir=tmp_path / "one", services=RunServices())
    second = PipelineContext(run_id="run-two", run_dir=tmp_path / "two", services=RunServices())
    guard_collection(first, target, "books")
    guard_collection(first, target, "books")  # tasks of one run share the guard
    with pytest.raises(CollectionBusyError, match="run_id run-one"):
        guard_collection(second, target, "books")
    guard_collection(second, target, "films")  # another collection is free
    first.services.close(structlog.get_logger())
    guard_collection(second, target, "books")  # released at the end of the first run
    second.services.close(structlog.get_logger())


def test_a_killed_holder_frees_the_collection(tmp_path: Path) -> None:
    target = MilvusTarget(f"http://127.0.0.1:1/{tmp_path.name}", None, "default", lite=False)
    code = (
        "import sys, time\n"
        "from dag_orchestrator.context import PipelineContext, RunServices\n"
        "from task_components.connect import guard_collection\n"
        "from task_components.contracts import MilvusTarget\n"
        "ctx = PipelineContext(run_id='holder', services=RunServices())\n"
        f"guard_collection(ctx, MilvusTarget({target.uri!r}, None, 'default', False), 'books')\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        ctx = PipelineContext(run_id="next", services=RunServices())
        with pytest.raises(CollectionBusyError, match=f"pid {holder.pid}"):
            guard_collection(ctx, target, "books")
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    deadline = time.monotonic() + 5
    while True:
        try:
            guard_collection(ctx, target, "books")
            break
        except CollectionBusyError:
            assert time.monotonic() < deadline, "the lock outlived its SIGKILLed holder"
            time.sleep(0.05)
    ctx.services.close(structlog.get_logger())
