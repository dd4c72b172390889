"""milvus-ingest conveniences: ``upload DIR`` and ``to-milvus insert|import DIR``.

Each builds a small pipeline spec in code around ``dataset.load`` and runs it exactly like a YAML
file (same validation, run directory, report, progress view and exit codes), so there is one way
things run whichever door a user came in by.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer

from pipeline.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    _run_with_view,
    app,
    fail_invalid,
    load_settings,
    print_summary,
)
from pipeline.runner import RunOptions, prepare_spec
from pipeline.spec import PipelineSpec, SpecError

to_milvus = typer.Typer(
    help="Load a dataset directory into Milvus (like milvus-ingest to-milvus).", no_args_is_help=True
)
app.add_typer(to_milvus, name="to-milvus")

DirArg = Annotated[Path, typer.Argument(help="dataset directory with meta.json (from `generate`)", show_default=False)]
RunDir = Annotated[Path | None, typer.Option(help="where runs are kept [default: PIPELINE__RUN_DIR or ./runs]")]
Collection = Annotated[str | None, typer.Option(help="collection name [default: the schema's]")]
Drop = Annotated[bool, typer.Option("--drop", help="drop the collection first if it exists")]


def _run(name: str, tasks: dict[str, Any], run_dir: Path | None) -> None:
    settings = load_settings()
    options = RunOptions(run_dir=run_dir or settings.pipeline.run_dir)
    try:
        spec = PipelineSpec.model_validate({"name": name, "tasks": tasks})
        prepared = prepare_spec(spec, f"<{name}>", {}, options)
    except SpecError as exc:
        raise fail_invalid(str(exc)) from None
    result = anyio.run(_run_with_view, prepared, settings, options, sys.stderr.isatty())
    print_summary(prepared, result)
    if result.state.value == "cancelled":
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


def _check_dir(path: Path) -> str:
    if not (path / "meta.json").exists():
        raise fail_invalid(f"{path}: not a dataset directory (no meta.json); make one with `generate --out {path}`")
    return str(path.resolve())


def _collection(collection: str | None, drop: bool) -> dict[str, Any]:
    return {"uses": "milvus.create_collection", "needs": ["dataset"],
            "with": {"collection": collection, "if_exists": "drop" if drop else "append"}}  # fmt: skip


@app.command()
def upload(
    path: DirArg,
    prefix: Annotated[str | None, typer.Option(help="key prefix [default: <S3__PREFIX>/<run id>]")] = None,
    run_dir: RunDir = None,
) -> None:
    """Upload a dataset directory to S3 (S3__* settings) or the local store; unchanged files are skipped."""
    tasks = {
        "dataset": {"uses": "dataset.load", "with": {"path": _check_dir(path)}},
        "upload": {"uses": "storage.upload", "needs": ["dataset"], "with": {"prefix": prefix}, "retries": 3},
    }
    _run("upload", tasks, run_dir)


@to_milvus.command("insert")
def to_milvus_insert(
    path: DirArg,
    collection: Collection = None,
    drop: Drop = False,
    batch_rows: Annotated[int, typer.Option(min=1, help="rows per insert call")] = 5000,
    run_dir: RunDir = None,
) -> None:
    """Insert a dataset into Milvus in batches (works on Milvus Lite and servers)."""
    tasks = {
        "dataset": {"uses": "dataset.load", "with": {"path": _check_dir(path)}},
        "collection": _collection(collection, drop),
        "insert": {"uses": "milvus.insert", "needs": ["dataset", "collection"], "with": {"batch_rows": batch_rows}},
        "verify": {"uses": "verify", "needs": ["insert"], "with": {"level": "count"}},
    }
    _run("to-milvus-insert", tasks, run_dir)


@to_milvus.command("import")
def to_milvus_import(
    path: DirArg,
    collection: Collection = None,
    drop: Drop = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait until the rows are queryable")] = True,
    timeout: Annotated[float, typer.Option(min=1, help="seconds to wait for the import jobs")] = 3600,
    run_dir: RunDir = None,
) -> None:
    """Upload a dataset to the object store and bulk-import it (Milvus Lite: falls back to insert)."""
    tasks: dict[str, Any] = {
        "dataset": {"uses": "dataset.load", "with": {"path": _check_dir(path)}},
        "upload": {"uses": "storage.upload", "needs": ["dataset"], "retries": 3},
        "collection": _collection(collection, drop),
        "import": {"uses": "milvus.bulk_import", "needs": ["upload", "collection"],
                   "with": {"wait": wait, "timeout": timeout}},
    }  # fmt: skip
    if wait:
        tasks["verify"] = {"uses": "verify", "needs": ["import"], "with": {"level": "count"}}
    _run("to-milvus-import", tasks, run_dir)


@app.command("verify")
def verify_run(
    run_id: Annotated[str, typer.Argument(help="a run whose import (and shadow) tasks finished")],
    level: Annotated[str, typer.Option(help="count, sample, scalar or full")] = "full",
    sample: Annotated[int, typer.Option(min=1, help="keys compared at level sample")] = 1000,
    tolerance: Annotated[float, typer.Option(min=0, help="absolute tolerance for float vectors")] = 1e-6,
    run_dir: RunDir = None,
) -> None:
    """Verify again, now, that source files, Milvus and the shadow of a finished run agree."""
    import json
    import pickle
    import time

    from rich.table import Table

    from dag_orchestrator import PipelineContext
    from task_components.contracts import ImportResult, ShadowResult
    from task_components.verification import Verify, VerifyParams

    settings = load_settings()
    path = (run_dir or settings.pipeline.run_dir) / run_id
    if level not in ("count", "sample", "scalar", "full"):
        raise fail_invalid(f"--level must be count, sample, scalar or full, got {level!r}")
    stored = {p.stem: pickle.loads(p.read_bytes()) for p in sorted((path / "results").glob("*.pkl"))}
    picked = {n: r for n, r in stored.items() if isinstance(r, ImportResult | ShadowResult)}
    if not any(isinstance(r, ImportResult) for r in picked.values()):
        raise fail_invalid(f"{path}: no finished import or insert task to verify (is {run_id!r} a loading run?)")
    if level in ("scalar", "full") and not any(isinstance(r, ShadowResult) for r in picked.values()):
        raise fail_invalid(f"{path}: --level {level} needs a finished shadow.sync task; use --level sample")
    task = Verify("verify", VerifyParams(level=level, sample=sample, tolerance=tolerance, fail_on_mismatch=False),
                  needs=list(picked))  # fmt: skip
    ctx = PipelineContext(run_id=run_id, run_dir=path, services={"settings": settings})
    ctx.results.update(picked)
    try:
        result = anyio.run(task.run, ctx)
    except Exception as exc:  # noqa: BLE001 - a service error is reported, never a traceback
        from pipeline.cli import err

        err.print(f"[bold red]verification could not run:[/] {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    table = Table(title=f"verification of run {run_id}: {'passed' if result.passed else 'FAILED'}")
    for col in ("check", "result", "detail"):
        table.add_column(col)
    for c in result.checks:
        table.add_row(c.name, "[green]passed" if c.passed else "[red]failed", c.detail)
    from pipeline.cli import out

    out.print(table)
    report = path / f"verify-{int(time.time())}.json"
    report.write_text(json.dumps(result.model_dump(mode="json"), indent=2, default=str))
    out.print(f"report: {report} ({result.seconds:.1f} s)")
    raise typer.Exit(EXIT_OK if result.passed else EXIT_FAILED)
