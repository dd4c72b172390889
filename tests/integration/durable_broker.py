"""A Tansu broker of the test's own on its durable ``s3://`` engine (the local moto S3), so it can restart.

The shared broker keeps topics in memory: a restart would lose them. This one stores them in its own
bucket of the running S3 endpoint (../shared/SERVICES.md, "Tansu with durable topics") and listens on a
free loopback port, so stopping and starting it disturbs no other test. The binary is the one
deploy/local/kafka.sh extracted into the services directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import boto3

from tests.integration.conftest import service_uri

__all__ = ["DurableTansu"]


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DurableTansu:
    def __init__(self, log_dir: Path) -> None:
        self.binary = Path(service_uri("TEST_SERVICES_DIR")) / "bin" / "tansu"
        if not self.binary.is_file():
            raise FileNotFoundError(f"no Tansu binary at {self.binary}: run deploy/local/kafka.sh start once")
        self.endpoint = service_uri("TEST_S3_ENDPOINT")
        self.access = (service_uri("TEST_S3_ACCESS_KEY"), service_uri("TEST_S3_SECRET_KEY"))
        self.bucket = f"tansu-{uuid.uuid4().hex[:10]}"
        self.port = _free_port()
        self.log = log_dir / "tansu.log"
        self.proc: subprocess.Popen[bytes] | None = None
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access[0],
            aws_secret_access_key=self.access[1],
            region_name="us-east-1",
        ).create_bucket(Bucket=self.bucket)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access[0],
            "AWS_SECRET_ACCESS_KEY": self.access[1],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }
        url = f"tcp://127.0.0.1:{self.port}"
        args = [
            str(self.binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            f"s3://{self.bucket}/",
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Tansu did not start on {self.bootstrap}: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None
