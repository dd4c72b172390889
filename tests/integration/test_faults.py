"""Short outages mid-run: the S3 server cut off for 3 s during the upload, PostgreSQL restarted
during the shadow copy. Both tasks stream, so they cannot be re-run whole: they must retry where the
error happens, and the run must complete with every row and file exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest

from tests.integration.conftest import service_uri
from tests.integration.faults import CuttableProxy, restart_postgres
from tests.integration.helpers import cli, service_env, write_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 60_000  # enough that the shadow copy is still running well after the outage starts


def _spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "tasks": {
            "generate": {"uses": "generate", "with": {"schema": "simple", "total_rows": ROWS, "seed": 11, "chunk_rows": 1000}},
            "partition": {"uses": "partition", "needs": ["generate"], "with": {"rows_per_file": 1000}},
            "upload": {"uses": "storage.upload", "needs": ["partition"], "with": {"concurrency": 1}},
            "collection": {"uses": "milvus.create_collection", "with": {"schema": "simple", "collection": name, "drop_if_exists": True}},
            "import": {"uses": "milvus.bulk_import", "needs": ["upload", "collection"], "with": {"insert_below_rows": 0}},
            "shadow": {"uses": "shadow.sync", "needs": ["generate"], "with": {"concurrency": 1, "table": name}},
            "verify": {"uses": "verify", "needs": ["import", "shadow"], "with": {"level": "count"}},
        },
    }


def _run_with_fault(tmp_path: Path, env: dict[str, str], task: str, fault: Any) -> tuple[dict, str]:
    """Run the pipeline; when ``task`` starts, apply ``fault`` in a thread; return the report and the log."""
    file = write_pipeline(tmp_path / "fault.yaml", _spec(f"fault_{task}"))
    proc = subprocess.Popen(
        cli("run", str(file), "--run-dir", str(tmp_path / "runs"), "--no-progress"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    faulted: threading.Thread | None = None
    for line in proc.stderr:
        lines.append(line)
        if faulted is None and f'"task": "{task}"' in line and '"task_started"' in line:
            faulted = threading.Thread(target=fault)
            faulted.start()
    proc.wait(timeout=600)
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()
    assert faulted is not None, f"{task} never started"
    faulted.join(timeout=60)
    log = "".join(lines)
    assert proc.returncode == 0, log[-4000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    return json.loads((run_dir / "report.json").read_text()), log


def _base_env() -> dict[str, str]:
    env = {**os.environ, **service_env(), "POSTGRES__DSN": service_uri("TEST_POSTGRES_DSN"), "LOGGING__FORMAT": "json"}
    env.pop("MILVUS__URI")  # Milvus Lite: the faults under test are S3's and PostgreSQL's
    return env


def test_s3_cut_off_for_3s_mid_upload_and_the_run_completes(tmp_path: Path) -> None:
    env = _base_env()
    endpoint = urlsplit(env["S3__ENDPOINT_URL"])
    proxy = CuttableProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80)
    env["S3__ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
    try:
        report, _ = _run_with_fault(tmp_path, env, "upload", lambda: (time.sleep(0.3), proxy.outage(3.0)))
    finally:
        proxy.close()
    assert proxy.refused > 0, "the outage fell between requests: nothing was refused"
    summary = report["summary"]
    assert summary["upload"]["uploaded"] == ROWS // 1000 and report["tasks"]["upload"]["attempts"] == 1
    assert summary["import"]["rows in milvus"] == ROWS and summary["verify"]["result"] == "passed"


@pytest.mark.parametrize("after", [0.3, 0.9])
def test_postgres_restarted_mid_shadow_and_the_run_completes(after: float, tmp_path: Path) -> None:
    service_uri("TEST_SERVICES_DIR")
    report, log = _run_with_fault(tmp_path, _base_env(), "shadow", lambda: (time.sleep(after), restart_postgres(3)))
    retried = [ln for ln in log.splitlines() if "transient error, retrying" in ln and '"task": "shadow"' in ln]
    assert retried, "the restart never hit the shadow (nothing was retried)"
    assert report["summary"]["shadow"]["rows"] == ROWS and report["tasks"]["shadow"]["attempts"] == 1

    async def rows() -> tuple[int, int]:
        conn = await asyncpg.connect(service_uri("TEST_POSTGRES_DSN"))
        try:
            r = await conn.fetchrow('SELECT count(*) AS n, count(DISTINCT id) AS d FROM "fault_shadow"')
            return int(r["n"]), int(r["d"])
        finally:
            await conn.close()

    assert anyio.run(rows) == (ROWS, ROWS)
    assert report["summary"]["verify"]["result"] == "passed"
