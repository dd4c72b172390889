"""The quickstart and the one-shot commands on embedded defaults: no server anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS__", "S3__", "POSTGRES__"))}
    return subprocess.run(
        [sys.executable, str(ROOT / "run_pipeline.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_quickstart_runs_on_milvus_lite_and_prints_a_summary(tmp_path: Path) -> None:
    proc = run("run", "pipelines/quickstart.yaml", "--run-dir", str(tmp_path), "--set", "rows=6000", "--set", "rows_per_file=2500")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for text in ("succeeded", "rows=6,000", "files=3", "rows in milvus=6,000", "result=passed", "no bulk import"):
        assert text in out, text
    (run_dir,) = list(tmp_path.iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    assert report["state"] == "succeeded"
    assert all(t["duration"] is not None for t in report["tasks"].values())
    summary = report["summary"]
    assert summary["generate"]["rows"] == 6000 and summary["partition"]["files"] == 3
    assert summary["import"]["rows in milvus"] == 6000 and summary["verify"]["result"] == "passed"
    assert summary["shadow"]["rows"] == 6000 and summary["shadow"]["in"] == "embedded PostgreSQL"
    assert "6,000 rows x 5 fields agree on source, milvus, postgres" in summary["verify"]["full scan"]
    assert (run_dir / "milvus.db").exists() and (run_dir / "object-store").is_dir()
    again = run("verify", run_dir.name, "--run-dir", str(tmp_path))  # reopens embedded PostgreSQL and Lite
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"verify-{run_dir.name}" in again.stdout and "result=passed" in again.stdout
    (verify_dir,) = [d for d in tmp_path.iterdir() if d != run_dir]  # verify is a run of its own
    check = json.loads((verify_dir / "report.json").read_text())["summary"]["verify"]
    assert "6,000 rows x 5 fields agree on source, milvus, postgres" in check["full scan"]
    missing = run("verify", "no-such-run", "--run-dir", str(tmp_path))
    assert missing.returncode == 2 and "no run 'no-such-run'" in missing.stderr and "Traceback" not in missing.stderr


def test_generate_then_to_milvus_insert_and_import_on_lite(tmp_path: Path) -> None:
    data = tmp_path / "ds"
    gen = run(
        "generate",
        "--builtin",
        "hybrid_search",
        "--total-rows",
        "2500",
        "--out",
        str(data),
        "--no-progress",
        "--run-dir",
        str(tmp_path / "r0"),
    )
    assert gen.returncode == 0, gen.stderr
    ins = run("to-milvus", "insert", str(data), "--run-dir", str(tmp_path / "r1"))
    assert ins.returncode == 0, ins.stderr[-2000:]
    assert "rows in milvus=2,500" in ins.stdout
    imp = run("to-milvus", "import", str(data), "--run-dir", str(tmp_path / "r2"))
    assert imp.returncode == 0, imp.stderr[-2000:]
    assert "Milvus Lite has no bulk import" in imp.stdout


def test_generate_rejects_bad_input_with_exit_2(tmp_path: Path) -> None:
    bad = ROOT / "tests" / "fixtures" / "schemas" / "bad_vector_no_dim.json"
    proc = run("generate", "--schema", str(bad), "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "field 'embedding': FloatVector needs dim" in proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    proc = run("generate", "--builtin", "simple", "--out", str(tmp_path / "busy"))
    assert proc.returncode == 2 and "use --force" in proc.stderr
    assert (tmp_path / "busy" / "keep.txt").exists()
    proc = run("to-milvus", "insert", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "not a dataset directory" in proc.stderr
