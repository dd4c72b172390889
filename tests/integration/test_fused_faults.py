"""``generate.upload`` on a deployed Dask cluster survives a worker SIGKILLed mid-file, with exact output.

Deployed as production runs it: a ``dask scheduler`` process and one ``dask worker --nworkers 2``
process (nannies, one thread each) on 127.0.0.1, the workers holding the S3__ settings in their own
environment (the engine sends them none: ``StoreSpec.without_secrets``). While files are being made and
uploaded (multipart: 5 MB parts, files of ~5.6 MB) the worker process (not its nanny) busy with a file
not yet stored is SIGKILLed once N files have landed in S3, while it makes the file or, for the ``upload``
kill points, while its multipart upload is under way; the nanny starts a new worker and Dask reruns what
died with it. Then: the run exits 0 and emitted each file once; S3 holds under the run's prefix exactly
the manifest's files (plus meta.json), each with the manifest's size and sha256 (downloaded and hashed),
and no unfinished multipart upload (an interrupted one was aborted by the engine); and the files are
byte-identical to a local-backend run of the same pipeline. The kill point (files landed, worker, pid,
the file, seconds into the run) is printed and is in every assertion message. CI runs one fixed kill
point (``FUSED_KILL_AT=N`` or ``N:upload`` picks another); the other moments run with ``KILL_MATRIX=full``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import boto3
import pytest

from task_components.fused.task import FusedUploadResult
from tests.integration.helpers import ROOT, cli, service_env, write_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DASK = str(Path(sys.executable).with_name("dask"))
FILES, PER_FILE = 24, 10_000  # schema simple: ~5.6 MB a file, just over the 5 MB multipart threshold


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL a worker once ``landed`` files are in S3, while it makes a file or while it uploads one."""

    landed: int
    during: Literal["making", "upload"] = "making"

    def __str__(self) -> str:
        return f"after {self.landed} files landed, during {self.during}"


def _kill_at(text: str) -> KillPoint:
    landed, _, during = text.partition(":")
    assert during in ("", "making", "upload"), f"FUSED_KILL_AT={text!r}: want N, N:making or N:upload"
    return KillPoint(int(landed), "upload" if during == "upload" else "making")


CI_KILL = _kill_at(os.environ.get("FUSED_KILL_AT", "3"))
# the other kill moments run with KILL_MATRIX=full (by hand, like the load's kill matrix); CI runs CI_KILL
FULL_SET = pytest.mark.skipif(os.environ.get("KILL_MATRIX") != "full", reason="the full kill set runs with KILL_MATRIX=full")
SLOW_KILLS = [KillPoint(1), KillPoint(5), KillPoint(12), KillPoint(2, "upload"), KillPoint(10, "upload")]


def _spec(prefix: str) -> dict[str, Any]:
    upload = {"prefix": prefix, "part_size": "5MB", "multipart_threshold": "5MB"}
    params = {"schema": "simple", "total_rows": FILES * PER_FILE, "seed": 5, "chunk_rows": PER_FILE // 2}
    return {
        "name": "fused",
        "tasks": {"make": {"uses": "generate.upload", "with": {**params, "files": {"rows_per_file": PER_FILE}, "upload": upload}}},
    }


def _s3_env() -> dict[str, str]:
    return {k: v for k, v in service_env().items() if k.startswith("S3__")}


def _base_env() -> dict[str, str]:
    """This process's env without any S3__ setting: who gets S3 access is decided per process below."""
    return {k: v for k, v in os.environ.items() if not k.startswith("S3__")}


def _s3() -> Any:
    env = _s3_env()
    return boto3.client(
        "s3", endpoint_url=env["S3__ENDPOINT_URL"], aws_access_key_id=env["S3__ACCESS_KEY"], aws_secret_access_key=env["S3__SECRET_KEY"]
    )


def _keys(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=_s3_env()["S3__BUCKET"], Prefix=prefix + "/")
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _drop_prefix(s3: Any, prefix: str) -> None:
    bucket = _s3_env()["S3__BUCKET"]
    for key in _keys(s3, prefix):
        s3.delete_object(Bucket=bucket, Key=key)
    for up in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/").get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])


@dataclass
class Cluster:
    """The processes started here (killed by PID at teardown) and the scheduler's address."""

    address: str
    procs: list[subprocess.Popen[bytes]]
    log: Path


def _start_cluster(tmp: Path, worker_env: dict[str, str]) -> Cluster:
    from distributed import Client

    tmp.mkdir(parents=True, exist_ok=True)
    file, procs = tmp / "scheduler.json", []
    env = {**_base_env(), "DASK_CONFIG": str(ROOT / "deploy" / "dask")}
    cluster = Cluster("", procs, tmp / "dask.log")
    with cluster.log.open("wb") as log:  # the children hold their own copies of the descriptor
        scheduler = [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(file)]
        procs.append(subprocess.Popen(scheduler, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 60
        while not file.exists():
            assert procs[0].poll() is None and time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        cluster.address = json.loads(file.read_text())["address"]
        worker = [DASK, "worker", cluster.address, "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"]
        with cluster.log.open("ab") as log:
            procs.append(subprocess.Popen(worker, env={**env, **worker_env}, stdout=log, stderr=subprocess.STDOUT))
        with Client(cluster.address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
    except BaseException:
        _stop_cluster(cluster)
        raise
    return cluster


def _stop_cluster(cluster: Cluster) -> None:
    for proc in reversed(cluster.procs):  # only the processes started here, by PID; the nannies stop their workers
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = _start_cluster(tmp_path_factory.mktemp("dask"), _s3_env())
    try:
        yield running
    finally:
        _stop_cluster(running)


def _engine(file: Path, run_dir: Path, *args: str) -> subprocess.Popen[str]:
    """The engine with S3 settings, its output in ``<run dir>.log`` (a pipe unread while the test polls could stall it)."""
    env = {**_base_env(), **_s3_env(), "LOGGING__FORMAT": "json"}
    cmd = cli("run", str(file), "--run-dir", str(run_dir), "--no-progress", *args)
    with _log_path(run_dir).open("w") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, stdout=log, stderr=subprocess.STDOUT)


def _log_path(run_dir: Path) -> Path:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return run_dir.with_name(run_dir.name + ".log")


def _log(run_dir: Path) -> str:
    return _log_path(run_dir).read_text()


def _data_dir(run_dir: Path) -> Path:
    (run,) = [p for p in run_dir.iterdir() if p.is_dir()]
    return run / "data"


def _manifest(run_dir: Path) -> list[dict[str, Any]]:
    files = json.loads((_data_dir(run_dir) / "meta.json").read_text())["files"]
    assert len(files) == FILES and all(f["sha256"] for f in files), files
    return list(files)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, str]]]:
    """The local backend's files (path, sha256), made once for every kill point."""
    tmp, prefix = tmp_path_factory.mktemp("local"), f"fused-faults/local-{uuid.uuid4().hex}"
    proc = _engine(write_pipeline(tmp / "fused.yaml", _spec(prefix)), tmp / "runs")
    try:
        assert proc.wait(timeout=300) == 0, _log(tmp / "runs")[-3000:]
        yield [(f["path"], f["sha256"]) for f in _manifest(tmp / "runs")]
    finally:
        _drop_prefix(_s3(), prefix)


def _result(run_dir: Path) -> FusedUploadResult:
    """The task's result as the engine stored it: the files it emitted, in order."""
    with (_data_dir(run_dir).parent / "results" / "make.pkl").open("rb") as f:
        result = pickle.load(f)
    assert isinstance(result, FusedUploadResult), type(result)
    return result


def _doing(dask_worker: Any) -> tuple[int, list[str]]:
    """Runs on a worker (``client.run``): its process id and the files its running task is making."""
    names: list[str] = []
    for ts in dask_worker.state.executing:
        for arg in getattr(ts.run_spec, "args", ()):
            if isinstance(arg, list):  # _on_worker's jobs: [(FileWork, FileJob), ...]
                names += [job[1].rel for job in arg if isinstance(job, tuple) and len(job) == 2 and hasattr(job[1], "rel")]
    return os.getpid(), names


def _uploading(s3: Any, prefix: str) -> set[str]:
    """The files with a multipart upload under way (created, not completed)."""
    ups = s3.list_multipart_uploads(Bucket=_s3_env()["S3__BUCKET"], Prefix=prefix + "/").get("Uploads", [])
    return {u["Key"].rsplit("/", 1)[1] for u in ups}


def _kill_busy_worker(cluster: Cluster, proc: subprocess.Popen[str], prefix: str, kill: KillPoint, t0: float) -> tuple[str, bool]:
    """Once ``kill.landed`` data files are in S3, SIGKILL a worker process busy with a file not yet stored
    (with ``kill.during == "upload"``: one whose multipart upload is under way). Returns the kill point and
    whether the killed worker's upload was left unfinished (an upload of two 5 MB parts lasts tens of ms, so
    the workers are asked first and the uploads listed last, right before the kill)."""
    from distributed import Client

    s3 = _s3()
    deadline = time.monotonic() + 240
    with Client(cluster.address, timeout="60s") as client:
        while True:
            assert proc.poll() is None, f"the run ended before {kill}: kill point never reached"
            assert time.monotonic() < deadline, f"{kill} never happened"
            stored = [k for k in _keys(s3, prefix) if k.endswith(".parquet")]
            if len(stored) >= kill.landed:
                done = {k.rsplit("/", 1)[1] for k in stored}
                busy = {w: (pid, set(files) - done) for w, (pid, files) in client.run(_doing).items()}
                busy = {w: doing for w, doing in busy.items() if doing[1]}  # mid-file: running, its file not yet stored
                if kill.during == "upload":
                    uploading = _uploading(s3, prefix)  # after asking: a file still uploading is still its worker's
                    busy = {w: (pid, files & uploading) for w, (pid, files) in busy.items() if files & uploading}
                if busy:
                    break
            time.sleep(0.05 if kill.during == "making" else 0.002)
        worker, (pid, files) = next(iter(busy.items()))
        os.kill(pid, signal.SIGKILL)
        seconds = time.monotonic() - t0
        unfinished = bool(files & _uploading(s3, prefix))  # a dead process completes nothing more
    where = (
        f"kill point: after {len(stored)} files landed ({', '.join(sorted(n[5:10] for n in done))}; asked: {kill}), "
        f"SIGKILL worker {worker} pid {pid} {kill.during} {', '.join(sorted(files))} at {seconds:.2f}s into the run"
        f"{', its upload left unfinished' if unfinished else ''}"
    )
    print(where)
    return where, unfinished


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_stored(prefix: str, run_dir: Path, where: str) -> list[tuple[str, str]]:
    """Every manifest file in S3 once, with the manifest's size and sha256, nothing else, no unfinished upload."""
    s3, bucket, data = _s3(), _s3_env()["S3__BUCKET"], _data_dir(run_dir)
    files = _manifest(run_dir)
    want = sorted([f"{prefix}/{f['path']}" for f in files] + [f"{prefix}/meta.json"])
    assert _keys(s3, prefix) == want, f"{where}: objects under the prefix differ from the manifest"
    for f in files:
        key = f"{prefix}/{f['path']}"
        obj = s3.get_object(Bucket=bucket, Key=key)
        body = obj["Body"].read()
        assert len(body) == f["bytes"] and _sha256(body) == f["sha256"], f"{where}: {key} differs from its manifest entry"
        assert obj["Metadata"].get("sha256") == f["sha256"], f"{where}: {key} metadata sha256 {obj['Metadata']}"
        assert _sha256((data / f["path"]).read_bytes()) == f["sha256"], f"{where}: local {f['path']} differs from the manifest"
    unfinished = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/").get("Uploads", [])
    assert not unfinished, f"{where}: unfinished multipart uploads left: {[u['Key'] for u in unfinished]}"
    return [(f["path"], f["sha256"]) for f in files]


def _kill_run(cluster: Cluster, reference: list[tuple[str, str]], tmp_path: Path, kill: KillPoint) -> None:
    from distributed import Client

    prefix = f"fused-faults/{uuid.uuid4().hex}"
    runs = tmp_path / "runs"
    t0 = time.monotonic()
    proc = _engine(write_pipeline(tmp_path / "fused.yaml", _spec(prefix)), runs, "--backend", "dask", "--scheduler", cluster.address)
    try:
        where, unfinished = _kill_busy_worker(cluster, proc, prefix, kill, t0)
        proc.wait(timeout=300)
        assert proc.returncode == 0, f"{where}: exit {proc.returncode}\n{_log(runs)[-3000:]}"
        result = _result(runs)
        keys = [f.key for f in result.files]
        assert sorted(keys) == sorted(set(keys)) and len(keys) == FILES, f"{where}: files emitted more or less than once: {keys}"
        assert _check_stored(prefix, runs, where) == reference, f"{where}: files differ from the local backend's"
        print(f"{where}: ok, placement {result.placement}, aborted stale uploads {result.aborted_uploads}")
        if kill.during == "upload":
            assert unfinished, f"{where}: the upload completed before the worker died; no upload was interrupted"
            assert result.aborted_uploads >= 1, f"{where}: the killed worker's unfinished multipart upload was not aborted"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        _drop_prefix(_s3(), prefix)
        with Client(cluster.address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)  # the nanny's new worker, before the next kill point


def test_a_worker_killed_mid_file_leaves_every_file_in_s3_once_and_unchanged(
    cluster: Cluster, reference: list[tuple[str, str]], tmp_path: Path
) -> None:
    """Dask reruns a lost worker's file; the rerun must neither duplicate nor alter what lands in S3."""
    _kill_run(cluster, reference, tmp_path, CI_KILL)


@pytest.mark.slow
@FULL_SET
@pytest.mark.parametrize("kill", SLOW_KILLS, ids=[f"{k.during}-after-{k.landed}-files" for k in SLOW_KILLS])
def test_kill_moments(cluster: Cluster, reference: list[tuple[str, str]], tmp_path: Path, kill: KillPoint) -> None:
    """The same guarantees early, midway and late in the run, and with a multipart upload cut off mid-way."""
    _kill_run(cluster, reference, tmp_path, kill)


def test_workers_without_s3_settings_fail_the_run(tmp_path: Path) -> None:
    """Workers of a deployment read S3 from their own env; without it the run must fail, saying why, not hang
    (it starts a cluster of its own; the refusal comes before any request)."""
    bare = _start_cluster(tmp_path / "dask", {})
    prefix = f"fused-faults/no-s3-{uuid.uuid4().hex}"
    proc = _engine(
        write_pipeline(tmp_path / "fused.yaml", _spec(prefix)), tmp_path / "runs", "--backend", "dask", "--scheduler", bare.address
    )
    try:
        proc.wait(timeout=400)
        out = _log(tmp_path / "runs")
        print(f"workers without S3__ settings: exit {proc.returncode}; {[ln for ln in out.splitlines() if 'task_failed' in ln]}")
        assert proc.returncode != 0, out[-3000:]
        failed = [ln for ln in out.splitlines() if '"task_failed"' in ln]
        assert failed and re.search(r"credentials|S3__ACCESS_KEY", failed[-1], re.I), f"the failure does not say what is missing: {failed}"
        assert not [k for k in _keys(_s3(), prefix) if k.endswith(".parquet")], "a worker without S3 settings stored a file"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        _drop_prefix(_s3(), prefix)
        _stop_cluster(bare)
