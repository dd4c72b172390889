"""Shadow loading vs raw asyncpg COPY of the same Arrow data, same PostgreSQL, same run.

Baseline: one connection, ``copy_records_to_table`` fed straight from the Arrow batches
(``zip(*[column.to_pylist() ...])``): the least a hand-written loader does. Ours: the ``shadow.sync``
task fed the same batches through a stream (record conversion in a worker thread, a pool, two
batches in flight). Target: at least 0.8x the baseline's rows/s.

Uses TEST_POSTGRES_DSN when set, else starts deploy/local/postgres.sh itself.

    python bench/shadow.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.settings import Settings  # noqa: E402
from dag_orchestrator import DAG, Executor, PipelineContext, task  # noqa: E402
from task_components.generation.columns import generate_chunk  # noqa: E402
from task_components.schema import resolve_schema  # noqa: E402
from task_components.schema.postgres import create_table_sql, quote, table_name  # noqa: E402
from task_components.shadow import ShadowSync  # noqa: E402
from task_components.shadow.sync import ShadowParams  # noqa: E402


def dsn() -> tuple[str, bool]:
    if os.environ.get("TEST_POSTGRES_DSN"):
        return os.environ["TEST_POSTGRES_DSN"], False
    out = subprocess.run(["bash", "deploy/local/services.sh", "start"], cwd=ROOT, check=True, capture_output=True,
                         text=True, env={**os.environ, "SERVICES": "postgres"}).stdout.strip()  # fmt: skip
    line = next(x for x in Path(out).read_text().splitlines() if "TEST_POSTGRES_DSN" in x)
    return line.split("=", 1)[1].strip("'"), True


async def baseline(url: str, batches: list[pa.RecordBatch], schema: Any) -> float:
    conn = await asyncpg.connect(url)
    await conn.execute(f"DROP TABLE IF EXISTS {quote(table_name(schema))}")
    await conn.execute(create_table_sql(schema))
    started = time.perf_counter()
    for b in batches:
        records = list(zip(*(c.to_pylist() for c in b.columns), strict=True))
        await conn.copy_records_to_table(table_name(schema), records=records, columns=b.schema.names)
    seconds = time.perf_counter() - started
    await conn.close()
    return seconds


async def ours(url: str, batches: list[pa.RecordBatch]) -> float:
    @task(emits_stream=True)
    async def source(ctx: PipelineContext) -> None:
        for b in batches:
            await ctx.emit(b)

    shadow = ShadowSync("shadow", ShadowParams(), needs=["source"], streams_from=["source"])
    settings = Settings.model_validate({"postgres": {"dsn": url}})
    started = time.perf_counter()
    result = await Executor().run(DAG("bench", [source, shadow]), PipelineContext(services={"settings": settings}))
    assert result.ok, result.failed()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    schema = resolve_schema("scalar_bench")
    js, chunk = schema.model_dump_json(), 100_000
    batches = [generate_chunk(js, 1, i, i * chunk, min(chunk, args.rows - i * chunk), args.rows)
               for i in range(-(-args.rows // chunk))]  # fmt: skip
    url, started_here = dsn()
    try:
        base = anyio.run(baseline, url, batches, schema)
        mine = anyio.run(ours, url, batches)
        print(f"raw asyncpg COPY   {args.rows:,} scalar rows  {base:6.2f} s  {args.rows / base:10,.0f} rows/s")
        print(f"shadow.sync        {args.rows:,} scalar rows  {mine:6.2f} s  {args.rows / mine:10,.0f} rows/s")
        print(f"ratio shadow.sync / raw COPY: {base / mine:.2f}x (target >= 0.8x)")
    finally:
        if started_here:
            subprocess.run(["bash", "deploy/local/services.sh", "stop"], cwd=ROOT,
                           env={**os.environ, "SERVICES": "postgres"})  # fmt: skip


if __name__ == "__main__":
    main()
