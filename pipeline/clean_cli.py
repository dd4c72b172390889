"""``schema help`` and ``clean``: milvus-ingest's two housekeeping commands.

``clean`` removes what ``generate`` and the runner leave behind: dataset directories (a directory
holding a ``meta.json`` with ``schema`` and ``files``, as ``generate`` writes by default under the
current directory) and the run directory. It lists everything first and deletes only after a
confirmation or ``--yes``, like ``milvus-ingest clean``; nothing else (schema files, data that is not
a generated dataset) is touched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli_common import RunDirOpt, app, cell, fail_invalid, load_settings, out, styled
from pipeline.datagen_cli import schemas_app
from pipeline.schema_help import schema_help

__all__ = ["clean", "find_datasets", "schemas_help"]


@schemas_app.command("help")
def schemas_help() -> None:
    """Every field type and schema key, each with an example (milvus-ingest `schema help`)."""
    out.print(schema_help(), highlight=False, markup=False)


def _is_dataset(path: Path) -> bool:
    meta = path / "meta.json"
    if not meta.is_file():
        return False
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "schema" in data and "files" in data


def find_datasets(root: Path) -> list[Path]:
    """Generated datasets: ``root`` itself or its immediate subdirectories holding our meta.json."""
    if _is_dataset(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _is_dataset(p))


@app.command()
def clean(
    path: Annotated[Path, typer.Option("--path", help="where generated datasets are (a dataset or its parent) [default: .]")] = Path("."),
    run_dir: RunDirOpt = None,
    keep_runs: Annotated[bool, typer.Option("--keep-runs", help="remove datasets only, keep the runs")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="delete without asking")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be removed, remove nothing")] = False,
) -> None:
    """Remove generated datasets and runs (lists them and asks first, unless --yes).

    Example: clean --path ./data --yes
    """
    if not path.exists():
        raise fail_invalid(f"--path {path} does not exist")
    targets = find_datasets(path)
    runs = run_dir or load_settings().pipeline.run_dir
    if not keep_runs and runs.is_dir() and any(runs.iterdir()):
        targets.append(runs)
    if not targets:
        out.print("nothing to clean")
        return
    out.print("will remove:")
    for t in targets:
        out.print(cell(f"  {t}"))
    if dry_run:
        return
    if not yes:
        try:
            confirmed = typer.confirm("delete these?", default=False)
        except typer.Abort:  # no input (a pipe, CI): never delete without an answer
            confirmed = False
        if not confirmed:
            out.print("cancelled: nothing removed (use --yes to skip the question)")
            raise typer.Exit(1)
    for t in targets:
        shutil.rmtree(t)
    out.print(styled(("removed", "green"), f" {len(targets)} item(s)"))
