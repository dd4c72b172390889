"""The ``pymilvus-pg`` console script: pymilvus-pg's ``ingest`` and ``validate`` command lines, run by ours.

Why a second entry point: their users' CI jobs and runbooks call ``pymilvus-pg ingest --threads 4
--compare-interval 60 ...`` and ``pymilvus-pg validate --collection c``; with this script those lines
run unchanged. Both commands are the ones ``run-pipeline shadow ingest`` and ``shadow validate`` use;
only ``validate``'s flags are pymilvus-pg's (``--collection``, ``--full-scan/--no-full-scan``,
``--sample-percentage``, ``--include-vector``). Their schema presets (``--schema``, ``list-schemas``,
``show-schema``) and ``completion`` command are not offered: typer refuses them by name (exit 2).
"""

from __future__ import annotations

import random
from typing import Annotated, Any

import typer

from pipeline.checker.rows import DEFAULT_COLLECTION
from pipeline.checker.validation import validate_collection
from pipeline.checker_cli import connection, ingest
from pipeline.cli_common import fail_invalid, load_settings
from pipeline.shadow_cli import JsonOpt, ShowOpt, TrackerOpt, _report, _run, milvus_target_of

pg_app = typer.Typer(
    help="pymilvus-pg's command lines (ingest, validate), run by dag-pipeline's shadowing client and comparisons.",
    no_args_is_help=True,
)
pg_app.command("ingest")(ingest)


@pg_app.command("validate")
def validate(
    collection: Annotated[str, typer.Option(help="collection to validate")] = DEFAULT_COLLECTION,
    uri: Annotated[str | None, typer.Option(help="Milvus URI [default: MILVUS_URI, then MILVUS__URI]")] = None,
    token: Annotated[str | None, typer.Option(help="Milvus token [default: MILVUS__TOKEN]")] = None,
    pg_conn: Annotated[
        str | None, typer.Option("--pg-conn", "--pg-dsn", help="PostgreSQL DSN [default: PG_CONN, then POSTGRES__DSN]")
    ] = None,
    full_scan: Annotated[bool, typer.Option("--full-scan/--no-full-scan", help="every row, or the key sets and a sample")] = True,
    sample_percentage: Annotated[
        float, typer.Option(min=0, max=100, help="with --no-full-scan: rows compared, as a percentage of the shadow's rows")
    ] = 100,
    include_vector: Annotated[bool, typer.Option("--include-vector", help="compare vectors too")] = False,
    tracker: TrackerOpt = None,
    as_json: JsonOpt = False,
    show: ShowOpt = 20,
) -> None:
    """Compare the collection with its shadow once: exit 0 agree, 1 differ (keys, fields, sides named), 2 bad input."""
    u, t, dsn = connection(uri, token, pg_conn)
    target = milvus_target_of(load_settings(), u, t, None)
    if not full_scan and sample_percentage <= 0:
        raise fail_invalid("--sample-percentage must be above 0 with --no-full-scan")

    async def call(milvus: Any, pool: Any, tr: Any) -> Any:
        from task_components.shadow import sides

        size = 0
        if not full_scan:  # a share of the shadow's rows
            size = max(1, round(await sides.pg_count(pool, await sides.resolve(milvus, pool, collection)) * sample_percentage / 100))
        return await validate_collection(
            milvus,
            pool,
            collection,
            full_scan=full_scan,
            sample_size=size,
            ignore_vectors=not include_vector,
            tracker=tr,
            rng=random.Random(),
        )

    _report(_run({"target": target, "dsn": dsn}, tracker, call), as_json, show)


def main() -> None:
    pg_app(prog_name="pymilvus-pg")
