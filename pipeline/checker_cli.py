"""``shadow ingest`` (also ``pymilvus-pg ingest``): hours of concurrent writes with a validation every N seconds.

pymilvus-pg's long-running correctness test of Milvus, with its flags and environment (``MILVUS_URI``,
``PG_CONN``; ours, ``MILVUS__URI`` and ``POSTGRES__DSN``, also work). Exit 0 when every validation
agreed (a SIGTERM or SIGINT is the normal way to end an open-ended run: writers finish their batch, a
final validation runs, the summary prints), 1 on any divergence (keys, fields and sides named), 2 on
bad input or an unreachable service.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.live import Live
from rich.table import Table

from pipeline.checker.journal import Journal, default_dir
from pipeline.checker.rows import DEFAULT_COLLECTION
from pipeline.checker.workload import Checker, CheckerOptions, Stats
from pipeline.cli_common import EXIT_FAILED, EXIT_OK, cell, err, fail_invalid, load_settings, out, styled
from pipeline.shadow_cli import shadow_app


def connection(uri: str | None, token: str | None, pg_conn: str | None) -> tuple[str, str, str]:
    """Milvus URI, token and shadow DSN: flags, then pymilvus-pg's variables, then ours."""
    settings = load_settings()
    uri = uri or os.environ.get("MILVUS_URI") or settings.milvus.uri
    if not uri:
        raise fail_invalid("no Milvus: pass --uri or set MILVUS_URI (or MILVUS__URI)")
    if token is None:
        token = settings.milvus.token.get_secret_value() if settings.milvus.token and uri == settings.milvus.uri else ""
    dsn = pg_conn or os.environ.get("PG_CONN") or (settings.postgres.dsn.get_secret_value() if settings.postgres.dsn else "")
    if not dsn:
        raise fail_invalid("no PostgreSQL shadow: pass --pg-conn or set PG_CONN (or POSTGRES__DSN)")
    return uri, token, dsn


def open_client(uri: str, token: str, dsn: str, *, include_vector: bool, tracker: Path | None) -> Any:
    """The shadowing client, or exit 2 naming the service that cannot be reached."""
    from pymilvus.exceptions import MilvusException

    from task_components.shadow.dropin import ShadowMilvusClient

    try:
        return ShadowMilvusClient(uri=uri, token=token, pg_dsn=dsn, tracker_path=tracker, ignore_vector=not include_vector, timeout=30)
    except (MilvusException, OSError, ValueError) as exc:
        raise fail_invalid(f"cannot open the shadowing client on {uri}: {type(exc).__name__}: {exc}") from None


def stats_table(stats: Stats, options: CheckerOptions) -> Table:
    elapsed = max(1e-9, _elapsed(stats))
    table = Table(title=f"checker: {options.collection} ({options.threads} writers, validation every {options.compare_interval:g} s)")
    for col in ("operation", "batches", "rows", "rows/s"):
        table.add_column(col, justify="right" if col != "operation" else "left")
    for op in ("insert", "upsert", "delete"):
        table.add_row(op, str(stats.ops[op]), str(stats.rows[op]), f"{stats.rows[op] / elapsed:,.0f}")
    last = stats.last.summary() if stats.last else "none yet"
    table.caption = (
        f"{elapsed:,.0f} s, {stats.phase}; validations {stats.validations} ({stats.failed_validations} with divergences); "
        f"write errors {stats.errors}; replayed at start {stats.replayed}\nlast: {last}"
    )
    return table


def _elapsed(stats: Stats) -> float:
    return time.monotonic() - stats.started


def run_checker(
    options: CheckerOptions, uri: str, token: str, dsn: str, *, journal: Path | None, tracker: Path | None, progress: bool | None
) -> Stats:
    import asyncpg
    from pymilvus.exceptions import MilvusException

    from task_components.errors import ShadowError

    client = open_client(uri, token, dsn, include_vector=options.include_vector, tracker=tracker)
    checker = Checker(client, dsn, options, Journal(journal or default_dir(uri, dsn, options.collection)))
    live_view = progress if progress is not None else err.is_terminal

    async def main() -> Stats:
        stop = anyio.Event()

        async def on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    err.print(cell(f"{signal.Signals(signum).name}: writers finish their batch, then a final validation"))
                    stop.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(on_signal)
                if live_view:
                    with Live(stats_table(checker.stats, options), console=err, refresh_per_second=2) as live:
                        stats = await checker.run(stop, lambda s: live.update(stats_table(s, options)))
                else:
                    stats = await checker.run(stop)
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the run's own error, not the task groups' wrapping of it
            raise _first(group) from None
        return stats

    try:
        return anyio.run(main)
    except (MilvusException, ShadowError, asyncpg.PostgresError, OSError, ValueError) as exc:
        raise fail_invalid(f"{type(exc).__name__}: {exc}") from None
    finally:
        client.close()


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first error a task group collected (several writers often fail alike: one is told)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return next((e for e in leaves if isinstance(e, Exception)), leaves[0] if leaves else group)


def report(stats: Stats, options: CheckerOptions, as_json: bool) -> None:
    if as_json:
        print(json.dumps(stats.to_dict(), default=str))
    else:
        out.print(stats_table(stats, options))
        failing = stats.first_failure
        if failing is not None:
            table = Table(title=f"first divergent validation: {failing.summary()}")
            for col in ("key", "field", "kind", "wrong side", "milvus", "postgres"):
                table.add_column(col)
            for d in failing.differences[:20]:
                table.add_row(*(cell(c) for c in (d.key, d.field or "(row)", d.kind, d.side, d.milvus, d.postgres)))
            out.print(table)
        if stats.in_doubt:
            out.print(cell(f"{stats.in_doubt} batches could not be written; they are journaled and replayed at the next start"))
        verdict = ("ok", "green") if stats.ok else ("divergent", "red")
        out.print(styled(verdict, f": {stats.validations} validations, {stats.failed_validations} with divergences"))
    raise typer.Exit(EXIT_OK if stats.ok else EXIT_FAILED)


def ingest(
    threads: Annotated[int, typer.Option(min=1, help="writer threads (pymilvus-pg's default)")] = 10,
    compare_interval: Annotated[float, typer.Option(min=0.1, help="seconds between validations")] = 60,
    duration: Annotated[float, typer.Option(min=0, help="seconds to run; 0 = until SIGTERM/SIGINT")] = 0,
    uri: Annotated[str | None, typer.Option(help="Milvus URI [default: MILVUS_URI, then MILVUS__URI]")] = None,
    token: Annotated[str | None, typer.Option(help="Milvus token [default: MILVUS__TOKEN]")] = None,
    pg_conn: Annotated[
        str | None, typer.Option("--pg-conn", "--pg-dsn", help="PostgreSQL DSN [default: PG_CONN, then POSTGRES__DSN]")
    ] = None,
    collection: Annotated[str, typer.Option(help="collection (created with pymilvus-pg's test schema when missing)")] = DEFAULT_COLLECTION,
    drop_existing: Annotated[bool, typer.Option("--drop-existing", help="drop the collection and its shadow first")] = False,
    include_vector: Annotated[
        bool, typer.Option("--include-vector", help="shadow and compare vectors too (default: left out, as pymilvus-pg's ingest)")
    ] = False,
    full_scan: Annotated[
        bool, typer.Option("--full-scan/--no-full-scan", help="each validation compares every row, or the key sets and a sample of rows")
    ] = True,
    sample_size: Annotated[int, typer.Option(min=1, help="rows compared per validation with --no-full-scan")] = 1000,
    dim: Annotated[int, typer.Option(min=1, max=32768, help="vector dimension of a new collection")] = 8,
    journal: Annotated[Path | None, typer.Option(help="in-doubt batch journal [default: under ~/.cache/dag-pipeline/checker]")] = None,
    tracker: Annotated[Path | None, typer.Option(help="key tracker (LMDB directory) [default: the drop-in client's]")] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="live view [default: on a TTY]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Concurrent insert/upsert/delete through the shadowing client, validated every --compare-interval seconds.

    Writers pause while a validation runs, so a divergence is Milvus' or the shadow's, never the
    checker's. Killed (even with -9) and restarted on the same collection, it first replays the batches
    that were in flight, so the next validation passes. Exit 0 all agreed, 1 divergence, 2 bad input.
    """
    options = CheckerOptions(
        collection=collection,
        threads=threads,
        compare_interval=compare_interval,
        duration=duration,
        drop_existing=drop_existing,
        include_vector=include_vector,
        dim=dim,
        full_scan=full_scan,
        sample_size=sample_size,
    )
    u, t, dsn = connection(uri, token, pg_conn)
    stats = run_checker(options, u, t, dsn, journal=journal, tracker=tracker, progress=progress)
    report(stats, options, as_json)


shadow_app.command("ingest")(ingest)
