"""``generate`` (milvus-ingest-style one-shot generate + partition) and ``schema`` commands.

``generate`` is the same two-task DAG the pipelines use (generate -> partition), built as a spec in
code and run through the runner like any pipeline file (run directory, journal, report, signals), so a
file made here is byte-identical to one made by a pipeline run with the same schema and seed.

File limits follow milvus-ingest: with none given, files close at 256MB or 1,000,000 rows; with
``--file-count N --file-size S`` the total row count is derived (N x rows that fit in S) and
``--total-rows`` is ignored.

``schema list|show|add|remove|help`` is milvus-ingest's command; ``schemas`` stays as a hidden alias
(the same commands), so scripts written for either name run.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer
from pydantic import ValidationError
from rich.syntax import Syntax
from rich.table import Table

from config import configure_logging
from pipeline.cli_common import (
    RunDirOpt,
    app,
    cell,
    exit_code,
    fail_invalid,
    load_settings,
    out,
    print_summary,
    run_tasks,
    styled,
)
from task_components.contracts import Manifest
from task_components.datafiles import iter_batches
from task_components.generation import GenerateParams, sizing
from task_components.generation.columns import generate_chunk
from task_components.manifest import parse_size
from task_components.partitioning import PartitionParams
from task_components.schema import SchemaError, builtin_names, resolve_schema
from task_components.schema.library import add_schema, remove_schema, user_names

schemas_app = typer.Typer(help="List, show, add and remove collection schemas; `schema help`: the format.", no_args_is_help=True)
app.add_typer(schemas_app, name="schema")
app.add_typer(schemas_app, name="schemas", hidden=True)  # our first name for it: README lines and scripts use it

PREVIEW_ROWS = 5


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "value"
    return f"{field}: {first['msg'].removeprefix('Value error, ')}"


@app.command()
def generate(
    schema: Annotated[str | None, typer.Option("--schema", help="schema file (JSON/YAML, milvus-ingest format)")] = None,
    builtin: Annotated[str | None, typer.Option("--builtin", help="builtin or added schema name (see `schema list`)")] = None,
    total_rows: Annotated[
        int, typer.Option("--total-rows", min=1, help="rows to generate (ignored with --file-count + --file-size)")
    ] = 1000,
    rows_per_file: Annotated[int | None, typer.Option("--rows-per-file", min=1, help="max rows per file [default: 1000000]")] = None,
    file_size: Annotated[
        str | None, typer.Option("--file-size", help="max file size: 256MB, 1GB (bare number = MB) [default: 256MB]")
    ] = None,
    file_count: Annotated[
        int | None,
        typer.Option("--file-count", min=1, help="N files; with --file-size the total rows = N x rows that fit in that size"),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="rows generated per chunk [default: about 8 MB of rows; milvus-ingest: 50000 rows, whatever their "
            "width: a 768-d chunk of 50000 is 150 MB per worker, ours stays near 8 MB]",
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option("--partitions", min=1, help="N partitions: partition key gets N x 10 values, num_partitions N"),
    ] = None,
    shards: Annotated[int | None, typer.Option("--shards", min=1, help="split files by primary-key hash")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="worker processes [default: CPUs]")] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            help="random seed [milvus-ingest: none, new data each run; ours: the same files each run, so a resumed "
            "or repeated run regenerates exactly what it wrote]",
        ),
    ] = 42,
    fmt: Annotated[str, typer.Option("--format", help="parquet or json")] = "parquet",
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="output directory [default: ./<collection>, where `clean` looks; milvus-ingest: ~/.milvus-ingest/data/<collection>]",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing output directory")] = False,
    preview: Annotated[
        bool,
        typer.Option(
            "--preview",
            help="generate, then print the first 5 rows (milvus-ingest's documented behaviour; its 0.1.x code "
            "prints 5 rows and writes nothing: that is --preview-only)",
        ),
    ] = False,
    preview_only: Annotated[bool, typer.Option("--preview-only", help="print 5 sample rows, write nothing")] = False,
    validate_only: Annotated[bool, typer.Option("--validate-only", help="check the schema, write nothing")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="live progress view [default: on a terminal]")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging and the file plan")] = False,
    run_dir: RunDirOpt = None,
) -> None:
    """Generate a dataset (Parquet/JSON files + meta.json) from a schema, like milvus-ingest generate.

    Example: generate --schema schema.json --file-count 10 --file-size 100MB --out data
    """
    settings = load_settings()
    if verbose:
        configure_logging(settings.logging.model_copy(update={"level": "DEBUG"}))
    if (schema is None) == (builtin is None):
        raise fail_invalid("give exactly one of --schema FILE or --builtin NAME")
    if fmt not in ("parquet", "json"):
        raise fail_invalid(f"--format must be parquet or json, got {fmt!r}")
    known = builtin_names() + user_names()  # a schema added with `schema add` too, as milvus-ingest's --builtin takes
    if builtin is not None and builtin not in known:
        raise fail_invalid(f"--builtin {builtin!r} is not a builtin or added schema (known: {', '.join(known)})")
    ref = builtin if builtin is not None else schema
    try:
        given = {"total_rows": total_rows, "seed": seed, "workers": workers, "partitions": partitions, "shards": shards}
        # by the alias, as a pipeline file gives it: an error then names "schema", the option the user knows
        gp = GenerateParams.model_validate({"schema": ref, "chunk_rows": batch_size, **given})
        pp = _file_plan(gp, fmt, rows_per_file, file_size, file_count, validate_only or preview_only)
    except SchemaError as exc:
        raise fail_invalid(str(exc)) from None
    except ValidationError as exc:
        raise fail_invalid(_validation_message(exc)) from None
    cs = gp.schema
    if validate_only:
        extra = f", functions: {', '.join(fn.name for fn in cs.functions)}" if cs.functions else ""
        out.print(styled(("ok", "green"), f": schema {cs.collection_name!r}: {len(cs.fields)} fields{extra}"))
        return
    if verbose:
        limits = pp.model_dump(exclude_none=True, include={"rows_per_file", "file_size", "file_count"})
        chunks = gp.chunk_rows or "about 8 MB of"
        out.print(cell(f"plan: {gp.total_rows:,} rows, chunks of {chunks} rows, files: {limits}"))
    if preview_only:
        _print_rows(generate_chunk(cs.model_dump_json(), seed, 0, 0, min(PREVIEW_ROWS, total_rows), total_rows))
        return
    target = out_dir or Path(cs.collection_name)
    if target.exists() and any(target.iterdir()):
        if not force:
            raise fail_invalid(f"output directory {target} exists and is not empty; use --force to replace it")
        shutil.rmtree(target)
    pp.out = str(target.resolve())
    tasks = {
        "generate": {"uses": "generate", "with": gp.model_dump(by_alias=True, exclude_none=True)},
        "partition": {"uses": "partition", "needs": ["generate"], "with": pp.model_dump(exclude_none=True)},
    }
    started = time.perf_counter()
    prepared, result = run_tasks("generate", tasks, run_dir, live=progress, summary=False)
    if not result.ok:
        print_summary(prepared, result)
        raise typer.Exit(exit_code(result))
    manifest: Manifest = result.results["partition"]
    seconds = time.perf_counter() - started
    out.print(
        styled(
            ("generated", "green"),
            f" {manifest.total_rows:,} rows in {len(manifest.files)} {fmt} files "
            f"({manifest.total_bytes / 1e6:,.1f} MB) in {seconds:.2f}s = {manifest.total_rows / seconds:,.0f} rows/s "
            f"-> {target} (run {result.run_id})",
        ),
        soft_wrap=True,
    )
    if preview:  # the first rows of the first file written: what a loader will read first
        first = next(iter_batches(manifest, manifest.files[0], PREVIEW_ROWS))
        out.print(styled(("preview", "green"), f" (top {PREVIEW_ROWS} rows of {manifest.files[0].path}):"))
        _print_rows(first.slice(0, PREVIEW_ROWS))


def _print_rows(batch: pa.RecordBatch) -> None:
    import polars as pl  # only the preview needs it: keep it out of every run's memory

    with pl.Config(tbl_cols=-1, fmt_str_lengths=40, tbl_width_chars=200):
        print(pl.from_arrow(batch))


def _file_plan(
    gp: GenerateParams,
    fmt: str,
    rows_per_file: int | None,
    file_size: str | None,
    file_count: int | None,
    dry: bool,
) -> PartitionParams:
    """milvus-ingest's file rules. Why derive rows for count+size: users ask for "10 files of 1GB", not rows."""
    if file_count and rows_per_file:
        raise SchemaError("give --file-count or --rows-per-file, not both")
    if file_count and file_size:
        if not dry:
            size = parse_size(file_size)
            row_bytes = sizing.encoded_row_bytes(gp.schema, fmt, gp.seed)
            gp.total_rows = sizing.rows_for_files(file_count, size, row_bytes)[1]
        return PartitionParams(format=fmt, file_count=file_count)
    if file_count:
        return PartitionParams(format=fmt, file_count=file_count)
    if rows_per_file is None and file_size is None:
        rows_per_file, file_size = sizing.DEFAULT_ROWS_PER_FILE, sizing.DEFAULT_FILE_SIZE
    elif rows_per_file is not None and file_size is None:
        file_size = sizing.DEFAULT_FILE_SIZE
    return PartitionParams(format=fmt, rows_per_file=rows_per_file, file_size=file_size)


@schemas_app.command("list")
def schemas_list() -> None:
    """Builtin schemas and the ones you added."""
    table = Table(title="schemas")
    for col in ("name", "source", "fields", "vectors", "description"):
        table.add_column(col)
    for name in builtin_names() + user_names():
        s = resolve_schema(name)
        vectors = ", ".join(f"{f.type.value}({f.dim or ''})" for f in s.fields if f.type.is_vector)
        source = "builtin" if name in builtin_names() else "user"
        table.add_row(cell(name), source, cell(len(s.fields)), cell(vectors), cell(s.description))
    out.print(table)


@schemas_app.command("show")
def schemas_show(name: Annotated[str, typer.Argument(help="schema name or file")]) -> None:
    """Print a schema as JSON."""
    try:
        s = resolve_schema(name)
    except SchemaError as exc:
        raise fail_invalid(str(exc)) from None
    text: Any = json.dumps(s.model_dump(mode="json", exclude_defaults=True), indent=2)
    out.print(Syntax(text, "json"))


@schemas_app.command("add")
def schemas_add(
    name: Annotated[str, typer.Argument(help="name to register it under")],
    file: Annotated[Path, typer.Argument(help="schema JSON/YAML file")],
) -> None:
    """Validate a schema file and add it to your library."""
    try:
        target = add_schema(name, file)
    except SchemaError as exc:
        raise fail_invalid(str(exc)) from None
    out.print(styled(("added", "green"), f" {name!r} -> {target}"))


@schemas_app.command("remove")
def schemas_remove(name: Annotated[str, typer.Argument()]) -> None:
    """Remove a schema you added (builtin schemas stay)."""
    try:
        target = remove_schema(name)
    except SchemaError as exc:
        raise fail_invalid(str(exc)) from None
    out.print(styled(("removed", "green"), f" {name!r} ({target})"))
