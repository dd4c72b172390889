"""A program started beside live Milvus client threads must not run gRPC's fork hooks.

The embedded PostgreSQL's pg_ctl is started as another OS user (CPython then fork()s instead of
vfork()ing) while the run's Milvus Lite client threads are inside gRPC; gRPC's fork hooks then run in
the half-copied child, and a clean-clone CI run saw pg_ctl die of SIGSEGV there. Importing any of our
packages first switches the hooks off; a value the user set is kept.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import os, subprocess, sys, tempfile, threading
if sys.argv[1] == "ours":
    import pipeline  # noqa: F401
from pymilvus import MilvusClient

client = MilvusClient(os.path.join(tempfile.mkdtemp(dir=sys.argv[2]), "m.db"))
client.create_collection("t", dimension=4)
done = threading.Event()

def query() -> None:
    while not done.is_set():
        client.query("t", filter="id >= 0", limit=1)

threads = [threading.Thread(target=query) for _ in range(2)]
for t in threads:
    t.start()
for _ in range(60):  # user= makes CPython fork(), as pgserver's pg_ctl start does
    subprocess.run(["/bin/true"], check=True, user=os.getuid())
done.set()
for t in threads:
    t.join()
client.close()
print("forks done")
"""


def _probe(mode: str, tmp_path: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "forks done" in proc.stdout
    return proc.stderr


@pytest.mark.timeout(600)
def test_our_packages_switch_grpc_fork_hooks_off_and_keep_a_users_choice(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    hooked = "skipping fork() handlers"
    # control: pymilvus alone, the hooks run in the forked children (and say so when threads are in gRPC)
    assert hooked in _probe("bare", tmp_path, env)
    assert hooked not in _probe("ours", tmp_path, env)
    assert hooked in _probe("ours", tmp_path, {**env, "GRPC_ENABLE_FORK_SUPPORT": "true"})
