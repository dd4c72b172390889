"""``seed-mongo --pack SPEC``: seed any document pack, a built-in one or the user's own, without a pipeline file.

A pack's collections are its own, so one pipeline file cannot seed every pack: this command builds the
tasks from the pack itself (one ``mongo.seed`` per collection, references as needs, then
``mongo.validate``) and runs them like a file's run (run directory, report, resume by the same command).
``--pack`` takes what a pipeline's ``pack:`` takes: ``ecommerce``, ``my_module:PACK`` (the working
directory is importable) or ``path/to/pack.py[:PACK]``. A pack that cannot be loaded is one line, exit 2.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pipeline.cli_common import RunDirOpt, app, exit_code, fail_invalid, run_tasks

__all__ = ["seed_mongo"]


@app.command("seed-mongo")
def seed_mongo(
    pack: Annotated[str, typer.Option(help="ecommerce, my_module:PACK or path/to/pack.py[:PACK]", show_default=False)],
    database: Annotated[str | None, typer.Option(help="[default: MONGODB__DATABASE]")] = None,
    scale: Annotated[float, typer.Option(min=0.0001, help="multiplies the pack's document counts")] = 1.0,
    seed: Annotated[int, typer.Option(help="same seed, same documents")] = 42,
    drop: Annotated[bool, typer.Option("--drop/--no-drop", help="drop each collection first (a repeatable seeding)")] = True,
    run_dir: RunDirOpt = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="[default: on a TTY]")] = None,
) -> None:
    """Seed a document pack's collections into MongoDB in dependency order, then validate them (exit 1 on any orphan)."""
    from task_components.datasets.mongo.task import doc_pack_tasks
    from task_components.datasets.pack import PackConfigError

    params: dict[str, Any] = {"scale": scale, "seed": seed, "drop": drop}
    if database is not None:
        params["database"] = database
    try:
        tasks = doc_pack_tasks(pack, **params)
    except PackConfigError as exc:
        raise fail_invalid(f"--pack: {exc}") from None
    _, result = run_tasks(f"seed-mongo-{pack.rsplit(':', 1)[-1].rsplit('/', 1)[-1]}", tasks, run_dir, live=progress)
    raise typer.Exit(exit_code(result))
