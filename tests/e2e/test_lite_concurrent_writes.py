"""Rows Milvus Lite acknowledged survive a SIGKILL even when they were written concurrently.

Milvus Lite 3.2.2 appends writes to its WAL without a lock, so two concurrent inserts used to interleave
their bytes; after a kill the reopened database replayed the WAL only up to the first broken batch and
silently dropped acknowledged rows (a killed quickstart resumed from the insert journal then missed
10,000 rows). The project's client serializes writes per database file (task_components.lite_client).
The writer runs in a child process killed by SIGKILL right after every insert was acknowledged, so
nothing is flushed on close: the rows can only come back from the WAL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from task_components.connect import count_rows
from task_components.contracts import MilvusTarget

ROOT = Path(__file__).resolve().parents[2]
THREADS, BATCHES, ROWS = 2, 10, 2000

WRITER = """
import os, random, signal, sys, threading
from pymilvus import DataType
from task_components.contracts import MilvusTarget

client = MilvusTarget(sys.argv[1], None, "default", lite=True).client()
schema = client.create_schema()
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("text", DataType.VARCHAR, max_length=200)
schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
client.create_collection("c", schema=schema)
T, B, R = (int(x) for x in sys.argv[2:5])

def write(t: int) -> None:
    rng = random.Random(t)
    for b in range(B):
        rows = [{"id": (t * B + b) * R + i, "text": "x" * rng.randint(1, 150), "vector": [0.5] * 8} for i in range(R)]
        client.insert("c", rows)

threads = [threading.Thread(target=write, args=(t,)) for t in range(T)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("acknowledged", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_concurrent_acknowledged_inserts_survive_a_kill(tmp_path: Path) -> None:
    db = tmp_path / "milvus.db"
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, str(db), str(THREADS), str(BATCHES), str(ROWS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "acknowledged" in proc.stdout, proc.stderr[-2000:]
    assert proc.returncode == -9  # killed: nothing flushed on close
    client = MilvusTarget(str(db), None, "default", lite=True).client()
    try:
        client.create_index("c", client.prepare_index_params("vector", index_type="FLAT", metric_type="L2"))
        assert count_rows(client, "c") == THREADS * BATCHES * ROWS
    finally:
        client.close()
