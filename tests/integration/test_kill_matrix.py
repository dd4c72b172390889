"""SIGKILL the quickstart at random points of every task, resume, and demand an exact end state.

Each trial kills a real ``run_pipeline.py run`` process at a random moment after a randomly chosen task
started, then resumes it (``--resume``) until it succeeds. Afterwards: Milvus count(*) == distinct keys ==
generated rows, the shadow holds the rows once, S3 holds each file once with no unfinished multipart
upload, and no process the killed run started is still alive. CI runs one trial per case, killed in the
middle of the import (the riskiest point); ``KILL_MATRIX=full`` adds three random points per case (12
kills in all); ``KILL_SEED`` picks another seed. The seed
and the kill point are in every assertion message, so a failure can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import boto3
import psutil
import pytest
from pymilvus import MilvusClient

from tests.integration.conftest import service_uri
from tests.integration.helpers import cli, service_env, write_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS, PER_FILE = 20_000, 5_000
TASKS = ["generate", "partition", "upload", "collection", "import", "shadow"]
CASES = [("server", "bulk_import"), ("server", "insert"), ("lite", "insert")]
SEED = int(os.environ.get("KILL_SEED", "20261123"))
TRIALS = 4 if os.environ.get("KILL_MATRIX") == "full" else 1


def _spec(name: str, method: str) -> dict[str, Any]:
    ivf = {"embedding": {"index_type": "IVF_FLAT", "metric_type": "COSINE", "params": {"nlist": 64}}}
    return {
        "name": name,
        "tasks": {
            "generate": {"uses": "generate", "with": {"schema": "simple", "total_rows": ROWS, "seed": 3}},
            "partition": {"uses": "partition", "needs": ["generate"], "with": {"rows_per_file": PER_FILE}},
            "upload": {"uses": "storage.upload", "needs": ["partition"], "with": {"part_size": "5MB", "multipart_threshold": "1MB"}},
            "collection": {
                "uses": "milvus.create_collection",
                "with": {"schema": "simple", "collection": name, "drop_if_exists": True, "indexes": ivf},
            },
            "import": {
                "uses": "milvus.bulk_import",
                "needs": ["upload", "collection"],
                "with": {"method": method, "batch_rows": 1000, "poll_interval": 0.5, "timeout": 600, "call_timeout": 5},
            },  # a resume after SIGKILL waits out in-flight calls
            "shadow": {"uses": "shadow.sync", "needs": ["generate"], "with": {"table": f"shadow_{name}"}},
            "verify": {"uses": "verify", "needs": ["import", "shadow"], "with": {"level": "count"}},
        },
    }


def _env(backend: str) -> dict[str, str]:
    env = {**os.environ, **service_env(), "POSTGRES__DSN": service_uri("TEST_POSTGRES_DSN"), "LOGGING__FORMAT": "json"}
    if backend == "lite":
        env.pop("MILVUS__URI")
    return env


def _kill_at(proc: subprocess.Popen[str], task: str, delay: float) -> tuple[str, list[int]]:
    """Read the log until ``task`` starts, wait ``delay``, SIGKILL; returns the run id and the run's processes."""
    assert proc.stderr is not None
    run_id = ""
    for line in proc.stderr:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        run_id = run_id or str(event.get("run_id", ""))
        if (event.get("event") == "task_started" and event.get("task") == task) or event.get("event") == "run_finished":
            break
    time.sleep(delay)
    family = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)] if proc.poll() is None else []
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return run_id, family


def _milvus_keys(uri: str, collection: str) -> tuple[int, int]:
    client = MilvusClient(uri=uri)
    try:
        client.load_collection(collection)  # Milvus Lite reopened by this process starts released
        count = int(client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"])
        keys: list[int] = []
        it = client.query_iterator(collection, batch_size=5000, filter="id >= 0", output_fields=["id"], consistency_level="Strong")
        while batch := it.next():
            keys += [r["id"] for r in batch]
        it.close()
        return count, len(set(keys))
    finally:
        client.close()


async def _shadow_rows(dsn: str, table: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(f'SELECT count(*) AS n, count(DISTINCT id) AS d FROM "{table}"')
        return int(row["n"]), int(row["d"])
    finally:
        await conn.close()


def _s3_state(prefix: str) -> tuple[list[str], int]:
    env = service_env()
    s3 = boto3.client(
        "s3", endpoint_url=env["S3__ENDPOINT_URL"], aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=env["S3__BUCKET"], Prefix=prefix).get("Contents", [])]
    uploads = s3.list_multipart_uploads(Bucket=env["S3__BUCKET"], Prefix=prefix).get("Uploads", [])
    return sorted(keys), len(uploads)


@pytest.mark.parametrize(("backend", "method"), CASES, ids=[f"{b}-{m}" for b, m in CASES])
@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_anywhere_then_resume_is_exact(backend: str, method: str, trial: int, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-{backend}-{method}-{trial}")
    task = "import" if trial == 0 else rng.choice(TASKS)  # trial 0 (CI): mid-import, the riskiest point
    delay = round(rng.uniform(1.0, 4.0) if task == "import" else rng.uniform(0.0, 1.5), 2)
    where = f"seed {SEED}, kill {delay}s after {task!r} started ({backend}, {method})"
    name = f"kill_{backend}_{method}_{trial}"
    file = write_pipeline(tmp_path / "kill.yaml", _spec(name, method))
    runs, env = tmp_path / "runs", _env(backend)
    proc = subprocess.Popen(
        cli("run", str(file), "--run-dir", str(runs), "--no-progress"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run_id, family = _kill_at(proc, task, delay)
    assert run_id, where
    for _ in range(3):
        resumed = subprocess.run(
            cli("run", str(file), "--run-dir", str(runs), "--no-progress", "--resume", run_id),
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if resumed.returncode == 0:
            break
    assert resumed.returncode == 0, f"{where}: {resumed.stderr[-3000:]}"

    report = json.loads((runs / run_id / "report.json").read_text())
    uri = env.get("MILVUS__URI") or str((runs / run_id / "milvus.db").resolve())
    count, distinct = _milvus_keys(uri, name)
    assert count == distinct == ROWS, (
        f"{where}: milvus count {count}, distinct keys {distinct}, want {ROWS}; {report['summary'].get('import')}"
    )
    rows, keys = anyio.run(_shadow_rows, env["POSTGRES__DSN"], f"shadow_{name}")
    assert rows == keys == ROWS, f"{where}: shadow rows {rows}, distinct {keys}"
    files = {f"runs/{run_id}/data-{i:05d}.parquet" for i in range(1, ROWS // PER_FILE + 1)}
    keys_in_s3, unfinished = _s3_state(f"runs/{run_id}/")
    assert keys_in_s3 == sorted(files | {f"runs/{run_id}/meta.json"}), f"{where}: {keys_in_s3}"
    assert unfinished == 0, f"{where}: {unfinished} unfinished multipart uploads left"
    deadline = time.monotonic() + 10
    while (alive := [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"{where}: processes of the killed run still alive: " + "; ".join(
        " ".join(psutil.Process(p).cmdline())[:120] for p in alive
    )
