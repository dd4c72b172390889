"""The runs of a run directory as one line each: what ``runs list`` prints and ``serve`` shows.

Everything here reads report.json only (plus request.json and the lock of a run without a report),
never the journal, the pickled results or the pipeline file, so it works for old runs, for runs of
pipeline files that changed since, and for crashed or interrupted runs. A report that cannot be read is
listed as such, never a traceback. ``RunIndex`` keeps rows by the report's mtime and size, so a page
refreshing a directory of a thousand runs parses only what changed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.report_html import ReportError, load_report
from pipeline.run_events import alive_holder

__all__ = ["RUN_ID", "RunIndex", "RunRow", "list_runs", "request_pipeline"]

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # what a run directory's name may be to be served


@dataclass(slots=True)
class RunRow:
    """One line of ``runs list``: what a person scans for (newest first)."""

    id: str
    pipeline: str
    state: str
    started: float | None
    duration: float | None
    summary: str


def _one_line(report: dict[str, Any]) -> str:
    tasks = report["tasks"]
    counts: dict[str, int] = {}
    for t in tasks.values():
        counts[str(t.get("state"))] = counts.get(str(t.get("state")), 0) + 1
    text = f"{len(tasks)} tasks: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    failed = [(n, t) for n, t in tasks.items() if t.get("state") == "failed"]
    if failed:
        name, t = failed[0]
        error = str(t.get("error") or "").splitlines()[0] if t.get("error") else ""
        text += f"; {name}: {error[:80]}"
    elif report.get("reason") and report.get("state") != "succeeded":
        text += f"; {str(report['reason'])[:80]}"
    return text


def _row(path: Path) -> RunRow:
    try:
        report = load_report(path / "report.json")
    except ReportError as exc:
        missing = not (path / "report.json").exists()
        started = _mtime(path / "request.json") or _mtime(path)
        if missing and alive_holder(path) is not None:  # a live run writes its report at the end
            return RunRow(path.name, request_pipeline(path), "running", started, None, "running")
        state = "no report" if missing else "corrupt report"
        return RunRow(path.name, request_pipeline(path), state, started, None, str(exc).split(": ", 1)[-1])
    try:
        started = float(report["started_at"])
        ended = report.get("ended_at")
        duration = float(ended) - started if ended is not None else None
        return RunRow(
            path.name,
            str(report.get("pipeline") or report.get("dag") or "?"),
            str(report.get("state", "?")),
            started,
            duration,
            _one_line(report),
        )
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        return RunRow(path.name, "?", "corrupt report", _mtime(path), None, f"unexpected content ({exc!r})"[:100])


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def request_pipeline(path: Path) -> str:
    """A run without a readable report still names its pipeline file (request.json is written first)."""
    try:
        return Path(json.loads((path / "request.json").read_text())["file"]).stem
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def list_runs(run_dir: Path) -> list[RunRow]:
    """Every run directory (one holding request.json or report.json), newest first."""
    if not run_dir.is_dir():
        return []
    rows = [_row(p) for p in run_dir.iterdir() if p.is_dir() and ((p / "report.json").exists() or (p / "request.json").exists())]
    return sorted(rows, key=lambda r: (r.started or 0.0, r.id), reverse=True)


class RunIndex:
    """``list_runs`` with a cache: a row is re-read only when its report.json changed (or it has none)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._rows: dict[str, tuple[tuple[int, int], RunRow]] = {}

    def rows(self) -> list[RunRow]:
        if not self.run_dir.is_dir():
            return []
        seen: dict[str, tuple[tuple[int, int], RunRow]] = {}
        with os.scandir(self.run_dir) as entries:
            for entry in entries:
                if not RUN_ID.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                    continue  # a name a URL could not reach (or not text at all) is not listed
                path = Path(entry.path)
                try:
                    st = (path / "report.json").stat()
                    key = (st.st_mtime_ns, st.st_size)
                except OSError:
                    if (path / "request.json").exists():
                        seen[entry.name] = ((0, 0), _row(path))  # live or stopped short: always looked at again
                    continue
                cached = self._rows.get(entry.name)
                seen[entry.name] = cached if cached is not None and cached[0] == key else (key, _row(path))
        self._rows = seen
        rows = [self._live(r) for _, r in seen.values()]
        return sorted(rows, key=lambda r: (r.started or 0.0, r.id), reverse=True)

    def _live(self, row: RunRow) -> RunRow:
        """A run with a report that is running again (resumed) is running: its lock's holder says so."""
        if row.state != "running" and alive_holder(self.run_dir / row.id) is not None:
            return RunRow(row.id, row.pipeline, "running", row.started, None, "running (resumed)")
        return row
