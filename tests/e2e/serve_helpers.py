"""A real ``run-pipeline serve`` in a child process on a free loopback port, stopped by its PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Console:
    url: str
    log: Path
    proc: subprocess.Popen[bytes]

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or text) of one request; an HTTP error status is returned, not raised."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        return status, json.loads(raw) if "json" in kind else raw.decode()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE__", "MILVUS__", "S3__", "POSTGRES__", "KAFKA__"))}
    return {**env, **extra}


@contextmanager
def console(run_dir: Path, pipelines: Path, token: str | None = None, **env: str) -> Iterator[Console]:
    port = free_port()
    log = run_dir.parent / f"serve-{port}.log"
    extra = {"SERVE__TOKEN": token} if token is not None else {}
    command = [sys.executable, str(ROOT / "run_pipeline.py"), "serve", "--port", str(port)]
    command += ["--run-dir", str(run_dir), "--pipelines-dir", str(pipelines)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=clean_env(**extra, **env), stdout=out, stderr=out)
    c = Console(f"http://127.0.0.1:{port}", log, proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if c.call("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the console did not answer within 60 s"
            time.sleep(0.2)
        yield c
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def console_dirs(base: Path, copies: tuple[str, ...] = ("demo.yaml",), **pipelines: str) -> tuple[Path, Path]:
    """A fresh run directory and a pipelines directory holding copies of ours and the given files (name -> YAML)."""
    runs, pipes = base / "runs", base / "pipelines"
    runs.mkdir()
    pipes.mkdir()
    for name in copies:
        shutil.copy(ROOT / "pipelines" / name, pipes / name)
    for name, text in pipelines.items():
        (pipes / f"{name}.yaml").write_text(text)
    return runs, pipes


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "run_pipeline.py"), *args]
    return subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=600)


def wait_for(check: Any, seconds: float = 60.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not true within {seconds} s"
        time.sleep(every)
