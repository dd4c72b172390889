"""produce-test-data as the seed tool's users run it: no total (unlimited until SIGTERM), the broker as a flag.

With neither ``--total`` nor TEST_DATA__TOTAL_RECORDS the command sends until SIGTERM, which ends it
normally: exit 0, the count in its summary and report, and the broker holds exactly that many
records. The broker comes from ``--bootstrap-servers`` alone (KAFKA__BOOTSTRAP_SERVERS is removed from
its environment), so the flag is what connects it.
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
from typer.testing import CliRunner

from pipeline.cli import app
from tests.integration.conftest import service_uri
from tests.integration.streaming_helpers import PARTITIONS, ROOT, StreamEnv, create_topics, read_topic


@pytest.mark.integration
def test_unset_total_sends_until_sigterm_then_exits_0_with_the_count_the_broker_holds(tmp_path: Path) -> None:
    env = StreamEnv(service_uri("TEST_KAFKA_BOOTSTRAP"), "", tmp_path)
    create_topics(env)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA__", "TEST_DATA__"))}
    command = [sys.executable, "run_pipeline.py", "produce-test-data", "--bootstrap-servers", env.bootstrap]
    command += ["--topic", env.source, "--partitions", str(PARTITIONS), "--rate", "400", "--run-dir", str(tmp_path), "--no-progress"]
    proc = subprocess.Popen(command, cwd=ROOT, env=environ, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(read_topic(env, env.source)) < 300:  # past the bounded default of 100: it goes on
            assert proc.poll() is None, f"it stopped by itself: {proc.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "nothing reached the broker in 60 s"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-2000:]}"
    produced = json.loads(next(tmp_path.glob("*/report.json")).read_text())["summary"]["produce"]["produced"]
    assert produced >= 300 and f"produced={produced:,}" in " ".join(out.split())
    assert len(read_topic(env, env.source)) == produced, "the broker holds other than the count said"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--security-protocol", "TLS"], "--security-protocol must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        (["--sasl-mechanism", "GSSAPI"], "--sasl-mechanism must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        (["--bootstrap-servers", " "], "--bootstrap-servers is empty"),
    ],
)
def test_bad_connection_flags_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    import pipeline.stream_cli  # noqa: F401 - registers the command, as main() does

    result = CliRunner().invoke(app, ["produce-test-data", *args, "--run-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
