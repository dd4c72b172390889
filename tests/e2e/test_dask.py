"""``--backend dask``: the same bytes as the local backend, on a LocalCluster and after losing a worker.

The pipeline is generate -> partition (Parquet into the run directory); the manifests' checksums and the
files themselves are compared with a local-backend run of the same seed, so any difference in chunking,
ordering or content fails the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = """name: gen
params: {rows: 40000, seed: 11}
tasks:
  generate:
    uses: generate
    with: {schema: SCHEMA, total_rows: "${params.rows}", seed: "${params.seed}", chunk_rows: CHUNK}
  partition: {uses: partition, needs: [generate], with: {format: parquet, rows_per_file: 10000}}
"""

pytestmark = pytest.mark.timeout(300)


def _pipeline(tmp: Path, schema: str = "simple", chunk: int = 2000) -> Path:
    file = tmp / "gen.yaml"
    file.write_text(PIPELINE.replace("SCHEMA", schema).replace("CHUNK", str(chunk)))
    return file


def _run(file: Path, run_dir: Path, *args: str, wait: bool = True) -> subprocess.Popen[str] | dict:
    env = {**os.environ, "LOGGING__FORMAT": "json", "PIPELINE__WORKERS": "2"}
    cmd = [sys.executable, "run_pipeline.py", "run", str(file), "--run-dir", str(run_dir), "--no-progress", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    return _report(run_dir)


def _report(run_dir: Path) -> dict:
    (run,) = [p for p in run_dir.iterdir() if p.is_dir()]
    return json.loads((run / "report.json").read_text()) | {"path": str(run)}


def _files(report: dict) -> list[tuple[str, str]]:
    meta = json.loads((Path(report["path"]) / "data" / "meta.json").read_text())
    out = [(f["path"] if "path" in f else f["name"], f["sha256"]) for f in meta["files"]]
    assert out and all(sha for _, sha in out)
    return out


def _bytes(report: dict) -> list[bytes]:
    return [p.read_bytes() for p in sorted((Path(report["path"]) / "data").glob("*.parquet"))]


def test_dask_local_cluster_writes_the_same_bytes_as_the_local_backend(tmp_path: Path) -> None:
    file = _pipeline(tmp_path)
    local = _run(file, tmp_path / "local")
    dask = _run(file, tmp_path / "dask", "--backend", "dask")
    assert _files(dask) == _files(local)
    assert _bytes(dask) == _bytes(local)
    workers = dask["summary"]["generate"]["workers"]
    assert workers.count("tcp://127.0.0.1:") == 2, f"chunks should run on both workers: {workers}"


def test_a_killed_dask_worker_is_replaced_and_the_output_is_unchanged(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    file = _pipeline(tmp_path, schema="ecommerce", chunk=500)
    local = _run(file, tmp_path / "local")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        proc = _run(file, tmp_path / "dask", "--backend", "dask", "--scheduler", cluster.scheduler_address, wait=False)
        assert isinstance(proc, subprocess.Popen)
        deadline = time.monotonic() + 120
        busy: list[str] = []
        while not busy:  # wait until a worker is generating a chunk: that one dies mid-task
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no Dask task ever started"
            busy = [w for w, keys in client.processing().items() if keys]
            time.sleep(0.02)
        os.kill(client.run(os.getpid)[busy[0]], signal.SIGKILL)
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out[-3000:]
    dask = _report(tmp_path / "dask")
    assert _files(dask) == _files(local)
    assert _bytes(dask) == _bytes(local)
    placement = dask["summary"]["generate"]["workers"]
    assert placement.count("tcp://") >= 2, placement
