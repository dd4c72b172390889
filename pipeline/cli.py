"""The command line behind ``run_pipeline.py`` / ``run-pipeline``.

Exit codes: 0 ok, 1 a task failed, 2 invalid input or configuration, 130 interrupted by a signal.
Invalid input never shows a traceback: the one-line error names the file, the task and the field.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dag_orchestrator.executor import FailurePolicy
from pipeline.cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    RunDirOpt,
    app,
    cell,
    check_backend,
    check_settings,
    err,
    exit_code,
    fail_invalid,
    fail_prepare,
    load_settings,
    out,
    print_summary,
    run_to_end,
    styled,
)
from pipeline.registry import build_dag, components
from pipeline.runner import MetricsPortError, RunOptions, innermost, prepare_run
from pipeline.spec import SpecError, load_spec, parse_overrides
from task_components.base import retry_warnings

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_INVALID", "EXIT_OK", "app", "main"]

FileArg = Annotated[Path, typer.Argument(help="pipeline YAML file", show_default=False)]
SetOpt = Annotated[list[str], typer.Option("--set", "-s", help="override a parameter: --set rows=5000")]


@app.command()
def run(
    file: FileArg,
    set_: SetOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    run_dir: RunDirOpt = None,
    resume: Annotated[str | None, typer.Option(help="resume run RUN_ID: tasks that succeeded are not run again")] = None,
    backend: Annotated[
        str | None, typer.Option(help="where CPU-heavy work runs: local or dask [default: PIPELINE__BACKEND or local]")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="with dask: scheduler address tcp://host:8786 [default: a LocalCluster]")] = None,
    max_concurrency: Annotated[int | None, typer.Option(min=1, help="tasks running at once")] = None,
    only: Annotated[list[str], typer.Option(help="run only this task and what it needs (repeatable)")] = [],  # noqa: B006
    policy: Annotated[FailurePolicy | None, typer.Option(help="on failure: cancel everything, or skip dependents")] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="live task view [default: on a TTY]")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="serve Prometheus /metrics and /healthz on this port during the run (0: any)")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="address --metrics-port binds (0.0.0.0 exposes it beyond this host)")] = "127.0.0.1",
) -> None:
    """Run a pipeline file."""
    settings = load_settings()
    backend = backend or settings.pipeline.backend
    scheduler = scheduler or settings.pipeline.scheduler
    check_backend(backend, scheduler)
    options = RunOptions(
        run_dir=run_dir or settings.pipeline.run_dir,
        resume=resume,
        max_concurrency=max_concurrency,
        backend=backend,
        scheduler=scheduler,
        only=list(only),
        policy=policy,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    try:
        prepared = prepare_run(file, parse_overrides(set_, file), options)
    except SpecError as exc:
        raise fail_prepare(exc) from None
    check_settings(prepared, settings)
    live = progress if progress is not None else sys.stderr.isatty()
    try:
        result = run_to_end(prepared, settings, options, live)
    except BaseException as exc:
        if isinstance(innermost(exc), MetricsPortError):
            raise fail_invalid(str(innermost(exc))) from None
        raise
    print_summary(prepared, result)
    raise typer.Exit(exit_code(result))


@app.command()
def validate(file: FileArg, set_: SetOpt = []) -> None:  # noqa: B006
    """Check a pipeline file and the configuration without running it (exit 2 and one message if invalid)."""
    settings = load_settings()
    try:
        spec = load_spec(file, parse_overrides(set_, file))
        dag = build_dag(spec, file, settings=settings)  # the checks a run makes before it starts, settings included
    except SpecError as exc:
        raise fail_invalid(str(exc)) from None
    for task, message in retry_warnings({t.name: t for t in dag}):
        err.print(styled(("warning:", "yellow"), f" {file}: task {task!r}: field 'retries': {message}"))
    out.print(styled(("ok", "green"), f": {file}: pipeline {spec.name!r}, {len(dag)} tasks"))


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
            f"{k}={f.get_default(call_default_factory=True)!r}" if not f.is_required() else f"{k} (required)"
            for k, f in cls.Params.model_fields.items()
        )
        table.add_row(cell(name), cell(cls.summary), cell(params))  # defaults such as [] or "[x]" stay literal
    out.print(table)


def main() -> None:
    import pipeline.checker_cli
    import pipeline.clean_cli
    import pipeline.daemon_cli
    import pipeline.datagen_cli
    import pipeline.ingest_cli
    import pipeline.mongo_cli
    import pipeline.runs_cli
    import pipeline.serve_cli
    import pipeline.shadow_cli
    import pipeline.stream_cli
    import pipeline.verify_cli  # noqa: F401 - registers `verify`

    app()
