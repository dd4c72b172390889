"""Running a dataset pack through the real runner (spec -> DAG -> executor), as `run` does, in-process."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import polars as pl

from config.settings import Settings
from dag_orchestrator.state import RunResult
from pipeline.runner import RunOptions, execute, prepare_spec
from pipeline.spec import PipelineSpec
from task_components.datasets import get_pack, pack_tasks

SMALL = {
    "seed": 11,
    "stores": 6,
    "dcs": 3,
    "trucks_per_dc": 3,
    "truck_capacity": 400,
    "customers": 1500,
    "products": 150,
    "brands": 20,
    "geographies": 60,
    "receipts_per_store_day": 60,
    "online_orders_per_day": 50,
}


def run_pack(pack: str, config: Mapping[str, Any], run_dir: Path) -> RunResult:
    spec = PipelineSpec.model_validate({"name": pack, "tasks": pack_tasks(get_pack(pack), dict(config))})
    options = RunOptions(run_dir=run_dir)
    prepared = prepare_spec(spec, f"<{pack}>", {}, options)
    result = anyio.run(lambda: execute(prepared, Settings(), options, handle_signals=False))
    assert result.ok, {n: t.get("error") for n, t in result.to_dict()["tasks"].items()}
    return result


def file_digests(root: Path) -> dict[str, str]:
    """Every data file under ``root`` (dims and facts) -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def fact(out: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(out / "facts" / table / "*" / "*.parquet", hive_partitioning=True)


def dim(out: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(out / "dims" / f"{table}.parquet")


def orphans(child: pl.DataFrame, column: str, parent: pl.DataFrame, key: str) -> int:
    """Rows of ``child`` whose ``column`` matches no ``parent.key`` (nulls are not references)."""
    refs = child.filter(pl.col(column).is_not_null()).select(pl.col(column).alias(key))
    return refs.join(parent.select(key).unique(), on=key, how="anti").height
