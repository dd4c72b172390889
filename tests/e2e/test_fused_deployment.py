"""On a Dask deployment (``--scheduler``) without servers: what must scan in the engine does, and what cannot
work is refused by name (a local store is a directory on each worker's own disk)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_quickstart import run

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_the_quickstart_on_a_deployment_verifies_its_embedded_shadow_in_the_engine(tmp_path: Path, scheduler: str) -> None:
    """Lite and an embedded PostgreSQL cannot be read by workers: verify scans them here, it does not refuse."""
    proc = run(
        "run", "pipelines/quickstart.yaml", "--run-dir", str(tmp_path), "--set", "rows=3000", "--backend", "dask", "--scheduler", scheduler
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    summary = json.loads((run_dir / "report.json").read_text())["summary"]
    assert summary["verify"]["result"] == "passed"
    assert "3,000 rows x 5 fields agree on source, milvus, postgres" in summary["verify"]["full scan"]


def test_generate_upload_on_a_deployment_refuses_a_local_store(tmp_path: Path, scheduler: str) -> None:
    pipe = tmp_path / "p.yaml"
    pipe.write_text(
        "name: p\ntasks:\n  files: {uses: generate.upload, with: {schema: simple, total_rows: 2000, files: {rows_per_file: 1000}}}\n"
    )
    proc = run("run", str(pipe), "--run-dir", "relative-runs", "--backend", "dask", "--scheduler", scheduler, cwd=tmp_path)
    assert proc.returncode != 0
    assert "needs S3" in proc.stdout + proc.stderr and "S3__ENDPOINT_URL" in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("relative-runs/*/object-store")), "nothing may be 'uploaded' to a worker's own disk"
