"""pipelines/scaleout.yaml on embedded defaults: every stage on the workers, the same rows as the quickstart."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.e2e.test_quickstart import run


def test_scaleout_pipeline_loads_shadows_and_verifies_on_worker_processes(tmp_path: Path) -> None:
    sets = ["--set", "rows=6000", "--set", "rows_per_file=2500"]
    proc = run("run", "pipelines/scaleout.yaml", "--run-dir", str(tmp_path / "s"), *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list((tmp_path / "s").iterdir())
    summary = json.loads((run_dir / "report.json").read_text())["summary"]
    assert summary["files"]["files"] == 3 and summary["files"]["rows"] == 6000
    assert summary["files"]["workers"].count("pid ") == 2, f"files should be made by both worker processes: {summary['files']}"
    assert summary["shadow"]["rows"] == 6000 and summary["import"]["rows in milvus"] == 6000
    assert summary["verify"]["result"] == "passed"
    assert "6,000 rows x 5 fields agree on source, milvus, postgres" in summary["verify"]["full scan"]
    quick = run("run", "pipelines/quickstart.yaml", "--run-dir", str(tmp_path / "q"), *sets)
    assert quick.returncode == 0, quick.stderr[-3000:]
    (quick_dir,) = list((tmp_path / "q").iterdir())
    ours = [pq.read_table(p) for p in sorted((run_dir / "data").glob("*.parquet"))]
    theirs = [pq.read_table(p) for p in sorted((quick_dir / "data").glob("*.parquet"))]
    assert len(ours) == len(theirs) == 3 and all(a.equals(b) for a, b in zip(ours, theirs, strict=True)), "not the quickstart's rows"
