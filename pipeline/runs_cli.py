"""Looking at runs after the fact: ``report RUN_ID``, ``runs list``, ``runs show RUN_ID``.

Everything here reads report.json only (never the journal, the pickled results or the pipeline file),
so it works for old runs, for runs of pipeline files that changed since, and for crashed or interrupted
runs. Listing reads each report once and parses nothing else, which keeps ``runs list`` fast on a run
directory with many runs; a report that cannot be read is listed as such, never a traceback.
"""

from __future__ import annotations

import json
import time
import webbrowser
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipeline.cli_common import RunDirOpt, app, cell, fail_invalid, out, print_run_table
from pipeline.report_html import ReportError, load_report, write_html
from pipeline.run_index import RunRow, list_runs

__all__ = ["RunRow", "list_runs"]  # re-exported: their home is pipeline/run_index.py

runs_app = typer.Typer(help="List finished, failed and interrupted runs, or show one.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

RunIdArg = Annotated[str, typer.Argument(help="the run's id (its directory name under the run dir)")]


def _run_dir(run_dir: Path | None) -> Path:
    if run_dir is not None:
        return run_dir
    from pipeline.cli_common import load_settings

    return load_settings().pipeline.run_dir


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _report_of(run_id: str, run_dir: Path | None) -> tuple[Path, dict[str, Any]]:
    base = _run_dir(run_dir)
    path = base / run_id
    if not run_id or "/" in run_id or run_id in (".", "..") or not path.is_dir():
        raise fail_invalid(f"no run {run_id!r} in {base}")
    try:
        return path, load_report(path / "report.json")
    except ReportError as exc:
        raise fail_invalid(str(exc)) from None


@app.command()
def report(
    run_id: RunIdArg,
    run_dir: RunDirOpt = None,
    open_: Annotated[bool, typer.Option("--open", help="open the page in the default browser")] = False,
) -> None:
    """(Re)build a run's self-contained report.html from its report.json."""
    path, data = _report_of(run_id, run_dir)
    try:
        target = write_html(path, data)
    except OSError as exc:
        raise fail_invalid(f"cannot write {path / 'report.html'}: {exc.strerror or exc}") from None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise fail_invalid(f"{path / 'report.json'}: unexpected content ({type(exc).__name__}: {exc})") from None
    out.print(cell(f"report: {target}"))
    if open_:
        webbrowser.open(target.resolve().as_uri())


@runs_app.command("list")
def runs_list(
    run_dir: RunDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON array instead of a table")] = False,
) -> None:
    """List runs, newest first: id, pipeline, state, start, duration and a one-line summary."""
    rows = list_runs(_run_dir(run_dir))
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    table = Table(title=cell(f"{len(rows)} runs in {_run_dir(run_dir)}"))
    for col in ("id", "pipeline", "state", "started", "seconds", "summary"):
        table.add_column(col)
    colours = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}
    for r in rows:
        secs = f"{r.duration:.2f}" if r.duration is not None else "-"
        state = cell(r.state, colours.get(r.state, "magenta"))  # read from report.json: not ours
        table.add_row(cell(r.id), cell(r.pipeline), state, _when(r.started), secs, cell(r.summary))
    out.print(table)


@runs_app.command("show")
def runs_show(run_id: RunIdArg, run_dir: RunDirOpt = None) -> None:
    """The table the run printed at its end, rebuilt from its report.json."""
    path, data = _report_of(run_id, run_dir)
    try:
        print_run_table(
            str(data.get("run_id", run_id)),
            str(data.get("pipeline") or data.get("dag") or "?"),
            str(data.get("state", "?")),
            data["tasks"],
            data.get("summary") or {},
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise fail_invalid(f"{path / 'report.json'}: unexpected content ({type(exc).__name__}: {exc})") from None
    out.print(cell(f"report: {path / 'report.json'}"))
    if (path / "report.html").exists():
        out.print(cell(f"page:   {path / 'report.html'}"))
