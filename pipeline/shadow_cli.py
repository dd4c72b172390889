"""``shadow compare | validate | export``: a Milvus collection against its PostgreSQL shadow, from the shell.

The commands are thin: each opens the two connections, calls one helper of
``task_components.shadow.compare`` and prints its result (a table, or ``--json``). Exit codes follow
the rest of the CLI: 0 the sides agree (or the export is written), 1 differences were found, 2 bad
input (unknown collection, missing table, a filter the converter cannot read, unreachable service),
always as one line without a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import typer
from rich.table import Table

from config.settings import Settings
from pipeline.cli_common import EXIT_FAILED, EXIT_OK, app, cell, fail_invalid, load_settings, out, styled
from task_components.clients import MilvusTarget, milvus_client, milvus_target, pg_pool
from task_components.errors import ShadowError

shadow_app = typer.Typer(
    help="Compare a Milvus collection with its PostgreSQL shadow table, or export either side to Parquet.",
    no_args_is_help=True,
)
app.add_typer(shadow_app, name="shadow")

CollectionArg = Annotated[str, typer.Argument(help="the Milvus collection (its shadow table is shadow_<name>)")]
UriOpt = Annotated[str | None, typer.Option("--uri", help="Milvus URI (default: MILVUS__URI)")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Milvus token (default: MILVUS__TOKEN)")]
DbOpt = Annotated[str | None, typer.Option("--db-name", help="Milvus database (default: MILVUS__DB_NAME)")]
DsnOpt = Annotated[str | None, typer.Option("--pg-dsn", help="PostgreSQL DSN (default: POSTGRES__DSN)")]
TableOpt = Annotated[str | None, typer.Option("--table", help="shadow table (default: shadow_<collection>)")]
TrackerOpt = Annotated[
    Path | None,
    typer.Option(
        "--tracker",
        help="key tracker (LMDB directory): decides which side is wrong; default: the drop-in client's for this DSN, when it exists",
    ),
]
TolOpt = Annotated[float, typer.Option("--tolerance", min=0, help="absolute tolerance for float vectors")]
NoVecOpt = Annotated[bool, typer.Option("--ignore-vectors", help="skip vector fields")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the result as JSON (machine output)")]
ShowOpt = Annotated[int, typer.Option("--show", min=0, help="differences listed in the table")]


def milvus_target_of(settings: Settings, uri: str | None, token: str | None, db_name: str | None) -> MilvusTarget:
    """The Milvus to compare with, by ``clients.milvus_target``'s rule: MILVUS__TOKEN goes to MILVUS__URI
    only, so ``--uri`` naming another server gets no token unless ``--token`` gives one."""
    if not (uri or settings.milvus.uri):
        raise fail_invalid("no Milvus to compare with: pass --uri or set MILVUS__URI")
    target = milvus_target(settings, None, uri)
    if token is not None:
        target = replace(target, token=token or None)
    return replace(target, db_name=db_name) if db_name else target


def _connections(uri: str | None, token: str | None, db_name: str | None, dsn: str | None) -> dict[str, Any]:
    settings = load_settings()
    target = milvus_target_of(settings, uri, token, db_name)
    if dsn is None and settings.postgres.dsn is not None:
        dsn = settings.postgres.dsn.get_secret_value()
    if not dsn:
        raise fail_invalid("no PostgreSQL shadow: pass --pg-dsn or set POSTGRES__DSN")
    return {"target": target, "dsn": dsn}


def _run(conn: dict[str, Any], tracker_path: Path | None, call: Callable[..., Awaitable[Any]]) -> Any:
    """Open Milvus, PostgreSQL and the tracker, run ``call(milvus, pool, tracker)``; bad input exits 2."""
    import asyncpg
    from pymilvus.exceptions import MilvusException

    from task_components.shadow.tracker import KeyStateTracker

    if tracker_path is not None and not tracker_path.is_dir():
        raise fail_invalid(f"--tracker {tracker_path}: no key tracker there (an LMDB directory)")
    if tracker_path is None:  # the drop-in client's default: use its votes when it has kept any
        from task_components.shadow.dropin import default_tracker_path

        default = default_tracker_path(conn["dsn"]) if conn.get("dsn") else None
        tracker_path = default if default is not None and (default / "data.mdb").exists() else None
    target: MilvusTarget = conn["target"]

    async def main() -> Any:
        try:
            milvus = await anyio.to_thread.run_sync(milvus_client, target)
        except (MilvusException, OSError) as exc:
            raise fail_invalid(f"cannot reach Milvus at {target.uri}: {exc}") from None
        tracker = KeyStateTracker(tracker_path) if tracker_path is not None else None
        try:
            try:
                pool = await pg_pool(conn["dsn"], min_size=1, max_size=2)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
                raise fail_invalid(f"cannot reach PostgreSQL: {type(exc).__name__}: {exc}") from None
            try:
                return await call(milvus, pool, tracker)
            finally:
                await pool.close()
        finally:
            if tracker is not None:
                tracker.close()
            await anyio.to_thread.run_sync(milvus.close)

    try:
        return anyio.run(main)
    except (ShadowError, asyncpg.PostgresError, MilvusException) as exc:
        raise fail_invalid(f"{type(exc).__name__}: {exc}") from None


def _report(result: Any, as_json: bool, show: int) -> None:
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        if result.differences and show:
            shown = min(show, len(result.differences))
            table = Table(title=f"differences ({shown} of {result.total})")
            for col in ("key", "field", "kind", "wrong side", "milvus", "postgres", "detail"):
                table.add_column(col)
            for d in result.differences[:show]:
                cells = (d.key, d.field or "(row)", d.kind, d.side, d.milvus, d.postgres, d.detail)
                table.add_row(*(cell(c) for c in cells))
            out.print(table)
            if result.total > shown:
                out.print(cell(f"... {result.total - shown} more (--show N or --json)"))
        for note in getattr(result, "notes", []):  # what could not be compared (not a difference)
            out.print(cell(f"note: {note}"))
        colour = "green" if result.ok else "red"
        out.print(styled(("ok" if result.ok else "differs", colour), f": {result.summary()}"))
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


@shadow_app.command()
def compare(
    collection: CollectionArg,
    filter: Annotated[str, typer.Option("--filter", help='Milvus boolean expression, e.g. "age > 30"')] = "",
    ids: Annotated[str | None, typer.Option("--ids", help="compare these keys only: 1,2,3")] = None,
    ignore_vectors: NoVecOpt = False,
    tolerance: TolOpt = 1e-6,
    uri: UriOpt = None,
    token: TokenOpt = None,
    db_name: DbOpt = None,
    pg_dsn: DsnOpt = None,
    table: TableOpt = None,
    tracker: TrackerOpt = None,
    as_json: JsonOpt = False,
    show: ShowOpt = 20,
) -> None:
    """The rows a filter selects (or the keys given with --ids) on both sides, field by field.

    Exit 0 when they agree, 1 when they differ, 2 on bad input.
    """
    from task_components.shadow.compare import compare_entities, compare_query

    if ids is not None and filter:
        raise fail_invalid("--ids and --filter are exclusive: give one")
    keys = [k.strip() for k in (ids or "").split(",") if k.strip()]
    if ids is not None and not keys:
        raise fail_invalid(f"--ids needs comma-separated keys, got {ids!r}")
    conn = _connections(uri, token, db_name, pg_dsn)

    async def compare(m: Any, p: Any, t: Any) -> Any:
        if keys:
            return await compare_entities(
                m, p, collection, keys, tracker=t, tolerance=tolerance, ignore_vectors=ignore_vectors, table=table
            )
        return await compare_query(m, p, collection, filter, tracker=t, tolerance=tolerance, ignore_vectors=ignore_vectors, table=table)

    result = _run(conn, tracker, compare)
    _report(result, as_json, show)


@shadow_app.command()
def validate(
    collection: CollectionArg,
    ignore_vectors: NoVecOpt = False,
    tolerance: TolOpt = 1e-6,
    batch_size: Annotated[
        int, typer.Option(min=1, max=16384, help="rows compared per batch (each a Strong query: fewer is slower)")
    ] = 10_000,
    uri: UriOpt = None,
    token: TokenOpt = None,
    db_name: DbOpt = None,
    pg_dsn: DsnOpt = None,
    table: TableOpt = None,
    tracker: TrackerOpt = None,
    as_json: JsonOpt = False,
    show: ShowOpt = 20,
) -> None:
    """Everything: both counts, the full primary-key sets, every field of every row (in batches).

    Each difference names the key, the field, the kind and the side judged wrong (with --tracker, by
    the key's last recorded state; otherwise Milvus is the reference). Exit 0 / 1 differences / 2 bad input.
    """
    from task_components.shadow.compare import validate as validate_all

    conn = _connections(uri, token, db_name, pg_dsn)
    result = _run(
        conn,
        tracker,
        lambda m, p, t: validate_all(
            m, p, collection, tolerance=tolerance, ignore_vectors=ignore_vectors, tracker=t, table=table, batch_size=batch_size
        ),
    )
    _report(result, as_json, show)


@shadow_app.command()
def export(
    collection: CollectionArg,
    out_path: Annotated[Path, typer.Option("--out", help="Parquet file to write", show_default=False)],
    side: Annotated[str, typer.Option("--side", help="postgres or milvus")] = "postgres",
    batch_size: Annotated[int, typer.Option(min=1, help="rows per batch")] = 2000,
    uri: UriOpt = None,
    token: TokenOpt = None,
    db_name: DbOpt = None,
    pg_dsn: DsnOpt = None,
    table: TableOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one side of the collection to a Parquet file in the tool's Arrow layout (schema in the metadata)."""
    from task_components.shadow import sides
    from task_components.shadow.export import export as export_side

    if side not in ("postgres", "milvus"):
        raise fail_invalid(f"--side must be postgres or milvus, got {side!r}")
    if out_path.suffix != ".parquet":
        raise fail_invalid(f"--out {out_path}: give a .parquet file")
    conn = _connections(uri, token, db_name, pg_dsn)
    which: Literal["postgres", "milvus"] = "milvus" if side == "milvus" else "postgres"

    async def call(milvus: Any, pool: Any, tracker: Any) -> int:
        schema = await sides.describe(milvus, collection)  # also for the PostgreSQL side: its columns
        source = milvus if which == "milvus" else pool
        return await export_side(source, schema, out_path, side=which, batch_size=batch_size, table=table)

    rows = _run(conn, None, call)
    if as_json:
        print(json.dumps({"collection": collection, "side": side, "path": str(out_path), "rows": rows}))
    else:
        out.print(styled(("ok", "green"), f": wrote {rows} rows of {collection!r} from {side} to {out_path}"))


@shadow_app.command()
def search(
    collection: CollectionArg,
    queries: Annotated[int, typer.Option(min=1, max=10_000, help="random query vectors (seeded)")] = 100,
    limit: Annotated[int, typer.Option(min=1, max=16_384, help="top-k compared")] = 10,
    field: Annotated[str | None, typer.Option(help="vector field [default: the collection's only one]")] = None,
    filter: Annotated[str, typer.Option("--filter", help="Milvus boolean expression applied on both sides")] = "",
    min_recall: Annotated[float, typer.Option(min=0, max=1, help="mean recall@k below this fails")] = 1.0,
    seed: Annotated[int, typer.Option(help="seed of the query vectors")] = 0,
    uri: UriOpt = None,
    token: TokenOpt = None,
    db_name: DbOpt = None,
    pg_dsn: DsnOpt = None,
    table: TableOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Milvus' top-k against the exact top-k over the shadow's vectors (recall@k per query and mean).

    Near-exhaustive search parameters: this checks that every stored row is findable, not the index's
    quality. Needs a shadow holding vectors (not one created with ignore_vector). Exit 0 mean recall
    >= --min-recall, 1 below it (the exact neighbours Milvus missed are listed), 2 bad input.
    """
    import numpy as np

    from task_components.shadow import sides
    from task_components.shadow.compare import compare_search

    conn = _connections(uri, token, db_name, pg_dsn)

    async def call(milvus: Any, pool: Any, tracker: Any) -> Any:
        shadow = await sides.resolve(milvus, pool, collection, table)
        fields = [f for f in shadow.schema.fields if f.type.is_vector and (field is None or f.name == field)]
        dim = fields[0].dim if len(fields) == 1 and fields[0].dim else 0
        if not dim:  # compare_search names the problem (several fields, none, sparse)
            return await compare_search(milvus, pool, collection, [], anns_field=field, table=table)
        vectors = np.random.default_rng(seed).standard_normal((queries, dim)).astype(np.float32)
        return await compare_search(
            milvus, pool, collection, vectors, limit=limit, anns_field=field, filter=filter, table=table, min_recall=min_recall
        )

    result = _run(conn, None, call)
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        for d in result.differences[:20]:
            out.print(cell(str(d)))
        out.print(styled(("ok" if result.ok else "below", "green" if result.ok else "red"), f": {result.summary()}"))
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)
