"""Per-task overhead of the executor against the floor of a bare networkx + anyio loop.

The floor spawns one coroutine per node in topological order; each waits on its predecessors'
anyio Events, runs the no-op and sets its own Event. Our executor adds retries, timeouts, state,
limits and events on top and must stay within 1.5x of that floor (and under 50 us/task on the fan-out).
Both run in the same process, interleaved, best of N, so a noisy machine hurts both alike.

A 100,000-task fan-out checks that the cost per task stays flat as the DAG grows (within 1.2x of the
10,000-task case: scheduling is O(1) per task), and tracemalloc reports the memory each task costs.

    python bench/engine_overhead.py [--fanout 10000] [--big 100000] [--chain 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import networkx as nx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dag_orchestrator import DAG, Executor, Task


class Noop(Task):
    __slots__ = ()

    async def run(self, ctx: Any) -> None:
        return None


def fanout_dag(n: int) -> DAG:
    root = Noop("root")
    return DAG("fanout", [root, *(Noop(f"t{i}", needs=["root"]) for i in range(n))])


def chain_dag(n: int) -> DAG:
    return DAG("chain", [Noop("t0"), *(Noop(f"t{i}", needs=[f"t{i - 1}"]) for i in range(1, n))])


async def bare_loop(graph: nx.DiGraph) -> None:
    done = {n: anyio.Event() for n in graph.nodes}

    async def one(name: str) -> None:
        for pred in graph.predecessors(name):
            await done[pred].wait()
        await noop()
        done[name].set()

    async def noop() -> None:
        return None

    async with anyio.create_task_group() as tg:
        for name in nx.topological_sort(graph):
            tg.start_soon(one, name)


async def ours(dag: DAG) -> None:
    result = await Executor(max_concurrency=len(dag)).run(dag)
    assert result.ok, result.reason


def best_of(repeat: int, make: Callable[[], Coroutine[Any, Any, None]]) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        anyio.run(lambda: make())
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(label: str, dag: DAG, repeat: int) -> tuple[float, float]:
    n = len(dag)
    floor = best_of(repeat, lambda: bare_loop(dag.graph))
    mine = best_of(repeat, lambda: ours(dag))
    us_floor, us_mine = floor / n * 1e6, mine / n * 1e6
    print(
        f"{label:<14} tasks={n:>6}  bare networkx+anyio {us_floor:7.1f} us/task   "
        f"executor {us_mine:7.1f} us/task   ratio {us_mine / us_floor:5.2f}x"
    )
    return us_mine, us_mine / us_floor


def memory_per_task(n: int) -> float:
    """Peak bytes per task of building and running an n-task fan-out (DAG, records, results)."""
    gc.collect()
    tracemalloc.start()
    anyio.run(ours, fanout_dag(n))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fanout", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--chain", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    fan_us, fan_ratio = measure("fan-out", fanout_dag(args.fanout), args.repeat)
    big_us, big_ratio = measure("big fan-out", fanout_dag(args.big), max(1, args.repeat // 2))
    _, chain_ratio = measure("chain", chain_dag(args.chain), args.repeat)
    growth = big_us / fan_us
    print(f"growth: {args.big:,} tasks cost {growth:.2f}x per task of {args.fanout:,} (linear if <= 1.2x)")
    print(f"memory: {memory_per_task(args.fanout) / 1024:.2f} KiB per task at {args.fanout:,} tasks, "
          f"{memory_per_task(args.big) / 1024:.2f} KiB at {args.big:,} (tracemalloc peak / tasks)")
    ok = fan_ratio <= 1.0 and big_ratio <= 1.0 and chain_ratio <= 1.5 and growth <= 1.2
    print(f"targets (fan-outs <= the bare loop, chain <= 1.5x, growth <= 1.2x): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
