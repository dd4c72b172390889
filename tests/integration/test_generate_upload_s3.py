"""``generate.upload`` against the real S3 server: every file stored once, whole, and nothing left half-done.

The workers open their own S3 store (on a per-run Dask LocalCluster too), and with a 5 MB part size the
larger files go up as multipart uploads: the objects' bytes must hash to the manifest's sha256, every
file must be in the run's result exactly once, and no multipart upload may be left unfinished under the
prefix. A re-run under the same prefix must find every object already stored and upload nothing.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.integration.helpers import cli, service_env, subprocess_env, write_pipeline

pytestmark = pytest.mark.integration

ROWS, PER_FILE = 25_000, 10_000  # simple: ~5.6 MB per 10,000 rows, so two files go multipart, the last one not


def _spec(prefix: str) -> dict[str, Any]:
    files = {"format": "parquet", "rows_per_file": PER_FILE}
    upload = {"prefix": prefix, "part_size": "5MB", "multipart_threshold": "5MB"}
    params = {"schema": "simple", "total_rows": ROWS, "seed": 7, "chunk_rows": 3000, "files": files, "upload": upload}
    return {"name": "fused_s3", "tasks": {"files": {"uses": "generate.upload", "with": params}}}


def _run(file: Path, run_dir: Path, *args: str) -> tuple[dict[str, Any], Any]:
    """The run's report.json and its stored ``generate.upload`` result (the UploadResult an importer reads)."""
    proc = subprocess.run(
        cli("run", str(file), "--run-dir", str(run_dir), "--no-progress", *args),
        env=subprocess_env(),
        text=True,
        capture_output=True,
        timeout=240,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (run,) = [p for p in run_dir.iterdir() if p.is_dir()]
    report = json.loads((run / "report.json").read_text()) | {"path": str(run)}
    return report, pickle.loads((run / "results" / "files.pkl").read_bytes())


def _s3() -> Any:
    env = service_env()
    return boto3.client(
        "s3",
        endpoint_url=env["S3__ENDPOINT_URL"],
        aws_access_key_id=env["S3__ACCESS_KEY"],
        aws_secret_access_key=env["S3__SECRET_KEY"],
        region_name="us-east-1",
    )


@pytest.mark.parametrize("backend", ["local", "dask"])
def test_every_file_is_stored_once_whole_and_no_multipart_upload_is_left(backend: str, tmp_path: Path) -> None:
    prefix = f"fused-it/{uuid.uuid4().hex}"
    file = write_pipeline(tmp_path / "fused.yaml", _spec(prefix))
    report, result = _run(file, tmp_path / "runs", *(["--backend", "dask"] if backend == "dask" else []))
    data = Path(report["path"]) / "data"
    meta = json.loads((data / "meta.json").read_text())
    paths = [f["path"] for f in meta["files"]]
    assert [f["rows"] for f in meta["files"]] == [10_000, 10_000, 5_000]

    summary = report["summary"]["files"]
    assert (summary["files"], summary["rows"], summary["uploaded"]) == (3, ROWS, 3), summary
    assert [f.key for f in result.files] == [f"{prefix}/{p}" for p in paths], "each file listed once, in order"
    assert not any(f.skipped for f in result.files)
    assert result.manifest_key == f"{prefix}/meta.json"
    if backend == "dask":
        assert summary["workers"].count("tcp://127.0.0.1:") >= 1, summary

    s3, bucket = _s3(), service_env()["S3__BUCKET"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    assert sorted(o["Key"] for o in listed) == sorted([f"{prefix}/{p}" for p in paths] + [f"{prefix}/meta.json"])
    for entry in meta["files"]:
        obj = s3.get_object(Bucket=bucket, Key=f"{prefix}/{entry['path']}")
        body = obj["Body"].read()
        assert len(body) == entry["bytes"]
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] == obj["Metadata"]["sha256"]
        assert body == (data / entry["path"]).read_bytes()
        multipart = entry["bytes"] >= 5 << 20
        assert obj["ETag"].strip('"').endswith("-2") == multipart, (entry, obj["ETag"])
    assert sum(f["bytes"] >= 5 << 20 for f in meta["files"]) == 2, "the test means two files to go multipart"
    stored_meta = s3.get_object(Bucket=bucket, Key=f"{prefix}/meta.json")["Body"].read()
    assert stored_meta == (data / "meta.json").read_bytes()
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/").get("Uploads", []) == []

    again, again_result = _run(file, tmp_path / "again")
    assert again["summary"]["files"]["uploaded"] == 0, again["summary"]
    assert all(f.skipped for f in again_result.files) and len(again_result.files) == 3
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/").get("Uploads", []) == []


def test_a_deployed_clusters_workers_upload_with_their_own_s3_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``--scheduler`` the S3 keys are not sent through the scheduler: each worker opens the store from
    its own S3__ settings (here: the LocalCluster's worker processes inherit them), and the files still land."""
    from distributed import LocalCluster

    for name, value in service_env().items():
        monkeypatch.setenv(name, value)
    prefix = f"fused-it/{uuid.uuid4().hex}"
    file = write_pipeline(tmp_path / "fused.yaml", _spec(prefix))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        report, result = _run(file, tmp_path / "runs", "--backend", "dask", "--scheduler", cluster.scheduler_address)
    assert "tcp://127.0.0.1:" in report["summary"]["files"]["workers"], report["summary"]
    meta = json.loads((Path(report["path"]) / "data" / "meta.json").read_text())
    s3, bucket = _s3(), service_env()["S3__BUCKET"]
    for entry, uploaded in zip(meta["files"], result.files, strict=True):
        body = s3.get_object(Bucket=bucket, Key=uploaded.key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] == uploaded.sha256
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/").get("Uploads", []) == []
