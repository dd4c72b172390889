"""``generate.upload`` makes each file whole on a worker; these runs prove its output is the streaming path's.

Every file a fused run writes must be byte-identical to what ``generate -> partition -> storage.upload``
writes for the same seed, chunk_rows and rows_per_file (an importer or a verifier may read either), on the
local backend and on a Dask LocalCluster. Both paths run side by side in one pipeline (one process start)
and their meta.json entries and file bytes are compared; the local object store (a directory) is checked
against the dataset, a re-run under the same prefix must skip every object, and bad parameters must stop
the run before it starts (exit 2, the field named, no traceback). No services: the store is a directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "fused-e2e"

pytestmark = pytest.mark.timeout(300)


def _env() -> dict[str, str]:
    """No S3__ endpoint or keys (the store is then the local directory), a fixed bucket name, two workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3__")}
    return env | {"LOGGING__FORMAT": "json", "PIPELINE__WORKERS": "2", "S3__BUCKET": BUCKET}


def _fused(schema: str, rows: int, chunk: int, files: dict[str, Any], prefix: str, **upload: Any) -> dict[str, Any]:
    params = {"schema": schema, "total_rows": rows, "seed": 11, "chunk_rows": chunk, "files": files}
    return {"uses": "generate.upload", "with": params | {"upload": {"prefix": prefix, **upload}}}


def _pair(tmp: Path, schema: str, rows: int, chunk: int, files: dict[str, Any]) -> Path:
    """One pipeline, both paths: fused into <run dir>/data, streaming into ``tmp/stream``; ``files`` is
    given to both (generate.upload's ``files`` and partition's options)."""
    gen = {"schema": schema, "total_rows": rows, "seed": 11, "chunk_rows": chunk}
    tasks = {
        "fused": _fused(schema, rows, chunk, files, "fused"),
        "generate": {"uses": "generate", "with": gen},
        "partition": {"uses": "partition", "needs": ["generate"], "with": files | {"out": str(tmp / "stream")}},
        "upload": {"uses": "storage.upload", "needs": ["partition"], "with": {"prefix": "stream"}},
    }
    return _write(tmp / "pair.yaml", {"name": "pair", "tasks": tasks})


def _write(path: Path, spec: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _cli(file: Path, run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "run_pipeline.py", "run", str(file), "--run-dir", str(run_dir), "--no-progress", *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), text=True, capture_output=True, timeout=240)


def _run(file: Path, run_dir: Path, *args: str) -> dict[str, Any]:
    proc = _cli(file, run_dir, *args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (run,) = [p for p in run_dir.iterdir() if p.is_dir()]
    return json.loads((run / "report.json").read_text()) | {"path": str(run)}


def _meta(data: Path) -> list[dict[str, Any]]:
    files = json.loads((data / "meta.json").read_text())["files"]
    assert files and all(f["sha256"] and f["bytes"] > 0 for f in files), files
    return [{k: f[k] for k in ("path", "rows", "bytes", "sha256")} for f in files]


def _bytes(data: Path) -> dict[str, bytes]:
    return {f["path"]: (data / f["path"]).read_bytes() for f in _meta(data)}


def _store(report: dict[str, Any], prefix: str) -> Path:
    return Path(report["path"]) / "object-store" / BUCKET / prefix


STRADDLING = {"format": "parquet", "rows_per_file": 2000}


@pytest.fixture(scope="module")
def straddling(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Parquet, chunk_rows 1300 not dividing rows_per_file 2000: most files take part of a chunk that
    straddles two files (both workers generate it), and the last file is short."""
    tmp = tmp_path_factory.mktemp("straddling")
    return _run(_pair(tmp, "simple", 9000, 1300, STRADDLING), tmp / "runs") | {"stream": str(tmp / "stream")}


def _assert_same_dataset(fused: Path, stream: Path, rows: int, per_file: int) -> None:
    """Same meta.json entries (path, rows, bytes, sha256), files of ``per_file`` rows, the same bytes."""
    meta = _meta(fused)
    assert meta == _meta(stream)
    assert [f["rows"] for f in meta] == [min(per_file, rows - i) for i in range(0, rows, per_file)]
    assert _bytes(fused) == _bytes(stream)
    for f in meta:
        assert hashlib.sha256((fused / f["path"]).read_bytes()).hexdigest() == f["sha256"]


def test_straddling_parquet_files_are_byte_identical_to_the_streaming_path(straddling: dict[str, Any]) -> None:
    _assert_same_dataset(Path(straddling["path"]) / "data", Path(straddling["stream"]), 9000, 2000)
    summary = straddling["summary"]["fused"]
    assert (summary["files"], summary["rows"], summary["uploaded"]) == (5, 9000, 5), summary


CASES = {  # chunk_rows never divides the file's rows: every case has straddling chunks
    "simple-json": ("simple", 5000, 700, {"format": "json", "rows_per_file": 1500}, 1500),
    "all_types-parquet-file_count-zstd": ("all_types", 3000, 400, {"format": "parquet", "file_count": 3, "compression": "zstd"}, 1000),
    "all_types-json": ("all_types", 2000, 300, {"format": "json", "rows_per_file": 700}, 700),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_json_and_many_field_types_are_byte_identical(case: str, tmp_path: Path) -> None:
    """all_types has every Milvus field type (vectors of each kind, nullable, defaults, dynamic fields)."""
    schema, rows, chunk, files, per_file = CASES[case]
    report = _run(_pair(tmp_path, schema, rows, chunk, files), tmp_path / "runs")
    fused = Path(report["path"]) / "data"
    assert {p.suffix for p in fused.iterdir()} == {f".{files['format']}", ".json"}
    _assert_same_dataset(fused, tmp_path / "stream", rows, per_file)


def test_dask_local_cluster_makes_the_local_backends_files_on_two_workers(straddling: dict[str, Any], tmp_path: Path) -> None:
    file = _write(tmp_path / "dask.yaml", {"name": "dask", "tasks": {"fused": _fused("simple", 9000, 1300, STRADDLING, "fused")}})
    dask = _run(file, tmp_path / "runs", "--backend", "dask")
    local = Path(straddling["path"]) / "data"
    assert _meta(Path(dask["path"]) / "data") == _meta(local)
    assert _bytes(Path(dask["path"]) / "data") == _bytes(local)
    assert _bytes(_store(dask, "fused")) == _bytes(local)
    workers = dask["summary"]["fused"]["workers"]
    assert workers.count("tcp://127.0.0.1:") == 2, f"files should be made on both Dask workers: {workers}"


def test_store_holds_the_dataset_and_a_rerun_under_the_same_prefix_skips_it(straddling: dict[str, Any], tmp_path: Path) -> None:
    data, store = Path(straddling["path"]) / "data", _store(straddling, "fused")
    assert sorted(p.name for p in store.iterdir()) == sorted([*(f["path"] for f in _meta(data)), "meta.json"])
    assert _bytes(store) == _bytes(data)
    assert (store / "meta.json").read_bytes() == (data / "meta.json").read_bytes()
    inodes = {p.name: p.stat().st_ino for p in store.iterdir()}

    spec = {"name": "again", "tasks": {"fused": _fused("simple", 9000, 1300, STRADDLING, "fused", local_root=str(store.parents[1]))}}
    again = _run(_write(tmp_path / "again.yaml", spec), tmp_path / "runs")
    summary = again["summary"]["fused"]
    assert (summary["files"], summary["uploaded"]) == (5, 0), summary
    result = pickle.loads((Path(again["path"]) / "results" / "fused.pkl").read_bytes())
    assert [f.key for f in result.files] == [f"fused/{f['path']}" for f in _meta(data)]
    assert all(f.skipped for f in result.files), result.files
    data_files = {p.name: p.stat().st_ino for p in store.iterdir() if p.name != "meta.json"}
    assert data_files == {k: v for k, v in inodes.items() if k != "meta.json"}, "an unchanged object was written again"
    assert _bytes(store) == _bytes(data)
    assert not (Path(again["path"]) / "object-store").exists(), "local_root should have pointed the re-run at the first store"


BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "file_count-and-rows_per_file": ({"files": {"rows_per_file": 10, "file_count": 3}}, ["with.files", "file_count", "rows_per_file"]),
    "upload-concurrency": ({"upload": {"concurrency": 4}}, ["upload.concurrency"]),
    "shards-with-partition-key": ({"schema": "ecommerce_partitioned", "partitions": 2, "shards": 2}, ["num_shards=2"]),
    "shards-on-simple": ({"shards": 2}, ["num_shards=2"]),
    "unknown-files-key": ({"files": {"rows_per_file": 10, "row_per_file": 5}}, ["with.files.row_per_file", "unknown parameter"]),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_parameters_exit_2_naming_the_field(case: str, tmp_path: Path) -> None:
    """Each is refused before the run starts (no file made, no store opened), in words a user can act on."""
    overrides, expected = BAD[case]
    params: dict[str, Any] = {"schema": "simple", "total_rows": 100, "seed": 1} | overrides
    file = _write(tmp_path / "bad.yaml", {"name": "bad", "tasks": {"files": {"uses": "generate.upload", "with": params}}})
    proc = _cli(file, tmp_path / "runs")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "task 'files'" in out, out
    for word in expected:
        assert word in out, f"{word!r} not in {out!r}"
