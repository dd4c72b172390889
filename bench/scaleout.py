"""Generation rows/s on the local backend vs Dask (1 and 2 workers), same schema, seed and chunks.

Each backend generates the same rows through the same ordered bounded map (``generate_batches``); the
local backend is measured in the same run as the baseline. Dask runs against an already running
LocalCluster (``--scheduler``, as a real deployment would have), so the figure is the per-run overhead of
Dask scheduling and result transfer; starting a LocalCluster is printed apart. Each case is the best of
``--repeat`` runs, interleaved, so a noisy neighbour hits every case alike. Target: Dask with 2 workers
>= 0.9x the local backend on this 2-core machine.

    python bench/scaleout.py [--rows 2000000] [--schema simple] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dag_orchestrator.backends import LocalBackend  # noqa: E402
from dag_orchestrator.backends.dask_cluster import DaskBackend  # noqa: E402
from task_components.generation.task import GenerateParams, generate_batches  # noqa: E402


async def generate(params: GenerateParams, backend: LocalBackend | DaskBackend) -> tuple[float, int]:
    t0, rows = time.perf_counter(), 0
    async with backend:
        async for batch in generate_batches(params, backend):
            rows += batch.num_rows
    return time.perf_counter() - t0, rows


def main() -> None:
    from distributed import LocalCluster

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--schema", default="simple")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    params = GenerateParams.model_validate({"schema": args.schema, "total_rows": args.rows, "seed": 7})
    t0 = time.perf_counter()
    clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                dashboard_address=None) for n in (1, 2)}  # fmt: skip
    startup = (time.perf_counter() - t0) / 2
    best: dict[str, float] = {}
    try:
        for _ in range(args.repeat):
            cases = {"local (2 processes)": lambda: LocalBackend(2)}
            cases |= {f"dask {n} worker{'s' * (n > 1)}": (lambda n=n: DaskBackend(clusters[n].scheduler_address))
                      for n in (1, 2)}  # fmt: skip
            for label, make in cases.items():
                seconds, rows = anyio.run(generate, params, make())
                assert rows == args.rows
                best[label] = min(best.get(label, float("inf")), seconds)
    finally:
        for cluster in clusters.values():
            cluster.close()
    local = best["local (2 processes)"]
    print(f"{args.rows:,} rows of schema {args.schema!r}, best of {args.repeat}:")
    for label, seconds in best.items():
        print(f"  {label:<20} {args.rows / seconds:12,.0f} rows/s  {seconds:6.2f} s   {local / seconds:5.2f}x local")
    print(f"  LocalCluster start (not in the figures above): {startup:.1f} s per cluster")
    ratio = local / best["dask 2 workers"]
    print(f"target (dask 2 workers >= 0.9x local): {'met' if ratio >= 0.9 else 'NOT met'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
