"""Retail pack throughput and peak memory, against raw numpy + pyarrow writing the same rows, same run.

"ours" runs the retail pack (pipelines/packs/retail.yaml: 50 stores) through the runner, as `run` does:
every business rule, inventory carried day to day, dims and day partitions written as Parquet. The
baseline then writes, for every file ours wrote, the same number of rows with the same Arrow schema
filled by plain vectorized numpy draws (no rules, no joins, no state): what generating and writing those
rows costs with nothing else. Each side runs in its own process, so its peak RSS (getrusage ru_maxrss)
is its own.

    python bench/retail.py               # one simulated year (365 days) of a 50-store chain
    python bench/retail.py --days 14     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s() -> float:
    """User + system CPU seconds of this process, all threads (ours draws and writes on two cores)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def run_ours(out: Path, days: int, stores: int) -> dict[str, float]:
    import anyio

    from config.settings import Settings
    from pipeline.runner import RunOptions, execute, prepare_spec
    from pipeline.spec import PipelineSpec
    from task_components.datasets import get_pack, pack_tasks

    overrides = {"out": str(out / "data"), "days": days, "stores": stores}
    tasks = pack_tasks(get_pack("retail"), str(ROOT / "pipelines" / "packs" / "retail.yaml"), overrides)
    options = RunOptions(run_dir=out / "runs")
    prepared = prepare_spec(PipelineSpec.model_validate({"name": "retail", "tasks": tasks}), "<bench>", {}, options)
    start_mb, cpu = _peak_mb(), _cpu_s()
    started = time.perf_counter()
    result = anyio.run(lambda: execute(prepared, Settings(), options, handle_signals=False))
    seconds = time.perf_counter() - started
    cpu = _cpu_s() - cpu
    if not result.ok:
        raise SystemExit(f"retail pack failed: {result.to_dict()['tasks']}")
    return {"seconds": seconds, "cpu": cpu, "rows": _rows(out / "data"), "peak_mb": _peak_mb(), "start_mb": start_mb}


def run_rules(out: Path, days: int, stores: int) -> dict[str, float]:
    """The fact tables' rules alone: every fact build over the same days again, on one thread, reading
    the receipts ``ours`` wrote, with writing switched off (what the pack spends beyond the writer)."""
    from datetime import date

    from task_components.datasets import get_pack, load_pack_config
    from task_components.datasets.pack import PackRun
    from task_components.datasets.retail import fast_io

    pack = get_pack("retail")
    config = load_pack_config(
        pack, str(ROOT / "pipelines" / "packs" / "retail.yaml"), {"out": str(out / "data"), "days": days, "stores": stores}
    )
    start = date.fromisoformat(str(config.start_date))
    run = PackRun(pack, config, out / "data", start, days, True, start)  # the same days as ours' first run
    fast_io.write_table = lambda table, path: int(table.num_rows)  # type: ignore[assignment]  # draw, don't write
    builds = [t.build for t in pack.tables.values() if t.fact]
    cpu, started = _cpu_s(), time.perf_counter()
    for build in builds:
        getattr(build, "__wrapped__", build)(run)  # on this thread: its CPU is the rules' alone
    return {"seconds": time.perf_counter() - started, "cpu": _cpu_s() - cpu}


def _rows(root: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in root.rglob("*.parquet"))


def run_baseline(reference: Path, out: Path) -> dict[str, float]:
    """Same files, rows and schemas as ``reference``, filled with plain numpy draws."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(1000)])

    def column(t: pa.DataType, n: int) -> pa.Array:
        if pa.types.is_integer(t):
            return pa.array(rng.integers(0, 100, n).astype(t.to_pandas_dtype()))
        if pa.types.is_floating(t):
            return pa.array(rng.random(n))
        if pa.types.is_boolean(t):
            return pa.array(rng.random(n) < 0.5)
        if pa.types.is_timestamp(t):
            return pa.array(rng.integers(1_700_000_000_000, 1_800_000_000_000, n), t)
        if pa.types.is_date(t):
            return pa.array(rng.integers(18_000, 20_000, n).astype(np.int32), pa.int32()).cast(t)
        if pa.types.is_list(t):
            return pa.array([list(words[rng.integers(0, 1000, 3)]) for _ in range(n)], t)
        return pa.array(words[rng.integers(0, 1000, n)])

    files = [(p, pq.ParquetFile(p)) for p in sorted(reference.rglob("*.parquet"))]
    plan = [(p.relative_to(reference), f.schema_arrow, f.metadata.num_rows) for p, f in files]
    del files
    start_mb, cpu = _peak_mb(), _cpu_s()
    started = time.perf_counter()
    rows = 0
    for rel, schema, n in plan:
        table = pa.table([column(f.type, n) for f in schema], schema=schema)
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target, compression="zstd")
        rows += n
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": _cpu_s() - cpu, "rows": rows, "peak_mb": _peak_mb(), "start_mb": start_mb}


def _child(args: list[str]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--stores", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the generated data (printed path)")
    ap.add_argument("--worker", choices=["ours", "baseline", "rules"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "ours":
        print(json.dumps(run_ours(a.dir, a.days, a.stores)))
        return
    if a.worker == "rules":
        print(json.dumps(run_rules(a.dir, a.days, a.stores)))
        return
    if a.worker == "baseline":
        print(json.dumps(run_baseline(a.dir / "data", a.dir / "baseline")))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_retail_"))
    try:
        print(f"retail pack: {a.stores} stores, {a.days} days (pipelines/packs/retail.yaml), output in {work}")
        ours = _child(["--worker", "ours", "--dir", str(work), "--days", str(a.days), "--stores", str(a.stores)])
        base = _child(["--worker", "baseline", "--dir", str(work)])
        rules = _child(["--worker", "rules", "--dir", str(work), "--days", str(a.days), "--stores", str(a.stores)])
        sides = (("retail pack (rules, inventory, state)", ours), ("baseline: numpy + pyarrow, same rows", base))
        for label, r in sides:
            rate = r["rows"] / r["seconds"]
            print(
                f"{label:<40} {r['rows']:>12,.0f} rows {r['seconds']:>8.1f} s {rate:>12,.0f} rows/s   "
                f"CPU {r['cpu']:>5.1f} s   peak RSS {r['peak_mb']:>6.0f} MB (after imports {r['start_mb']:>4.0f} MB)"
            )
        speed = (ours["rows"] / ours["seconds"]) / (base["rows"] / base["seconds"])
        grown = (ours["peak_mb"] - ours["start_mb"]) / max(base["peak_mb"] - base["start_mb"], 1.0)
        print(
            f"ratio ours/baseline: throughput {speed:.2f}x, peak RSS {ours['peak_mb'] / base['peak_mb']:.2f}x, "
            f"RSS growth while generating {grown:.2f}x, CPU seconds {ours['cpu'] / base['cpu']:.2f}x "
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: ours uses two, the baseline one)"
        )
        print(
            f"the rules alone (fact tables' draws and reading the receipts back, no writing, one thread): "
            f"CPU {rules['cpu']:.1f} s = {rules['cpu'] / base['cpu']:.2f}x the baseline's whole CPU; "
            f"ours minus them {max(ours['cpu'] - rules['cpu'], 0.0):.1f} s (writing, dimensions, runner, threads)"
        )
    finally:
        if a.keep:
            print("kept:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
