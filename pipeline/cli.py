"""The command line behind ``run_pipeline.py`` / ``run-pipeline``.

Exit codes: 0 ok, 1 a task failed, 2 invalid input or configuration, 130 interrupted by a signal.
Invalid input never shows a traceback: the one-line error names the file, the task and the field.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from config import configure_logging, get_settings
from config.settings import Settings
from dag_orchestrator.events import log_observer
from dag_orchestrator.executor import FailurePolicy
from dag_orchestrator.state import RunResult, TaskState
from pipeline.progress import RichProgress
from pipeline.registry import build_dag, components
from pipeline.runner import PreparedRun, RunOptions, execute, prepare_run, summaries
from pipeline.spec import SpecError, load_spec, parse_overrides

app = typer.Typer(
    help="Run data pipelines as DAGs of async tasks (vector database loading, verification, streaming).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 200)  # logs and pipes: do not wrap at 80 columns
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

FileArg = Annotated[Path, typer.Argument(help="pipeline YAML file", show_default=False)]
SetOpt = Annotated[list[str], typer.Option("--set", "-s", help="override a parameter: --set rows=5000")]


def fail_invalid(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_INVALID)


def load_settings() -> Settings:
    try:
        settings = get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        key = "__".join(str(p) for p in first["loc"]).upper()
        raise fail_invalid(f"configuration {key}: {first['msg']} (got {first.get('input')!r})") from None
    configure_logging(settings.logging)
    return settings


@app.command()
def run(
    file: FileArg,
    set_: SetOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    run_dir: Annotated[
        Path | None, typer.Option(help="where runs are kept [default: PIPELINE__RUN_DIR or ./runs]")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="resume run RUN_ID: tasks that succeeded are not run again")
    ] = None,
    backend: Annotated[str, typer.Option(help="where CPU-heavy work runs: local")] = "local",
    max_concurrency: Annotated[int | None, typer.Option(min=1, help="tasks running at once")] = None,
    only: Annotated[list[str], typer.Option(help="run only this task and what it needs (repeatable)")] = [],  # noqa: B006
    policy: Annotated[
        FailurePolicy | None, typer.Option(help="on failure: cancel everything, or skip dependents")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="live task view [default: on a TTY]")
    ] = None,
) -> None:
    """Run a pipeline file."""
    settings = load_settings()
    if backend != "local":
        raise fail_invalid(f"--backend {backend!r} is not available yet; use --backend local")
    options = RunOptions(
        run_dir=run_dir or settings.pipeline.run_dir,
        resume=resume,
        max_concurrency=max_concurrency,
        backend=backend,
        only=list(only),
        policy=policy,
    )
    try:
        prepared = prepare_run(file, parse_overrides(set_, file), options)
    except SpecError as exc:
        raise fail_invalid(str(exc)) from None
    live = progress if progress is not None else sys.stderr.isatty()
    result = anyio.run(_run_with_view, prepared, settings, options, live)
    print_summary(prepared, result)
    if result.state is TaskState.CANCELLED:
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


async def _run_with_view(prepared: PreparedRun, settings: Settings, options: RunOptions, live: bool) -> RunResult:
    if live:
        with RichProgress([t.name for t in prepared.dag]) as view:
            return await execute(prepared, settings, options, observers=[view])
    return await execute(prepared, settings, options, observers=[log_observer()])


def print_summary(prepared: PreparedRun, result: RunResult) -> None:
    table = Table(title=f"run {result.run_id} of {prepared.spec.name!r}: {result.state.value}")
    for col in ("task", "state", "attempts", "seconds", "summary"):
        table.add_column(col)
    sums = summaries(prepared.dag, result)
    colours = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "skipped": "dim"}
    for name, t in result.tasks.items():
        state = t.state.value + (" (resumed)" if t.resumed else "")
        detail: Any = ", ".join(
            f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in sums.get(name, {}).items()
        )
        if t.error and t.state is not TaskState.SUCCEEDED:
            detail = t.error
        secs = f"{t.duration:.2f}" if t.duration is not None else "-"
        table.add_row(name, f"[{colours.get(t.state.value, 'white')}]{state}", str(t.attempts), secs, detail)
    out.print(table)
    out.print(f"report: {prepared.path / 'report.json'}")
    if not result.ok:
        out.print(f"resume with: --resume {result.run_id}", highlight=False)


@app.command()
def validate(file: FileArg, set_: SetOpt = []) -> None:  # noqa: B006
    """Check a pipeline file without running it (exit 2 and one message if it is invalid)."""
    try:
        spec = load_spec(file, parse_overrides(set_, file))
        dag = build_dag(spec, file)
    except SpecError as exc:
        raise fail_invalid(str(exc)) from None
    out.print(f"[green]ok[/]: {file}: pipeline {spec.name!r}, {len(dag)} tasks")


@app.command()
def graph(
    file: FileArg,
    format: Annotated[str, typer.Option("--format", "-f", help="mermaid or dot")] = "mermaid",
    set_: SetOpt = [],  # noqa: B006
) -> None:
    """Print the pipeline's DAG as Mermaid or Graphviz DOT (bold/thick edges are streams)."""
    if format not in ("mermaid", "dot"):
        raise fail_invalid(f"--format must be mermaid or dot, got {format!r}")
    try:
        dag = build_dag(load_spec(file, parse_overrides(set_, file)), file)
    except SpecError as exc:
        raise fail_invalid(str(exc)) from None
    print(dag.to_mermaid() if format == "mermaid" else dag.to_dot())


@app.command("components")
def list_components() -> None:
    """List the components a pipeline file can use, with their parameters."""
    table = Table(title="components")
    for col in ("name", "what it does", "parameters"):
        table.add_column(col)
    for name, cls in components().items():
        params = ", ".join(
            f"{k}={f.default!r}" if not f.is_required() else f"{k} (required)"
            for k, f in cls.Params.model_fields.items()
        )
        table.add_row(name, cls.summary, params)
    out.print(table)


def main() -> None:
    import pipeline.datagen_cli
    import pipeline.ingest_cli  # noqa: F401 - registers `upload` and `to-milvus`

    app()
