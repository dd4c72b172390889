"""Shadow loading vs raw COPY of the same Arrow data, same PostgreSQL, same run.

Scalar rows (``scalar_bench``): baseline is one connection, ``copy_records_to_table`` fed straight
from the Arrow batches (``zip(*[column.to_pylist() ...])``): the least a hand-written loader does.

768-d vector rows (``vector_bench``: int64, varchar, float, 768-d FloatVector): baseline is raw binary
COPY of the same rows: the payload of each batch is built before its timer starts, so only
``copy_to_table(format='binary')`` is timed, on one connection and on two (shadow.sync keeps two
batches in flight); the old record path is timed on a slice for reference.

Ours: the ``shadow.sync`` task fed the same batches through a stream (encoding in a worker thread, a
pool, two batches in flight). Target: at least 0.8x the baseline's rows/s.

Then the quickstart's shape at 768-d: ``generate`` alone, and ``generate`` + ``shadow.sync``, printing
generate's seconds in both. shadow.sync spills its lag to disk (``stream_spill``), so it no longer
holds generation back by backpressure; what is left is CPU: on 2 cores PostgreSQL ingesting the rows
takes a core generation would use. The floor measures exactly that: generate alone while another
process raw-COPYs the same rows. Target: at most 10% slower with the shadow (stated against the floor
where the floor itself is over it).

Uses TEST_POSTGRES_DSN when set, else starts deploy/local/postgres.sh itself. Tables get a random
suffix and are dropped afterwards.

    python bench/shadow.py [--rows 1000000] [--vector-rows 200000] [--dag-rows 200000] [--records-rows 20000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pyarrow as pa
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.settings import Settings  # noqa: E402
from dag_orchestrator import DAG, Executor, PipelineContext, task  # noqa: E402
from pipeline.runner import RunOptions, execute, prepare_run  # noqa: E402
from task_components.generation.columns import generate_chunk  # noqa: E402
from task_components.generation.task import ChunkPlan  # noqa: E402
from task_components.schema import resolve_schema  # noqa: E402
from task_components.schema.models import CollectionSchema  # noqa: E402
from task_components.schema.postgres import create_table_sql, quote  # noqa: E402
from task_components.shadow import ShadowSync  # noqa: E402
from task_components.shadow.binary_copy import encode_batch  # noqa: E402
from task_components.shadow.sync import ShadowParams  # noqa: E402

TAG = secrets.token_hex(3)


def dsn() -> tuple[str, bool]:
    if os.environ.get("TEST_POSTGRES_DSN"):
        return os.environ["TEST_POSTGRES_DSN"], False
    out = subprocess.run(
        ["bash", "deploy/local/services.sh", "start"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "SERVICES": "postgres"},
    ).stdout.strip()
    line = next(x for x in Path(out).read_text().splitlines() if "TEST_POSTGRES_DSN" in x)
    return line.split("=", 1)[1].strip("'"), True


async def fresh_table(conn: Any, schema: CollectionSchema, table: str) -> None:
    await conn.execute(f"DROP TABLE IF EXISTS {quote(table)}")
    await conn.execute(create_table_sql(schema, table))


async def drop(url: str, *tables: str) -> None:
    """Drop the tables, then CHECKPOINT: each measured COPY starts with no earlier run's dirty pages and
    WAL to flush (otherwise whichever run comes third pays the checkpoint the first two caused)."""
    conn = await asyncpg.connect(url)
    for t in tables:
        await conn.execute(f"DROP TABLE IF EXISTS {quote(t)}")
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        pass
    await conn.close()


async def baseline_records(url: str, batches: list[pa.RecordBatch], schema: CollectionSchema, table: str) -> float:
    """One connection, copy_records_to_table of each batch's to_pylist() rows: the record path's floor."""
    conn = await asyncpg.connect(url)
    await fresh_table(conn, schema, table)
    started = time.perf_counter()
    for b in batches:
        records = list(zip(*(c.to_pylist() for c in b.columns), strict=True))
        await conn.copy_records_to_table(table, records=records, columns=b.schema.names)
    seconds = time.perf_counter() - started
    await conn.close()
    return seconds


async def baseline_binary(url: str, batches: list[pa.RecordBatch], schema: CollectionSchema, table: str, connections: int) -> float:
    """Raw binary COPY: each payload is built before the clock runs; only copy_to_table is timed.

    With two connections, batches alternate between them (two COPYs in flight, like shadow.sync).
    """
    conns = [await asyncpg.connect(url) for _ in range(connections)]
    await fresh_table(conns[0], schema, table)
    seconds = 0.0
    for i in range(0, len(batches), connections):
        payloads = [encode_batch(b, schema, 0) for b in batches[i : i + connections]]
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for conn, encoded in zip(conns, payloads, strict=False):
                assert encoded is not None
                payload, cols = encoded
                tg.start_soon(lambda c=conn, p=payload, n=cols: c.copy_to_table(table, source=p, format="binary", columns=n))
        seconds += time.perf_counter() - started
    for conn in conns:
        await conn.close()
    return seconds


async def ours(url: str, batches: list[pa.RecordBatch], table: str) -> float:
    @task(emits_stream=True)
    async def source(ctx: PipelineContext) -> None:
        for b in batches:
            await ctx.emit(b)

    shadow = ShadowSync("shadow", ShadowParams(table=table), needs=["source"], streams_from=["source"])
    settings = Settings.model_validate({"postgres": {"dsn": url}})
    started = time.perf_counter()
    result = await Executor().run(DAG("bench", [source, shadow]), PipelineContext(services={"settings": settings}))
    assert result.ok, result.failed()
    return time.perf_counter() - started


def chunks(schema: CollectionSchema, rows: int) -> list[pa.RecordBatch]:
    """The batches generate would emit (same chunk size), generated here so they can be replayed."""
    size, js = ChunkPlan.for_schema(schema, rows).chunk_rows, schema.model_dump_json()
    return [generate_chunk(js, 1, i, i * size, min(size, rows - i * size), rows) for i in range(-(-rows // size))]


def line(label: str, rows: int, kind: str, seconds: float) -> None:
    print(f"{label:<34} {rows:>9,} {kind} rows  {seconds:7.2f} s  {rows / seconds:10,.0f} rows/s", flush=True)


def scalar(url: str, rows: int) -> None:
    schema = resolve_schema("scalar_bench")
    js, chunk = schema.model_dump_json(), 100_000
    batches = [generate_chunk(js, 1, i, i * chunk, min(chunk, rows - i * chunk), rows) for i in range(-(-rows // chunk))]
    base_t, ours_t = f"bench_scalar_raw_{TAG}", f"bench_scalar_shadow_{TAG}"
    try:
        anyio.run(drop, url)
        base = anyio.run(baseline_records, url, batches, schema, base_t)
        anyio.run(drop, url, base_t)
        mine = anyio.run(ours, url, batches, ours_t)
    finally:
        anyio.run(drop, url, base_t, ours_t)
    line("raw asyncpg COPY (records)", rows, "scalar", base)
    line("shadow.sync", rows, "scalar", mine)
    print(f"ratio shadow.sync / raw COPY: {base / mine:.2f}x (target >= 0.8x)", flush=True)


def vectors(url: str, rows: int, records_rows: int) -> None:
    schema = resolve_schema("vector_bench")
    batches = chunks(schema, rows)
    tables = [f"bench_vec_{name}_{TAG}" for name in ("raw1", "raw2", "shadow", "records")]
    try:
        anyio.run(drop, url)
        raw1 = anyio.run(baseline_binary, url, batches, schema, tables[0], 1)
        line("raw binary COPY, 1 connection", rows, "768-d", raw1)
        anyio.run(drop, url, tables[0])
        raw2 = anyio.run(baseline_binary, url, batches, schema, tables[1], 2)
        line("raw binary COPY, 2 connections", rows, "768-d", raw2)
        anyio.run(drop, url, tables[1])
        mine = anyio.run(ours, url, batches, tables[2])
        line("shadow.sync (binary COPY)", rows, "768-d", mine)
        anyio.run(drop, url, tables[2])
        if records_rows:
            few = chunks(schema, records_rows)
            old = anyio.run(baseline_records, url, few, schema, tables[3])
            line("record path (copy_records_to_table)", records_rows, "768-d", old)
    finally:
        anyio.run(drop, url, *tables)
    print(
        f"ratio shadow.sync / raw binary COPY: {raw1 / mine:.2f}x vs 1 connection, {raw2 / mine:.2f}x vs 2 connections (target >= 0.8x)",
        flush=True,
    )


async def copy_only(url: str, rows: int, table: str) -> None:
    """The floor's load: raw binary COPY of ``rows`` 768-d rows, payloads built before "ready"."""
    schema = resolve_schema("vector_bench")
    payloads = [encode_batch(b, schema, 0) for b in chunks(schema, rows)]
    conn = await asyncpg.connect(url)
    await fresh_table(conn, schema, table)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    for encoded in payloads:
        assert encoded is not None
        await conn.copy_to_table(table, source=encoded[0], format="binary", columns=encoded[1])
    print(f"{time.perf_counter() - started:.3f}", flush=True)
    await conn.close()


def quickstart(tmp: Path, url: str, rows: int, table: str | None) -> tuple[float, float]:
    """The quickstart's generate (+ shadow.sync into ``table``): generate's seconds and the whole run's."""
    tasks: dict[str, Any] = {"generate": {"uses": "generate", "with": {"schema": "vector_bench", "total_rows": rows, "seed": 7}}}
    if table:
        tasks["shadow"] = {"uses": "shadow.sync", "needs": ["generate"], "with": {"table": table}}
    file = tmp / f"q{secrets.token_hex(2)}.yaml"
    file.write_text(yaml.safe_dump({"name": "quickstart768", "tasks": tasks}, sort_keys=False))
    options = RunOptions(run_dir=tmp / "runs")
    prepared = prepare_run(file, {}, options)
    settings = Settings.model_validate({"postgres": {"dsn": url}})
    started = time.perf_counter()
    result = anyio.run(lambda: execute(prepared, settings, options, handle_signals=False))
    assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
    return result.results["generate"].seconds, time.perf_counter() - started


def floor_round(tmp: Path, url: str, rows: int, table: str) -> tuple[float, float]:
    """generate alone while another process raw-COPYs the same rows: (generate's seconds, the COPY's)."""
    copier = subprocess.Popen(
        [sys.executable, __file__, "--copy-only", str(rows), "--table", table],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TEST_POSTGRES_DSN": url},
    )
    assert copier.stdin and copier.stdout and copier.stdout.readline().strip() == "ready"
    copier.stdin.write("go\n")
    copier.stdin.flush()
    floor, _ = quickstart(tmp, url, rows, None)
    copied = float(copier.stdout.readline())
    copier.wait()
    return floor, copied


def dag(url: str, rows: int, repeat: int) -> None:
    """generate alone; generate + shadow.sync; and the floor: generate alone while PostgreSQL ingests the
    same rows by raw binary COPY from another process (on 2 cores, PostgreSQL's own CPU is the floor).
    The three alternate ``repeat`` times and medians are compared: the machine is shared and noisy."""
    table, floor_table = f"bench_dag_shadow_{TAG}", f"bench_dag_floor_{TAG}"
    runs: dict[str, list[float]] = {"alone": [], "shadow": [], "total": [], "floor": [], "copy": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp:
            for _ in range(repeat):
                anyio.run(drop, url, table, floor_table)
                runs["alone"].append(quickstart(Path(tmp), url, rows, None)[0])
                shadowed, total = quickstart(Path(tmp), url, rows, table)
                runs["shadow"].append(shadowed)
                runs["total"].append(total)
                anyio.run(drop, url, table, floor_table)
                floor, copied = floor_round(Path(tmp), url, rows, floor_table)
                runs["floor"].append(floor)
                runs["copy"].append(copied)
    finally:
        anyio.run(drop, url, table, floor_table)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"medians of {repeat} rounds:", flush=True)
    line("quickstart: generate alone", rows, "768-d", med["alone"])
    line("quickstart: generate + shadow.sync", rows, "768-d", med["shadow"])
    line("  (whole run, shadow caught up)", rows, "768-d", med["total"])
    line("floor: generate beside raw COPY", rows, "768-d", med["floor"])
    line("  (the raw COPY beside it)", rows, "768-d", med["copy"])
    print(
        f"generate with the shadow / without: {med['shadow'] / med['alone']:.2f}x (target <= 1.10x); floor "
        f"(PostgreSQL ingesting the same rows beside it): {med['floor'] / med['alone']:.2f}x; with the shadow / "
        f"floor: {med['shadow'] / med['floor']:.2f}x",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="scalar rows (0: skip)")
    ap.add_argument("--vector-rows", type=int, default=200_000, help="768-d rows (0: skip)")
    ap.add_argument("--records-rows", type=int, default=20_000, help="768-d rows through the record path (0: skip)")
    ap.add_argument("--dag-rows", type=int, default=200_000, help="768-d rows in the quickstart-shaped DAG (0: skip)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the quickstart comparison (medians)")
    ap.add_argument("--copy-only", type=int, default=0, help=argparse.SUPPRESS)  # the floor's helper process
    ap.add_argument("--table", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.copy_only:
        anyio.run(copy_only, os.environ["TEST_POSTGRES_DSN"], args.copy_only, args.table)
        return
    url, started_here = dsn()
    try:
        if args.rows:
            scalar(url, args.rows)
        if args.vector_rows:
            vectors(url, args.vector_rows, args.records_rows)
        if args.dag_rows:
            dag(url, args.dag_rows, args.repeat)
    finally:
        if started_here:
            subprocess.run(["bash", "deploy/local/services.sh", "stop"], cwd=ROOT, env={**os.environ, "SERVICES": "postgres"})


if __name__ == "__main__":
    main()
