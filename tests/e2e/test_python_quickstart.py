"""The quickstart composed in Python equals ``pipelines/quickstart.yaml`` run by the CLI: same tasks, results.

Both run on embedded defaults (Milvus Lite, a local object store, an embedded PostgreSQL), each in its own
temporary run directory: the YAML file through ``run_pipeline.py run`` in a subprocess, the Python
pipeline in this process through ``Pipeline.run``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import dag_pipeline as dp
from config.settings import Settings
from dag_orchestrator.dag import DAG
from dag_orchestrator.locks import LockHeld, PathLock
from dag_orchestrator.state import StateStore
from pipeline.registry import build_dag
from pipeline.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"
ROWS, PER_FILE = 2000, 1000
SERVICES = ("MILVUS__", "S3__", "POSTGRES__")


def python_quickstart(rows: int = 20_000, schema: str = "simple", seed: int = 7, rows_per_file: int = 10_000) -> dp.Pipeline:
    """The README's Python quickstart, step for step the YAML file's tasks."""
    p = dp.Pipeline("quickstart", params={"rows": rows, "schema": schema, "seed": seed, "rows_per_file": rows_per_file})
    rows_ = p.step("generate", schema=schema, total_rows=rows, seed=seed)
    files = p.step("partition", rows_, format="parquet", rows_per_file=rows_per_file)
    uploaded = p.step("storage.upload", files, name="upload").options(retries=3, timeout=600)
    collection = p.step("milvus.create_collection", name="collection", schema=schema, drop_if_exists=True)
    imported = p.step("milvus.bulk_import", uploaded, collection, name="import", wait=True, timeout=1800)
    shadow = p.step("shadow.sync", rows_, name="shadow")
    p.step("verify", imported, shadow, level="full")
    return p


def shape(dag: DAG) -> dict[str, tuple[str, frozenset[str], frozenset[str], int, float | None]]:
    return {t.name: (getattr(t, "component", ""), frozenset(t.needs), frozenset(t.streams_from), t.retry.attempts, t.timeout) for t in dag}


def test_python_quickstart_builds_the_yaml_files_tasks() -> None:
    overrides = {"rows": ROWS, "rows_per_file": PER_FILE}
    from_yaml = build_dag(load_spec(QUICKSTART, overrides), QUICKSTART)
    from_python = python_quickstart(ROWS, rows_per_file=PER_FILE).build()
    assert shape(from_python) == shape(from_yaml)
    assert {t.name: getattr(t, "params", None) for t in from_python} == {t.name: getattr(t, "params", None) for t in from_yaml}


def result_facts(results: dict[str, Any], summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "types": {name: type(r).__name__ for name, r in results.items()},
        "generated": summary["generate"]["rows"],
        "files": summary["partition"]["files"],
        "in milvus": summary["import"]["rows in milvus"],
        "in shadow": summary["shadow"]["rows"],
        "verify": summary["verify"]["result"],
        "full scan": summary["verify"]["full scan"],
    }


@pytest.mark.timeout(900)
def test_python_quickstart_runs_like_the_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICES)}
    cli = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_pipeline.py"),
            "run",
            str(QUICKSTART),
            "--run-dir",
            str(tmp_path / "yaml"),
            "--set",
            f"rows={ROWS}",
            "--set",
            f"rows_per_file={PER_FILE}",
            "--no-progress",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    (yaml_run,) = (tmp_path / "yaml").iterdir()
    yaml_report = json.loads((yaml_run / "report.json").read_text())

    for key in [k for k in os.environ if k.startswith(SERVICES)]:
        monkeypatch.delenv(key)
    run = python_quickstart(ROWS, rows_per_file=PER_FILE).run(tmp_path / "python", settings=Settings())
    assert run.ok, run.result.reason
    report = json.loads(run.report.read_text())
    assert report["state"] == yaml_report["state"] == "succeeded"
    assert report["pipeline"] == yaml_report["pipeline"] == "quickstart"
    assert sorted(map(str, report["edges"])) == sorted(map(str, yaml_report["edges"]))
    assert set(report["tasks"]) == set(yaml_report["tasks"])
    python_facts = result_facts(run.result.results, run.summary)
    yaml_facts = result_facts(StateStore.existing(yaml_run).succeeded(), yaml_report["summary"])
    assert python_facts == yaml_facts
    assert python_facts["generated"] == python_facts["in milvus"] == python_facts["in shadow"] == ROWS
    assert python_facts["verify"] == "passed" and python_facts["files"] == ROWS // PER_FILE
    assert (run.path / "report.html").is_file() and (run.path / "request.json").is_file()
    assert _lock_free(run.path / ".lock")


def _lock_free(lock: Path) -> bool:
    """The run directory's lock was released when the run ended (the file may stay; its lock may not)."""
    try:
        PathLock(lock, "test").acquire(run_id="probe").release()
    except LockHeld:
        return False
    return True


SLEEPY = """
import sys
import time

import dag_pipeline as dp

p = dp.Pipeline("sleepy")
quick = p.step("demo.sleep", name="quick", seconds=0)
p.step("demo.sleep", quick, name="slow", seconds=float(sys.argv[2]))

if __name__ == "__main__":
    run = p.run(sys.argv[1], resume=sys.argv[3] if len(sys.argv) > 3 else None)
    print("STATE", run.state.value, run.run_id, flush=True)
"""


def test_a_python_run_stops_on_sigterm_like_the_cli_and_resumes(tmp_path: Path) -> None:
    script = tmp_path / "sleepy.py"
    script.write_text(SLEEPY)
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(runs), "60"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not any('"quick"' in p.read_text() for p in runs.glob("*/state.jsonl")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    _, state, run_id = out.split()
    assert state == "cancelled"
    report = json.loads((runs / run_id / "report.json").read_text())
    assert "SIGTERM" in report["reason"] and report["tasks"]["quick"]["state"] == "succeeded"
    again = subprocess.run(
        [sys.executable, str(script), str(runs), "0", run_id], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert again.stdout.split() == ["STATE", "succeeded", run_id], again.stderr[-2000:]
    tasks = json.loads((runs / run_id / "report.json").read_text())["tasks"]
    assert tasks["quick"].get("resumed") and tasks["slow"]["state"] == "succeeded"
