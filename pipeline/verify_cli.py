"""``verify RUN_ID`` (again, now, a finished loading run) or ``verify DATA_PATH`` (a dataset against a collection)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli_common import RunDirOpt, app, exit_code, fail_invalid, load_settings, run_tasks
from pipeline.ingest_cli import verify_data_path
from pipeline.ingest_options import CollectionName, DbName, Token, Uri, data_dir, override_settings
from task_components.manifest import MANIFEST_NAME

RunDir = RunDirOpt


@app.command("verify")
def verify_run(
    run_id: Annotated[str, typer.Argument(help="a run whose import (and shadow) tasks finished, or a dataset directory")],
    level: Annotated[str, typer.Option(help="count, sample, scalar or full")] = "full",
    sample: Annotated[int, typer.Option(min=1, help="keys compared at level sample")] = 1000,
    tolerance: Annotated[float, typer.Option(min=0, help="absolute tolerance for float vectors")] = 1e-6,
    collection_name: CollectionName = None,
    uri: Uri = None,
    token: Token = None,
    db_name: DbName = None,
    run_dir: RunDir = None,
) -> None:
    """Verify again, now, that source files, Milvus and the shadow of a finished run agree.

    Runs as its own small pipeline (a new run directory and report) whose inputs are the earlier run's
    stored import and shadow results. Milvus is the current MILVUS__URI when set, else the one recorded.
    Given a dataset directory instead, it is `to-milvus verify DATA_PATH` (levels count, scalar, full).
    """
    override_settings(milvus__uri=uri, milvus__token=token, milvus__db_name=db_name)
    if (Path(run_id) / MANIFEST_NAME).exists():
        mapped = {"sample": "full"}.get(level, level)
        verify_data_path(data_dir(Path(run_id)), mapped, collection_name, None if sample == 1000 else sample, run_dir)
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
    tasks["verify"] = {"uses": "verify", "needs": list(picked), "with": {"level": level, "sample": sample, "tolerance": tolerance}}
    _, result = run_tasks(f"verify-{run_id}", tasks, root)
    raise typer.Exit(exit_code(result))
