"""One claimed request -> one pipeline run in its own run directory, fresh or resumed, -> its outcome.

The run id is fixed when the request is first accepted, so a takeover after a crash finds the same run
directory and resumes it (tasks that succeeded are not run again) instead of starting over. An inline
spec is written into the run directory as ``pipeline.yaml``: the run's ``request.json`` points at it, so
``run_pipeline.py run pipeline.yaml --resume`` and ``runs show`` work on daemon runs as on any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from config.settings import Settings
from dag_orchestrator.events import Event, EventKind
from dag_orchestrator.state import RunResult
from pipeline.daemon.policy import check_request
from pipeline.daemon.requests import BadRequest, Resolved, RunRequest
from pipeline.runner import PreparedRun, RunOptions, execute, prepare_run, prepare_spec, summaries

__all__ = ["TASK_EVENTS", "Prepared", "outcome_of", "prepare_request", "run_prepared"]

# Executor events told on the status topic (progress ticks are not: they would flood it).
TASK_EVENTS = {
    EventKind.TASK_STARTED: "started", EventKind.TASK_RETRYING: "retrying", EventKind.TASK_SUCCEEDED: "succeeded",
    EventKind.TASK_FAILED: "failed", EventKind.TASK_CANCELLED: "cancelled", EventKind.TASK_SKIPPED: "skipped",
    EventKind.TASK_RESUMED: "resumed",
}  # fmt: skip


@dataclass(slots=True)
class Prepared:
    run: PreparedRun
    options: RunOptions
    resumed: bool


def prepare_request(request: RunRequest, resolved: Resolved, run_id: str, settings: Settings) -> Prepared:
    """Build (or, if the run directory already has a run, resume) the run; raises SpecError/RunDirBusy, or
    BadRequest if the daemon's trust settings refuse it in its real run directory (checked again here: the
    intake checked it against a run directory of the same shape, and a resumed run's spec comes from disk)."""
    run_dir, p = settings.pipeline.run_dir, settings.pipeline
    where = {"backend": p.backend, "scheduler": p.scheduler}  # PIPELINE__BACKEND=dask: runs use the cluster
    path = run_dir / run_id
    resumed = (path / "request.json").is_file()
    file = resolved.file
    if file is None:  # inline spec: keep it with the run, so the run can be resumed and reported alone
        file = path / "pipeline.yaml"
        if not resumed:
            path.mkdir(parents=True, exist_ok=True)
            file.write_text(yaml.safe_dump(request.pipeline, sort_keys=False), encoding="utf-8")
    if resumed:
        options = RunOptions(run_dir=run_dir, resume=run_id, **where)
        run = prepare_run(file, {}, options)
        try:
            check_request(request, run.dag, settings, path)
        except BadRequest:
            if run.lock is not None:
                run.lock.release()
            raise
        return Prepared(run, options, True)
    check_request(request, resolved.dag, settings, path)
    options = RunOptions(run_dir=run_dir, **where)
    return Prepared(prepare_spec(resolved.spec, file, request.params, options, run_id, path), options, False)


async def run_prepared(prepared: Prepared, settings: Settings, observe: Callable[[Event], None]) -> RunResult:
    return await execute(prepared.run, settings, prepared.options, observers=[observe], handle_signals=False)


def outcome_of(prepared: Prepared, result: RunResult, started: float) -> dict[str, Any]:
    """What the ledger keeps and the final status event says: state, why, per-task states, the summary."""
    data = result.to_dict()
    return {
        "event": "succeeded" if result.ok else "failed",
        "run_id": result.run_id,
        "pipeline": prepared.run.spec.name,
        "reason": None if result.ok else (data.get("reason") or _first_error(data)),
        "tasks": {name: t.get("state") for name, t in data["tasks"].items()},
        "summary": summaries(prepared.run.dag, result),
        "seconds": round(time.time() - started, 3),
        "resumed": prepared.resumed,
        "report": str(prepared.run.path / "report.json"),
    }


def _first_error(data: dict[str, Any]) -> str | None:
    for name, t in data["tasks"].items():
        if t.get("error"):
            return f"task {name!r}: {t['error']}"
    return None
