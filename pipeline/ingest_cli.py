"""milvus-ingest conveniences: ``upload DIR``, ``to-milvus insert|import DIR`` and ``verify RUN_ID``.

Each builds a small pipeline spec in code around ``dataset.load`` and runs it exactly like a YAML
file (same validation, run directory, report, progress view and exit codes), so there is one way
things run whichever door a user came in by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli_common import RunDirOpt, app, exit_code, fail_invalid, load_settings, run_tasks

to_milvus = typer.Typer(
    help="Load a dataset directory into Milvus (like milvus-ingest to-milvus).", no_args_is_help=True
)
app.add_typer(to_milvus, name="to-milvus")

DirArg = Annotated[Path, typer.Argument(help="dataset directory with meta.json (from `generate`)", show_default=False)]
RunDir = RunDirOpt
Collection = Annotated[str | None, typer.Option(help="collection name [default: the schema's]")]
Drop = Annotated[bool, typer.Option("--drop", help="drop the collection first if it exists")]


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
    raise typer.Exit(exit_code(run_tasks("upload", tasks, run_dir)[1]))


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
    raise typer.Exit(exit_code(run_tasks("to-milvus-insert", tasks, run_dir)[1]))


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
    raise typer.Exit(exit_code(run_tasks("to-milvus-import", tasks, run_dir)[1]))


@app.command("verify")
def verify_run(
    run_id: Annotated[str, typer.Argument(help="a run whose import (and shadow) tasks finished")],
    level: Annotated[str, typer.Option(help="count, sample, scalar or full")] = "full",
    sample: Annotated[int, typer.Option(min=1, help="keys compared at level sample")] = 1000,
    tolerance: Annotated[float, typer.Option(min=0, help="absolute tolerance for float vectors")] = 1e-6,
    run_dir: RunDir = None,
) -> None:
    """Verify again, now, that source files, Milvus and the shadow of a finished run agree.

    Runs as its own small pipeline (a new run directory and report) whose inputs are the earlier run's
    stored import and shadow results. Milvus is the current MILVUS__URI when set, else the one recorded.
    """
    from dag_orchestrator.state import StateStore
    from task_components.contracts import ImportResult, ShadowResult

    settings = load_settings()
    root = run_dir or settings.pipeline.run_dir
    path = root / run_id
    if level not in ("count", "sample", "scalar", "full"):
        raise fail_invalid(f"--level must be count, sample, scalar or full, got {level!r}")
    try:
        stored = StateStore.existing(path).succeeded()
    except FileNotFoundError:
        raise fail_invalid(f"no run {run_id!r} in {root} (a run id is a directory name there)") from None
    picked = {n: r for n, r in stored.items() if isinstance(r, ImportResult | ShadowResult)}
    if not any(isinstance(r, ImportResult) for r in picked.values()):
        raise fail_invalid(f"{path}: no finished import or insert task to verify (is {run_id!r} a loading run?)")
    if level in ("scalar", "full") and not any(isinstance(r, ShadowResult) for r in picked.values()):
        raise fail_invalid(f"{path}: --level {level} needs a finished shadow.sync task; use --level sample")
    tasks: dict[str, Any] = {n: {"uses": "run.result", "with": {"run": str(path.resolve()), "task": n}} for n in picked}
    tasks["verify"] = {"uses": "verify", "needs": list(picked),
                       "with": {"level": level, "sample": sample, "tolerance": tolerance}}  # fmt: skip
    _, result = run_tasks(f"verify-{run_id}", tasks, root)
    raise typer.Exit(exit_code(result))
