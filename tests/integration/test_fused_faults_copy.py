"""``shadow.files`` and ``verify`` in shares on a deployed Dask cluster survive a worker SIGKILLed mid-share.

The deployment is ``test_fused_faults``' (a ``dask scheduler`` and one ``dask worker --nworkers 2``
process on 127.0.0.1), its workers now also holding POSTGRES__DSN and MILVUS__URI in their own
environment. A worker process busy with a ``copy_file`` (one dataset file COPYed into the shadow table
in one transaction that first deletes the file's keys) or a ``keyed_share`` (one source file compared
with Milvus and PostgreSQL) is SIGKILLed; the nanny starts a new worker and Dask reruns what died.

- COPY: the run exits 0, the shadow task succeeded, and the table holds each source row exactly once
  with the source's values (every column of every file compared, vectors bit for bit).
- Verify: on a real Milvus server (bulk import from the S3 the server uses) the run exits 0 and the
  full scan agrees on all rows; then a verify-only run (``run.result`` inputs, as ``verify RUN_ID``
  builds it) after one row was deleted from the shadow, killed again mid-scan, fails that key on postgres
  and nothing else.

The kill point (files seen started, worker, pid, its file, seconds into the run; for the COPY, whether
that file's transaction had committed before the kill, so the rerun replaced it, or died with it) is
printed and is in every assertion message. CI runs one kill point per stage (``COPY_KILL_AT`` / ``VERIFY_KILL_AT``: after N
files committed / N shares started); the other moments run with ``KILL_MATRIX=full``.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from task_components.schema.postgres import quote
from task_components.verification.task import VerifyResult
from tests.integration.conftest import service_uri
from tests.integration.helpers import ROOT, cli, write_pipeline
from tests.integration.test_fused_faults import (
    FULL_SET,
    Cluster,
    _base_env,
    _data_dir,
    _drop_prefix,
    _log,
    _log_path,
    _s3,
    _s3_env,
    _start_cluster,
    _stop_cluster,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FILES = 16
COPY_ROWS = 8000  # a file (schema simple, ~4.5 MB): its COPY lasts ~0.2 s, long enough for a kill to land in it
SHARE_ROWS = 2000  # a file when verifying: a share lasts ~0.5 s (32k rows are inserted: a bulk import of 16 files took ~50 s)
COLUMNS = ["id", "name", "description", "price", "in_stock", "embedding"]
COPY_KILL = int(os.environ.get("COPY_KILL_AT", "4"))  # files whose rows are committed in the shadow
VERIFY_KILL = int(os.environ.get("VERIFY_KILL_AT", "5"))  # keyed shares seen started on the workers


def _services() -> dict[str, str]:
    """What the engine and the workers need besides S3: the shadow's PostgreSQL and the Milvus server."""
    return {"POSTGRES__DSN": service_uri("TEST_POSTGRES_DSN"), "MILVUS__URI": service_uri("TEST_MILVUS_URI")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = _start_cluster(tmp_path_factory.mktemp("dask"), {**_s3_env(), **_services()})
    try:
        yield running
    finally:
        _stop_cluster(running)


def _engine(file: Path, run_dir: Path, address: str) -> subprocess.Popen[str]:
    env = {**_base_env(), **_s3_env(), **_services(), "LOGGING__FORMAT": "json"}
    cmd = cli("run", str(file), "--run-dir", str(run_dir), "--no-progress", "--backend", "dask", "--scheduler", address)
    with _log_path(run_dir).open("w") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, stdout=log, stderr=subprocess.STDOUT)


def _spec(name: str, prefix: str, per_file: int, verify: bool) -> dict[str, Any]:
    make = {"schema": "simple", "total_rows": FILES * per_file, "seed": 7, "chunk_rows": per_file // 2}
    tasks: dict[str, Any] = {
        "files": {"uses": "generate.upload", "with": {**make, "files": {"rows_per_file": per_file}, "upload": {"prefix": prefix}}},
        "shadow": {"uses": "shadow.files", "needs": ["files"], "with": {"table": f"shadow_{name}"}},
    }
    if verify:
        flat = {"embedding": {"index_type": "FLAT", "metric_type": "COSINE"}}
        tasks["collection"] = {
            "uses": "milvus.create_collection",
            "with": {"schema": "simple", "collection": name, "drop_if_exists": True, "indexes": flat},
        }
        tasks["import"] = {
            "uses": "milvus.bulk_import",
            "needs": ["files", "collection"],
            "with": {"poll_interval": 0.5},  # 32k rows: inserted (the method is not what this test kills)
        }
        tasks["verify"] = _verify_task(["import", "shadow"])
    return {"name": name, "tasks": tasks}


def _verify_task(needs: list[str]) -> dict[str, Any]:
    # search 0: recall is the engine's, not a share's; fail_on_mismatch false: a failed verdict is a result to read
    return {"uses": "verify", "needs": needs, "with": {"level": "full", "shares_from_rows": 0, "search": 0, "fail_on_mismatch": False}}


def _run_dir(runs: Path) -> Path:
    return _data_dir(runs).parent


def _report(runs: Path) -> dict[str, Any]:
    return dict(json.loads((_run_dir(runs) / "report.json").read_text()))


def _verify_result(runs: Path) -> VerifyResult:
    with (_run_dir(runs) / "results" / "verify.pkl").open("rb") as f:
        result = pickle.load(f)
    assert isinstance(result, VerifyResult), type(result)
    return result


def _busy_with(fn_name: str, dask_worker: Any) -> tuple[int, list[str]]:
    """Runs on a worker (``client.run``): its process id and the files of its running ``fn_name`` task
    (the backend's ``_on_worker(fn, client, [(work, FileEntry, ...), ...])``)."""
    files: list[str] = []
    for ts in dask_worker.state.executing:
        args = getattr(ts.run_spec, "args", ())
        if args and getattr(args[0], "__name__", "") == fn_name and isinstance(args[2], list):
            files += [job[1].path for job in args[2] if isinstance(job, tuple) and hasattr(job[1], "path")]
    return os.getpid(), files


async def _pg(sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(service_uri("TEST_POSTGRES_DSN"))
    try:
        return list(await conn.fetch(sql, *args))
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


def _committed(table: str) -> int:
    """Rows committed in the shadow table (0 before shadow.files created it)."""
    rows = anyio.run(_pg, f"SELECT count(*) AS n FROM {quote(table)}")
    return int(rows[0]["n"]) if rows else 0


def _kill_busy(
    cluster: Cluster, proc: subprocess.Popen[str], runs: Path, fn_name: str, ready: Any, what: str, t0: float
) -> tuple[str, str]:
    """Once ``ready(started)`` holds (``started``: the files seen in ``fn_name`` tasks so far), SIGKILL a
    worker process busy with a ``fn_name`` task, the one whose file started last (the furthest from its
    end). ``ready`` is asked before the workers, so the kill follows their answer at once. Returns the
    kill point and the killed worker's file."""
    from distributed import Client

    seen: dict[str, float] = {}  # file -> when first seen running
    deadline = time.monotonic() + 300
    with Client(cluster.address, timeout="60s") as client:
        while True:
            assert proc.poll() is None, f"the run ended before {what}: kill point never reached\n{_log(runs)[-3000:]}"
            assert time.monotonic() < deadline, f"{what} never happened"
            due = ready(set(seen))
            busy = {w: doing for w, doing in client.run(_busy_with, fn_name).items() if doing[1]}
            for _, files in busy.values():
                for f in files:
                    seen.setdefault(f, time.monotonic())
            if busy and due:
                break
            time.sleep(0.01)
        worker, (pid, files) = max(busy.items(), key=lambda item: max(seen[f] for f in item[1][1]))
        os.kill(pid, signal.SIGKILL)
    where = (
        f"kill point: {what} ({len(seen)} {fn_name} files seen started), SIGKILL worker {worker} pid {pid} "
        f"during {fn_name} {', '.join(files)} at {time.monotonic() - t0:.2f}s into the run"
    )
    return where, files[0]


def _finish(cluster: Cluster, proc: subprocess.Popen[str]) -> None:
    from distributed import Client

    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    with Client(cluster.address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=60)  # the nanny's new worker, before the next kill


def _check_shadow(runs: Path, table: str, where: str) -> None:
    """Each source row once in the shadow, every column equal to the source's (vectors bit for bit)."""
    rows = FILES * COPY_ROWS
    ((n, distinct),) = [tuple(r) for r in anyio.run(_pg, f"SELECT count(*), count(DISTINCT id) FROM {quote(table)}")]
    assert (n, distinct) == (rows, rows), f"{where}: shadow {table} holds {n} rows, {distinct} distinct keys; the source {rows}"
    meta = json.loads((_data_dir(runs) / "meta.json").read_text())
    assert len(meta["files"]) == FILES, meta["files"]
    sql = f"SELECT {', '.join(map(quote, COLUMNS))} FROM {quote(table)} WHERE id = ANY($1) ORDER BY id"
    for entry in meta["files"]:
        source = pq.read_table(_data_dir(runs) / entry["path"], columns=COLUMNS).sort_by("id")
        keys = source.column("id").to_pylist()
        got = anyio.run(_pg, sql, keys)
        assert [r["id"] for r in got] == keys, f"{where}: {entry['path']}: keys in the shadow differ from the file's"
        for col in COLUMNS[1:-1]:
            want = source.column(col).cast(pa.float64()) if col == "price" else source.column(col)
            assert [r[col] for r in got] == want.to_pylist(), f"{where}: {entry['path']}: column {col} differs from the source"
        vectors = np.asarray([r["embedding"] for r in got], np.float32)
        want_v = np.asarray(source.column("embedding").to_pylist(), np.float32)
        assert np.array_equal(vectors, want_v), f"{where}: {entry['path']}: embeddings differ from the source"


def _copy_run(cluster: Cluster, tmp_path: Path, landed: int) -> None:
    name, prefix = f"ffc_copy_{uuid.uuid4().hex[:8]}", f"fused-faults/copy-{uuid.uuid4().hex}"
    table, runs, t0 = f"shadow_{name}", tmp_path / "runs", time.monotonic()
    proc = _engine(write_pipeline(tmp_path / "copy.yaml", _spec(name, prefix, COPY_ROWS, verify=False)), runs, cluster.address)
    try:
        where, file = _kill_busy(
            cluster, proc, runs, "copy_file", lambda _: _committed(table) >= landed * COPY_ROWS, f"after {landed} files committed", t0
        )
        keys = pq.read_table(_data_dir(runs) / file, columns=["id"]).column("id").to_pylist()
        ((mine,),) = [tuple(r) for r in anyio.run(_pg, f"SELECT count(*) FROM {quote(table)} WHERE id = ANY($1)", keys)]
        state = "none: its transaction died" if mine == 0 else f"{mine}: it had committed, the rerun must replace them"
        where += f"; rows of {file} in the shadow after the kill: {state}"  # a dead process commits nothing more
        print(where)
        proc.wait(timeout=300)
        assert proc.returncode == 0, f"{where}: exit {proc.returncode}\n{_log(runs)[-3000:]}"
        report = _report(runs)
        assert report["tasks"]["shadow"]["state"] == "succeeded", f"{where}: {report['tasks']['shadow']}"
        assert report["summary"]["shadow"]["rows"] == FILES * COPY_ROWS, f"{where}: {report['summary']['shadow']}"
        _check_shadow(runs, table, where)
        print(f"{where}: ok, the shadow holds each of {FILES * COPY_ROWS} rows once, equal to the source")
    finally:
        _finish(cluster, proc)
        _drop_prefix(_s3(), prefix)
        anyio.run(_pg, f"DROP TABLE IF EXISTS {quote(table)}")


def test_a_worker_killed_mid_copy_leaves_each_row_in_the_shadow_once(cluster: Cluster, tmp_path: Path) -> None:
    """Dask reruns a lost worker's file COPY; the rerun must replace what the dead one left, never add to it."""
    _copy_run(cluster, tmp_path, COPY_KILL)


@pytest.mark.slow
@FULL_SET
@pytest.mark.parametrize("landed", [0, 1, 9, 12], ids=lambda n: f"after-{n}-files")
def test_copy_kill_moments(cluster: Cluster, tmp_path: Path, landed: int) -> None:
    """The same guarantee first thing, early and late in the copy."""
    _copy_run(cluster, tmp_path, landed)


def _verify_run(cluster: Cluster, tmp_path: Path, started: int) -> None:
    name, prefix = f"ffc_verify_{uuid.uuid4().hex[:8]}", f"fused-faults/verify-{uuid.uuid4().hex}"
    table, runs, t0, rows = f"shadow_{name}", tmp_path / "runs", time.monotonic(), FILES * SHARE_ROWS
    proc = _engine(write_pipeline(tmp_path / "load.yaml", _spec(name, prefix, SHARE_ROWS, verify=True)), runs, cluster.address)
    try:
        where, _ = _kill_busy(cluster, proc, runs, "keyed_share", lambda seen: len(seen) >= started, f"after {started} shares started", t0)
        print(where)
        proc.wait(timeout=300)
        assert proc.returncode == 0, f"{where}: exit {proc.returncode}\n{_log(runs)[-3000:]}"
        summary, verdict = _report(runs)["summary"]["verify"], _verify_result(runs)
        assert summary["result"] == "passed" and verdict.passed, f"{where}: {summary}"
        assert summary["full scan"].startswith(f"{rows:,} rows x 5 fields agree"), f"{where}: {summary}"
        print(f"{where}: ok, {summary}")

        # tampered: one row gone from the shadow only; a verify-only run, killed mid-scan again, must blame it
        (key,) = [r["id"] for r in anyio.run(_pg, f"SELECT id FROM {quote(table)} ORDER BY id OFFSET {rows // 2} LIMIT 1")]
        anyio.run(_pg, f"DELETE FROM {quote(table)} WHERE id = $1", key)
        earlier = str(_run_dir(runs).resolve())
        tasks = {t: {"uses": "run.result", "with": {"run": earlier, "task": t}} for t in ("import", "shadow")}
        tasks["verify"] = _verify_task(["import", "shadow"])
        again, t0 = tmp_path / "again", time.monotonic()
        proc = _engine(write_pipeline(tmp_path / "verify.yaml", {"name": f"{name}_again", "tasks": tasks}), again, cluster.address)
        where, _ = _kill_busy(cluster, proc, again, "keyed_share", lambda seen: len(seen) >= started, f"after {started} shares started", t0)
        where = f"shadow row id={key} deleted; {where}"
        print(where)
        proc.wait(timeout=300)
        assert proc.returncode == 0, f"{where}: exit {proc.returncode}\n{_log(again)[-3000:]}"
        summary, verdict = _report(again)["summary"]["verify"], _verify_result(again)
        assert summary["result"] == "FAILED" and not verdict.passed, f"{where}: {summary}"
        found = [(f["key"], f["field"], f["side"]) for f in verdict.findings]
        assert found == [(key, None, "postgres")], f"{where}: findings {verdict.findings}"
        checks = {c.name: c for c in verdict.checks}
        assert checks["count"].passed and not checks["shadow count"].passed, f"{where}: {summary}"
        assert summary["full scan"] == f"{rows:,} rows: postgres wrong in 1: id={key}  (postgres)", f"{where}: {summary}"
        print(f"{where}: ok, {summary}")
    finally:
        _finish(cluster, proc)
        _drop_prefix(_s3(), prefix)
        anyio.run(_pg, f"DROP TABLE IF EXISTS {quote(table)}")
        _drop_collection(name)


def _drop_collection(name: str) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=service_uri("TEST_MILVUS_URI"))
    try:
        client.drop_collection(name)
    finally:
        client.close()


def test_a_worker_killed_mid_verify_share_keeps_the_verdict(cluster: Cluster, tmp_path: Path) -> None:
    """A keyed share Dask reruns after losing its worker must give the same answer: pass when the three
    stores agree, and still name the one row the shadow lost when they do not."""
    _verify_run(cluster, tmp_path, VERIFY_KILL)


@pytest.mark.slow
@FULL_SET
@pytest.mark.parametrize("started", [1, 11], ids=lambda n: f"after-{n}-shares")
def test_verify_kill_moments(cluster: Cluster, tmp_path: Path, started: int) -> None:
    """The same verdicts with the first share and a late one killed."""
    _verify_run(cluster, tmp_path, started)
