"""Generation throughput and memory: ours vs milvus-ingest, same schema files, same run.

Both tools run as subprocesses (what a user runs), so wall time includes start-up. Peak RSS is the
sampled sum over the whole process tree (workers included). milvus-ingest is installed into its own
venv (bench/.venvs/milvus-ingest) on first use. Output files go to a temporary directory and are
deleted after each run.

    python bench/generation.py                      # scalar 10M rows, vector 1M rows
    python bench/generation.py --scale 0.1          # a quicker look
    python bench/generation.py --rss-rows 10000000  # also: our peak RSS at 10M vector rows
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / ".venvs" / "milvus-ingest"

SCALAR = {
    "collection_name": "scalar_bench",
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True},
        {"name": "name", "type": "VarChar", "max_length": 64},
        {"name": "category", "type": "VarChar", "max_length": 32},
        {"name": "score", "type": "Float", "min": 0, "max": 100},
        {"name": "active", "type": "Bool"},
    ],
}
VECTOR = {
    "collection_name": "vector_bench",
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True},
        {"name": "title", "type": "VarChar", "max_length": 128},
        {"name": "score", "type": "Float", "min": 0, "max": 1},
        {"name": "embedding", "type": "FloatVector", "dim": 768},
    ],
}


def ensure_milvus_ingest() -> Path:
    exe = VENV / "bin" / "milvus-ingest"
    if not exe.exists():
        print("installing milvus-ingest into", VENV, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "milvus-ingest"], check=True)
    return exe


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak summed RSS and peak summed PSS (MB) of the process tree.

    RSS counts a page shared by forked workers once per process; PSS splits it among them, so PSS is
    the memory actually used. Both are printed because the targets are stated in RSS.
    """
    peak = peak_pss = 0
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_pss
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                infos = [p.memory_full_info() for p in procs if p.is_running()]
                peak = max(peak, sum(i.rss for i in infos))
                peak_pss = max(peak_pss, sum(i.pss for i in infos))
            except psutil.Error:
                pass
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    return elapsed, peak / 1e6, peak_pss / 1e6


def ours(schema: Path, rows: int, out: Path) -> list[str]:
    return [
        sys.executable,
        "run_pipeline.py",
        "generate",
        "--schema",
        str(schema),
        "--total-rows",
        str(rows),
        "--out",
        str(out),
        "--force",
        "--no-progress",
        "--seed",
        "1",
        "--file-size",
        "256MB",
    ]


def theirs(exe: Path, schema: Path, rows: int, out: Path) -> list[str]:
    return [
        str(exe),
        "generate",
        "--schema",
        str(schema),
        "--total-rows",
        str(rows),
        "--out",
        str(out),
        "--force",
        "--no-progress",
        "--seed",
        "1",
        "--file-size",
        "256MB",
    ]


def compare(label: str, schema: dict, rows: int, exe: Path, tmp: Path) -> None:
    path = tmp / f"{label}.json"
    path.write_text(json.dumps(schema))
    results = {}
    for name, cmd in (("milvus-ingest", theirs(exe, path, rows, tmp / "mi")), ("ours", ours(path, rows, tmp / "us"))):
        seconds, rss, pss = run_measured(cmd)
        results[name] = (rows / seconds, rss)
        print(
            f"  {label:<7} {name:<14} {rows:>11,} rows  {seconds:7.2f} s  {rows / seconds:>11,.0f} rows/s  "
            f"peak RSS {rss:7.0f} MB  PSS {pss:7.0f} MB",
            flush=True,
        )
        shutil.rmtree(tmp / ("mi" if name == "milvus-ingest" else "us"), ignore_errors=True)
    ratio = results["ours"][0] / results["milvus-ingest"][0]
    print(f"  {label:<7} ratio ours/milvus-ingest: {ratio:.2f}x rows/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the row counts (0.1 for a quick look)")
    ap.add_argument("--rss-rows", type=int, default=0, help="also measure our peak RSS at this many vector rows")
    ap.add_argument("--tmp", type=Path, default=None, help="where output files go (default: system temp)")
    args = ap.parse_args()
    exe = ensure_milvus_ingest()
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        tmp = Path(d)
        compare("scalar", SCALAR, int(10_000_000 * args.scale), exe, tmp)
        compare("vector", VECTOR, int(1_000_000 * args.scale), exe, tmp)
        if args.rss_rows:
            path = tmp / "vector.json"
            seconds, rss, pss = run_measured(ours(path, args.rss_rows, tmp / "big"))
            shutil.rmtree(tmp / "big", ignore_errors=True)
            print(
                f"  ours at {args.rss_rows:,} vector rows: {seconds:.1f} s, {args.rss_rows / seconds:,.0f} rows/s, "
                f"peak RSS {rss:.0f} MB, PSS {pss:.0f} MB (target < 600 MB)"
            )


if __name__ == "__main__":
    main()
