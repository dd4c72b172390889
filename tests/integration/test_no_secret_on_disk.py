"""A Milvus token is a secret: no file of a run directory may hold it (results are pickled there).

The quickstart's tasks run against the real Milvus with ``MILVUS__TOKEN`` set (the test server has
authentication off, so any token is accepted), then a later ``verify`` of the same run reads the token
back from the settings. Every byte of the run directories is searched for the token.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import yaml

from tests.integration.conftest import service_uri
from tests.integration.helpers import cli, service_env, write_pipeline


def _holding(root: Path, secret: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file() and secret in p.read_bytes()]


def test_a_milvus_token_is_never_written_to_the_run_directory(tmp_path: Path) -> None:
    token = f"root:token-{uuid.uuid4().hex}"
    name = f"no_secret_{uuid.uuid4().hex[:8]}"
    quickstart = Path(__file__).resolve().parents[2] / "pipelines" / "quickstart.yaml"
    spec = yaml.safe_load(quickstart.read_text())
    spec["tasks"]["collection"]["with"]["collection"] = name  # its own collection: other tests may run at once
    pipeline = write_pipeline(tmp_path / "quickstart.yaml", spec)
    env = {
        **os.environ,
        **service_env(),
        "MILVUS__TOKEN": token,
        "LOGGING__FORMAT": "json",
        "POSTGRES__DSN": service_uri("TEST_POSTGRES_DSN"),
    }
    runs = tmp_path / "runs"
    run = subprocess.run(
        cli(
            "run",
            str(pipeline),
            "--run-dir",
            str(runs),
            "--no-progress",
            "--set",
            "rows=3000",
            "--set",
            "rows_per_file=1500",
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (run_dir,) = list(runs.iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    assert report["summary"]["verify"]["result"] == "passed"
    assert report["summary"]["collection"]["target"] == env["MILVUS__URI"]  # the server, not Lite
    assert list((run_dir / "results").iterdir()), "the results this test is about were not written"
    again = subprocess.run(
        cli("verify", run_dir.name, "--run-dir", str(runs)),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0 and "result=passed" in again.stdout, again.stderr[-3000:]
    assert _holding(runs, token.encode()) == []
    assert token not in run.stdout + run.stderr + again.stdout + again.stderr
