"""End-to-end load rate: our pipeline (generate -> partition -> S3 upload -> bulk import -> count) vs
plain batched inserts into the same Milvus, in the same run; and the floor under the pipeline's import
phase: the same uploaded files imported by hand as raw import jobs (Milvus' own import time).

The baseline is what a hand-written loader does: read the same Parquet files and call
``MilvusClient.insert`` in batches of 5,000 rows, then flush and wait until count(*) sees every row.
Both collections use the same IVF_FLAT index, so index builds cost both sides alike. The pipeline's
figure includes generating and uploading the data; the baseline's does not (it reads finished files).

The import task's timeline (first/last job submitted, jobs Completed, searchable) shows where the
pipeline's time goes; the "ceiling" line is the best ratio any pipeline could reach on this server:
the insert loop against Milvus' own import of files already uploaded, with nothing generated first.
``--method`` forces the pipeline's import method (auto inserts a small load: compare the two).

Needs the local real services: started here with deploy/local/services.sh unless TEST_MILVUS_URI is set.

    python bench/load.py [--rows 200000] [--method auto|bulk_import|insert]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local_services import services, stop  # noqa: E402

INDEX = {"embedding": {"index_type": "IVF_FLAT", "metric_type": "COSINE", "params": {"nlist": 128}}}


def pipeline_run(env: dict[str, str], rows: int, tmp: Path, method: str = "auto") -> tuple[float, Path, dict]:
    spec = {
        "name": "bench_load",
        "tasks": {
            "generate": {"uses": "generate", "with": {"schema": "vector_bench", "total_rows": rows, "seed": 1}},
            "partition": {"uses": "partition", "needs": ["generate"], "with": {"rows_per_file": 100_000}},
            "upload": {"uses": "storage.upload", "needs": ["partition"]},
            "collection": {
                "uses": "milvus.create_collection",
                "with": {"schema": "vector_bench", "collection": "bench_bulk", "drop_if_exists": True, "indexes": INDEX},
            },
            "import": {"uses": "milvus.bulk_import", "needs": ["upload", "collection"], "with": {"poll_interval": 0.5, "method": method}},
        },
    }
    file = tmp / "load.yaml"
    file.write_text(yaml.safe_dump(spec))
    run_env = {
        **env,
        "MILVUS__URI": env["TEST_MILVUS_URI"],
        "S3__ENDPOINT_URL": env["TEST_S3_ENDPOINT"],
        "S3__BUCKET": env["TEST_S3_BUCKET"],
        "S3__ACCESS_KEY": env["TEST_S3_ACCESS_KEY"],
        "S3__SECRET_KEY": env["TEST_S3_SECRET_KEY"],
        "LOGGING__LEVEL": "WARNING",
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "run_pipeline.py", "run", str(file), "--run-dir", str(tmp / "runs"), "--no-progress"],
        cwd=ROOT,
        env=run_env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (run_dir,) = (tmp / "runs").iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    return seconds, run_dir / "data", report


def fresh_collection(uri: str, name: str) -> Any:
    """An empty, indexed, loaded vector_bench collection (both baselines start from the same state)."""
    from pymilvus import MilvusClient

    from task_components.schema import resolve_schema
    from task_components.schema.milvus import index_params, to_milvus_schema

    schema = resolve_schema("vector_bench")
    client = MilvusClient(uri=uri)
    if client.has_collection(name):
        client.drop_collection(name)
    client.create_collection(name, schema=to_milvus_schema(schema))
    client.create_index(name, index_params(schema, False, INDEX)[0])
    client.load_collection(name)
    return client


def seconds_until(started: float, done: Callable[[], bool]) -> float:
    """Poll ``done`` every 0.5 s; the seconds from ``started`` until it held."""
    while not done():
        time.sleep(0.5)
    return time.perf_counter() - started


def indexed_rows(client: Any, collection: str) -> int:
    return int(client.describe_index(collection, "embedding").get("indexed_rows", 0))


def insert_baseline(uri: str, data: Path, rows: int) -> tuple[float, float]:
    """Seconds until every row is countable, and until the index covers every row.

    A bulk-import job reports Completed only after its segments are indexed, so the like-for-like
    end state for inserts is "indexed", not merely "countable" (growing segments are unindexed).
    """
    client = fresh_collection(uri, "bench_insert")
    started = time.perf_counter()
    for path in sorted(data.glob("data-*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=5000):
            cols = batch.to_pydict()
            vectors = np.asarray(batch.column("embedding").values.to_numpy(), np.float32).reshape(batch.num_rows, -1)
            client.insert(
                "bench_insert",
                [
                    {"id": i, "title": t, "score": s, "embedding": v}
                    for i, t, s, v in zip(cols["id"], cols["title"], cols["score"], vectors, strict=True)
                ],
            )
    client.flush("bench_insert")
    from task_components.connect import count_rows

    countable = seconds_until(started, lambda: count_rows(client, "bench_insert") >= rows)
    indexed = seconds_until(started, lambda: indexed_rows(client, "bench_insert") >= rows)
    client.drop_collection("bench_insert")
    client.close()
    return countable, indexed


def import_floor(uri: str, keys: list[str], rows: int) -> tuple[float, float, float]:
    """Milvus' own import time for the files the pipeline uploaded: raw import jobs, no pipeline.

    (seconds until every job is Completed, until the index covers every row, until every row is
    searchable: persisted segments loaded and counted): the floor the pipeline's import phase stands
    on, measured on the same server with the same files.
    """
    from task_components.milvus.bulk import searchable_snapshot
    from task_components.milvus.import_jobs import open_import_jobs

    client = fresh_collection(uri, "bench_floor")
    api = open_import_jobs(uri, None, "default")  # the pipeline's own job calls (gRPC on 2.3, REST on 2.4+)
    started = time.perf_counter()
    jobs = [api.submit("bench_floor", k) for k in keys]
    completed = seconds_until(started, lambda: all(api.state(j).completed for j in jobs))
    indexed = seconds_until(started, lambda: indexed_rows(client, "bench_floor") >= rows)
    # the pipeline's own test of "searchable" (index built, every persisted segment loaded, count right)
    searchable = seconds_until(started, lambda: searchable_snapshot(client, "bench_floor", rows)[0])
    api.close()
    client.drop_collection("bench_floor")
    client.close()
    return completed, indexed, searchable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument(
        "--method",
        choices=["auto", "bulk_import", "insert"],
        default="auto",
        help="the pipeline's import method (auto inserts a small load)",
    )
    args = ap.parse_args()
    env, started_here = services("s3 milvus", ["TEST_MILVUS_URI"])
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            seconds, data, report = pipeline_run(env, args.rows, tmp, args.method)
            tasks = report["tasks"]
            print(
                f"pipeline  generate->upload->bulk import->count  {args.rows:,} rows x 768-d  {seconds:6.1f} s  "
                f"{args.rows / seconds:9,.0f} rows/s end to end"
            )
            for name in ("generate", "partition", "upload", "import"):
                print(f"            {name:<10} {tasks[name]['duration']:6.1f} s")
            imported = report["summary"]["import"]
            offset = tasks["import"]["started_at"] - report["started_at"]
            print(f"            import: {imported['method']}; started at {offset:.1f} s; since then: {imported.get('timeline', '-')}")
            jobs = data.parent / "import.jobs.json"  # absent when auto chose to insert a small load
            keys = list(json.loads(jobs.read_text())["jobs"]) if jobs.exists() else []  # the uploaded keys
            searchable = 0.0
            if keys:
                done, floor, searchable = import_floor(env["TEST_MILVUS_URI"], keys, args.rows)
                print(
                    f"floor     import jobs for the same {len(keys)} uploaded files by hand: {done:6.1f} s to "
                    f"Completed, {floor:6.1f} s to indexed, {searchable:6.1f} s to searchable (Milvus' own "
                    f"import time; the pipeline's end to end adds {seconds - searchable:+.1f} s to it)"
                )
            countable, indexed = insert_baseline(env["TEST_MILVUS_URI"], data, args.rows)
            print(
                f"baseline  MilvusClient.insert, 5,000-row batches    {args.rows:,} rows x 768-d  "
                f"{countable:6.1f} s to countable ({args.rows / countable:,.0f} rows/s), "
                f"{indexed:6.1f} s to indexed ({args.rows / indexed:,.0f} rows/s)"
            )
            print(
                f"ratio     pipeline end to end / insert to indexed: {indexed / seconds:.2f}x; "
                f"/ insert to countable: {countable / seconds:.2f}x"
            )
            if keys:
                print(
                    f"ceiling   insert to indexed / Milvus' own import to searchable (no generation, no upload): "
                    f"{indexed / searchable:.2f}x"
                )
    finally:
        if started_here:
            stop("s3 milvus")


if __name__ == "__main__":
    main()
