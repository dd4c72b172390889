"""Run pipeline files against the real local services, in-process or as a real CLI subprocess."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import yaml

from config.settings import Settings
from dag_orchestrator.state import RunResult
from pipeline.runner import RunOptions, execute, prepare_run
from tests.integration.conftest import service_uri

ROOT = Path(__file__).resolve().parents[2]


def service_env() -> dict[str, str]:
    """The env a pipeline needs to talk to the local real Milvus and S3 servers."""
    return {
        "MILVUS__URI": service_uri("TEST_MILVUS_URI"),
        "S3__ENDPOINT_URL": service_uri("TEST_S3_ENDPOINT"),
        "S3__BUCKET": service_uri("TEST_S3_BUCKET"),
        "S3__ACCESS_KEY": service_uri("TEST_S3_ACCESS_KEY"),
        "S3__SECRET_KEY": service_uri("TEST_S3_SECRET_KEY"),
    }


def settings_for_services() -> Settings:
    env = service_env()
    return Settings.model_validate(
        {
            "milvus": {"uri": env["MILVUS__URI"]},
            "s3": {
                "endpoint_url": env["S3__ENDPOINT_URL"],
                "bucket": env["S3__BUCKET"],
                "access_key": env["S3__ACCESS_KEY"],
                "secret_key": env["S3__SECRET_KEY"],
            },
        }
    )


def write_pipeline(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_file(file: Path, run_dir: Path, settings: Settings, **overrides: Any) -> RunResult:
    options = RunOptions(run_dir=run_dir)
    prepared = prepare_run(file, overrides, options)
    return anyio.run(lambda: execute(prepared, settings, options, handle_signals=False))


def cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_pipeline.py"), *args]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, **service_env(), "LOGGING__FORMAT": "json"}


async def with_pool(dsn: str, call: Any) -> Any:
    """``call(pool)`` with a small asyncpg pool that is closed afterwards, however the call ends."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        return await call(pool)
    finally:
        await pool.close()
