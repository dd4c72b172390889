"""The services' env file points the program itself at the local services: `source` it and run.

The README's streaming and daemon sections start from it. The test reads the file the services script
wrote (not this process' environment: tests/conftest.py drops the program's variables), sources it in a
shell as a user would, and runs the program with nothing else set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.integration.conftest import service_uri
from tests.integration.streaming_helpers import ROOT, StreamEnv, read_topic

SETTINGS_OF = """
import json
from config.settings import Settings
s = Settings()
print(json.dumps({
    "kafka": s.kafka.bootstrap_servers,
    "mongo": s.mongodb.connection_string.get_secret_value(),
    "postgres": s.postgres.dsn.get_secret_value(),
    "milvus": s.milvus.uri,
    "s3": [s.s3.endpoint_url, s.s3.bucket, s.s3.access_key.get_secret_value(), s.s3.secret_key.get_secret_value()],
}))
"""


def _sourced(command: list[str]) -> subprocess.CompletedProcess[str]:
    """``command`` in a shell that sourced the services' env file, with no program setting of its own."""
    env_file = Path(service_uri("TEST_SERVICES_DIR")) / "services.env"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    script = f'set -a; . "{env_file}"; set +a; exec "$@"'
    return subprocess.run(["bash", "-c", script, "sourced", *command], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)


def test_the_env_file_sets_the_programs_own_connection_settings() -> None:
    proc = _sourced([sys.executable, "-c", SETTINGS_OF])
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout)
    assert seen == {
        "kafka": service_uri("TEST_KAFKA_BOOTSTRAP"),
        "mongo": service_uri("TEST_MONGO_URI"),
        "postgres": service_uri("TEST_POSTGRES_DSN"),
        "milvus": service_uri("TEST_MILVUS_URI"),
        "s3": [
            service_uri("TEST_S3_ENDPOINT"),
            service_uri("TEST_S3_BUCKET"),
            service_uri("TEST_S3_ACCESS_KEY"),
            service_uri("TEST_S3_SECRET_KEY"),
        ],
    }


def test_produce_test_data_reaches_the_broker_from_the_sourced_file_alone(tmp_path: Path) -> None:
    env = StreamEnv(service_uri("TEST_KAFKA_BOOTSTRAP"), service_uri("TEST_MONGO_URI"), tmp_path, tag=uuid.uuid4().hex[:10])
    args = ["produce-test-data", "--total", "7", "--rate", "0", "--topic", env.source, "--partitions", "4"]
    proc = _sourced([sys.executable, "run_pipeline.py", *args, "--no-progress", "--run-dir", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(read_topic(env, env.source)) == 7
