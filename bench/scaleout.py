"""Generation rows/s on the local backend vs Dask (1 and 2 workers), same schema, seed and chunks.

Each backend generates the same rows through the same ordered bounded map (``generate_batches``); the
local backend is measured in the same run as the baseline. Dask runs as a deployment runs it: a
``dask scheduler`` process and ``dask worker --nworkers N`` (nannies) with deploy/dask/dask.yaml, already
up when the run starts (``--scheduler``), so the figure is the per-run overhead of Dask scheduling and
result transfer; a per-run LocalCluster (``--backend dask`` without a scheduler) is also timed, start
included. Each case is the best of
``--repeat`` runs, interleaved, so a noisy neighbour hits every case alike. Target: Dask with 2 workers
>= 0.9x the local backend on this 2-core machine.

    python bench/scaleout.py [--rows 2000000] [--schema simple] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DASK = str(Path(sys.executable).with_name("dask"))

from dag_orchestrator.backends import LocalBackend  # noqa: E402
from dag_orchestrator.backends.dask_cluster import DaskBackend  # noqa: E402
from task_components.generation.task import GenerateParams, generate_batches  # noqa: E402


class DaskProcesses:
    """``dask scheduler`` + ``dask worker --nworkers n`` as separate processes, configured like deploy/."""

    def __init__(self, n: int, tmp: Path) -> None:
        tmp.mkdir(parents=True)
        env = {**os.environ, "DASK_CONFIG": str(ROOT / "deploy" / "dask")}
        file = tmp / "scheduler.json"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        self.procs = [
            subprocess.Popen(
                [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(file)], **quiet
            )
        ]  # type: ignore[call-overload]
        deadline = time.monotonic() + 60
        while not file.exists():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        self.address = json.loads(file.read_text())["address"]
        self.procs.append(
            subprocess.Popen(
                [DASK, "worker", self.address, "--nworkers", str(n), "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"], **quiet
            )
        )  # type: ignore[call-overload]
        from distributed import Client

        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(n, timeout=60)

    def stop(self) -> None:
        for proc in reversed(self.procs):  # only the processes started here, by PID
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


async def generate(params: GenerateParams, backend: LocalBackend | DaskBackend) -> tuple[float, int]:
    t0, rows = time.perf_counter(), 0
    async with backend:
        async for batch in generate_batches(params, backend):
            rows += batch.num_rows
    return time.perf_counter() - t0, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--schema", default="simple")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    params = GenerateParams.model_validate({"schema": args.schema, "total_rows": args.rows, "seed": 7})
    t0 = time.perf_counter()
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clusters = {n: DaskProcesses(n, Path(tmp) / str(n)) for n in (1, 2)}
        startup = (time.perf_counter() - t0) / 2
        try:
            for _ in range(args.repeat):
                cases = {"local (2 processes)": lambda: LocalBackend(2)}
                cases |= {f"dask {n} worker{'s' * (n > 1)}": (lambda n=n: DaskBackend(clusters[n].address)) for n in (1, 2)}
                cases["dask LocalCluster/run"] = lambda: DaskBackend(None, 2)
                for label, make in cases.items():
                    seconds, rows = anyio.run(generate, params, make())
                    assert rows == args.rows
                    best[label] = min(best.get(label, float("inf")), seconds)
        finally:
            for cluster in clusters.values():
                cluster.stop()
    local = best["local (2 processes)"]
    print(f"{args.rows:,} rows of schema {args.schema!r}, best of {args.repeat}:")
    for label, seconds in best.items():
        print(f"  {label:<20} {args.rows / seconds:12,.0f} rows/s  {seconds:6.2f} s   {local / seconds:5.2f}x local")
    print(f"  (scheduler + workers start, not in the figures: {startup:.1f} s; the LocalCluster/run row includes it)")
    ratio = local / best["dask 2 workers"]
    print(f"target (dask 2 workers >= 0.9x local): {'met' if ratio >= 0.9 else 'NOT met'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
