"""A program started beside live Milvus client threads must not run the threads' fork hooks.

The embedded PostgreSQL's initdb and pg_ctl run as their own OS user. Started with ``user=``, CPython
fork()s instead of vfork()ing, and with the run's Milvus Lite client threads inside gRPC (and Arrow's
pools) their fork hooks run in the half-copied child: clean-clone CI runs saw pg_ctl's child die of
SIGSEGV there, twice. Our runner now switches user through setpriv (CPython then vforks: no hook runs),
and importing our packages switches gRPC's hooks off besides; a value the user set is kept.
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
if sys.argv[1] in ("ours", "setpriv"):
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
if sys.argv[1] == "setpriv":  # how our pgserver runner starts initdb and pg_ctl as their own user
    from task_components.connect import _OwnSession
    import pwd
    me = pwd.getpwuid(os.getuid()).pw_name
    for _ in range(60):
        _OwnSession.run(["/bin/true"], check=True, user=me)
else:
    for _ in range(60):  # user= makes CPython fork(), as pgserver's pg_ctl start did
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


@pytest.mark.timeout(600)
def test_the_embedded_servers_commands_start_without_fork_even_with_grpc_hooks_on(tmp_path: Path) -> None:
    """``user=`` forces fork(); setpriv lets CPython vfork, so no fork handler of any library runs at all."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    assert "skipping fork() handlers" not in _probe("setpriv", tmp_path, {**env, "GRPC_ENABLE_FORK_SUPPORT": "true"})
