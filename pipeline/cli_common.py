"""Plumbing every CLI command shares: the typer app, consoles, exit codes, settings, running a spec.

Every command that runs work (``run``, ``generate``, ``upload``, ``to-milvus``, ``verify``) goes
through ``run_tasks`` or the runner directly, so each gets a run directory, the state journal, the
report, signal handling, the progress view and the same exit codes; none builds its own executor.

Rich reads ``[...]`` in a string as markup, so a value that is not ours (a task name, an error, a path, a
parameter, ``pip install 'dag-pipeline[dask]'``) would lose its brackets or restyle the line. Output that
mixes our colours with such values is built as ``Text`` (``styled``, ``cell``), which rich never parses;
help texts are plain too (``rich_markup_mode=None``: ours say ``[default: ...]``).
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
from rich.text import Text

from config import configure_logging, get_settings
from config.settings import Settings
from dag_orchestrator.backends import BACKENDS
from dag_orchestrator.diskspace import DiskFullError
from dag_orchestrator.events import log_observer
from dag_orchestrator.state import RunResult, TaskState
from pipeline.progress import RichProgress
from pipeline.runner import NoSpaceForRun, PreparedRun, RunOptions, execute, prepare_spec, summaries
from pipeline.spec import PipelineSpec, SpecError
from task_components.base import Component

app = typer.Typer(
    help="Run data pipelines as DAGs of async tasks (vector database loading, verification, streaming).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are literal: "[default: PIPELINE__RUN_DIR or ./runs]" must show as written
)
out = Console(width=None if sys.stdout.isatty() else 200)  # logs and pipes: do not wrap at 80 columns
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

RunDirOpt = Annotated[Path | None, typer.Option(help="where runs are kept [default: PIPELINE__RUN_DIR or ./runs]")]


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line of our styles and values that are not ours: a plain ``str`` part is literal, never markup."""
    return Text.assemble(*parts)


def cell(value: object, style: str = "") -> Text:
    """A table cell or title shown exactly as given (a ``str`` cell would be parsed as markup)."""
    return Text("" if value is None else str(value), style=style)


def error_line(message: str) -> Text:
    return styled(("error:", "bold red"), " ", message)


def fail_invalid(message: str) -> typer.Exit:
    err.print(error_line(message), soft_wrap=True)
    return typer.Exit(EXIT_INVALID)


def fail_prepare(exc: SpecError) -> typer.Exit:
    """A run refused before it starts: invalid input exits 2; a full disk is not invalid input and exits 1,
    as when the disk fills during the run (one documented code for "the disk is full", wherever it shows)."""
    if isinstance(exc, NoSpaceForRun):
        err.print(error_line(str(exc)), soft_wrap=True)
        return typer.Exit(EXIT_FAILED)
    return fail_invalid(str(exc))


def check_backend(backend: str, scheduler: str | None) -> None:
    """An unknown backend, Dask not installed, or a scheduler address that is not one: exit 2, one line."""
    if backend not in BACKENDS:
        raise fail_invalid(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "local":
        if scheduler:
            raise fail_invalid("--scheduler needs --backend dask")
        return
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise fail_invalid("--backend dask needs Dask: pip install 'dag-pipeline[dask]'") from None
    if scheduler and not scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise fail_invalid(f"--scheduler {scheduler!r} is not a Dask address (e.g. tcp://127.0.0.1:8786)")


def check_settings(prepared: PreparedRun, settings: Settings) -> None:
    """Configuration a task cannot run without (a broker address...) is invalid input: exit 2 before the run."""
    for t in prepared.dag:
        problem = t.settings_problem(settings) if isinstance(t, Component) else None
        if problem:
            raise fail_invalid(f"{prepared.spec.name}: task {t.name!r}: {problem}")


def load_settings() -> Settings:
    try:
        settings = get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        key = "__".join(str(p) for p in first["loc"]).upper()
        secret = any(w in key for w in ("DSN", "TOKEN", "SECRET", "PASSWORD", "KEY", "CONNECTION_STRING", "URI"))
        got = "" if secret else f" (got {first.get('input')!r})"  # a malformed secret is still a secret
        raise fail_invalid(f"configuration {key}: {first['msg'].removeprefix('Value error, ')}{got}") from None
    configure_logging(settings.logging)
    return settings


def run_to_end(prepared: PreparedRun, settings: Settings, options: RunOptions, live: bool) -> RunResult:
    """Run with the view; a full disk that ends the run itself (the journal cannot be written) is one line.

    The crash arrives inside the task groups' exception groups, so it is looked for there: a bare
    ``except DiskFullError`` would miss it and print a traceback.
    """
    try:
        return anyio.run(run_with_view, prepared, settings, options, live)
    except BaseException as exc:
        full = disk_full_in(exc)
        if full is None:
            raise
        err.print(error_line(f"run {prepared.run_id}: {full}"), soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None


def disk_full_in(exc: BaseException) -> DiskFullError | None:
    """The first DiskFullError in ``exc`` or any exception group nested in it."""
    if isinstance(exc, DiskFullError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := disk_full_in(inner)) is not None:
                return found
    return None


async def run_with_view(prepared: PreparedRun, settings: Settings, options: RunOptions, live: bool) -> RunResult:
    if live:
        with RichProgress([t.name for t in prepared.dag]) as view:
            return await execute(prepared, settings, options, observers=[view])
    return await execute(prepared, settings, options, observers=[log_observer()])


def print_summary(prepared: PreparedRun, result: RunResult) -> None:
    data = result.to_dict()
    print_run_table(result.run_id, prepared.spec.name, data["state"], data["tasks"], summaries(prepared.dag, result))
    out.print(cell(f"report: {prepared.path / 'report.json'}"))
    if not result.ok and prepared.resumable:  # a one-shot command (verify, upload...) is simply run again
        out.print(cell(f"resume with: --resume {result.run_id}"))


def print_run_table(run_id: str, pipeline: str, state: str, tasks: dict[str, dict[str, Any]], sums: dict[str, dict[str, Any]]) -> None:
    """The end-of-run table from plain dicts, so ``runs show`` rebuilds it from report.json alone."""
    table = Table(title=cell(f"run {run_id} of {pipeline!r}: {state}"))
    for col in ("task", "state", "attempts", "seconds", "summary"):
        table.add_column(col)
    colours = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "skipped": "dim"}
    for name, t in tasks.items():
        t_state = str(t.get("state", "?"))
        shown = t_state + (" (resumed)" if t.get("resumed") else "")
        detail: Any = ", ".join(
            f"{k}={v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={v}" for k, v in (sums.get(name) or {}).items()
        )
        if t.get("error") and t_state != TaskState.SUCCEEDED.value:
            detail = t["error"]
        duration = t.get("duration")
        secs = f"{duration:.2f}" if isinstance(duration, int | float) else "-"
        table.add_row(cell(name), cell(shown, colours.get(t_state, "white")), cell(t.get("attempts", 0)), secs, cell(detail))
    out.print(table)


def exit_code(result: RunResult) -> int:
    if result.state is TaskState.CANCELLED:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED


def run_tasks(
    name: str,
    tasks: dict[str, Any],
    run_dir: Path | None,
    *,
    live: bool | None = None,
    summary: bool = True,
) -> tuple[PreparedRun, RunResult]:
    """Run a spec built in code exactly like a YAML file (validation, run dir, report, view, signals)."""
    settings = load_settings()
    options = RunOptions(run_dir=run_dir or settings.pipeline.run_dir)
    try:
        spec = PipelineSpec.model_validate({"name": name, "tasks": tasks})
        prepared = prepare_spec(spec, f"<{name}>", {}, options)
    except SpecError as exc:
        raise fail_prepare(exc) from None
    check_settings(prepared, settings)
    result = run_to_end(prepared, settings, options, sys.stderr.isatty() if live is None else live)
    if summary:
        print_summary(prepared, result)
    return prepared, result
