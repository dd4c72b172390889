"""The daemon's execution: one claimed request -> one pipeline run in its own run directory -> its outcome.

The run id is fixed when the request is first accepted, so a takeover after a crash finds the same run
directory and resumes it (tasks that succeeded are not run again) instead of starting over. A fresh run
and a resumed one both start from the spec the intake resolved and checked (``Request.resolved``): the
pipeline file is not read again. An inline spec is written into the run directory as ``pipeline.yaml``:
the run's ``request.json`` points at it, so ``run_pipeline.py run pipeline.yaml --resume`` and ``runs
show`` work on daemon runs as on any other.

The order of one request's end never varies: ledger first, then the final event (acknowledged by the
broker), then the offset; a crash between any two re-delivers it, and the ledger makes that harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import structlog
import yaml

from dag_orchestrator.events import Event, EventKind
from dag_orchestrator.task import RetryPolicy
from pipeline.daemon.outcome import Ending, Outcome, RunReport
from pipeline.daemon.policy import check_request
from pipeline.daemon.requests import BadRequest
from pipeline.runner import PreparedRun, RunDirBusy, RunOptions, execute, innermost, prepare_spec, summaries
from pipeline.spec import SpecError

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from config.settings import Settings
    from dag_orchestrator.state import RunResult
    from pipeline.daemon.http import DaemonMetrics
    from pipeline.daemon.ledger import Ledger, LedgerRow
    from pipeline.daemon.state import Board, Request
    from pipeline.daemon.status import StatusPublisher

__all__ = ["TASK_EVENTS", "Execution", "Prepared", "outcome_of", "prepare_request"]

log = structlog.get_logger("pipeline.daemon")
# a request whose claim or end the ledger or broker did not take: back in the queue after this backoff
UNRECORDED_RETRY = RetryPolicy(attempts=1000, backoff=5.0, factor=2.0, max_delay=60.0)

# Executor events told on the status topic (progress ticks are not: they would flood it).
TASK_EVENTS = {
    EventKind.TASK_STARTED: "started",
    EventKind.TASK_RETRYING: "retrying",
    EventKind.TASK_SUCCEEDED: "succeeded",
    EventKind.TASK_FAILED: "failed",
    EventKind.TASK_CANCELLED: "cancelled",
    EventKind.TASK_SKIPPED: "skipped",
    EventKind.TASK_RESUMED: "resumed",
}


# a claimed request ready to run: its row, its prepared run, when it started, its time cap, its deadline
Ready = tuple["LedgerRow", "Prepared", float, float, "float | None"]


@dataclass(slots=True)
class Prepared:
    run: PreparedRun
    options: RunOptions
    resumed: bool


def prepare_request(request: Request, run_id: str, settings: Settings) -> Prepared:
    """Lock the run directory and set the run up, fresh or (if the directory already has a run) resumed,
    from the resolved spec; raises SpecError/RunDirBusy, or BadRequest if the daemon's trust settings refuse
    it in its real run directory (the intake checked it against a run directory of the same shape)."""
    message, resolved, p = request.message, request.resolved, settings.pipeline
    path = p.run_dir / run_id
    resumed = (path / "request.json").is_file()
    file = resolved.file
    if file is None:  # inline spec: keep it with the run, so the run can be resumed and reported alone
        file = path / "pipeline.yaml"
        if not resumed:
            path.mkdir(parents=True, exist_ok=True)
            file.write_text(yaml.safe_dump(message.pipeline, sort_keys=False), encoding="utf-8")
    check_request(message, resolved.dag, settings, path)
    # PIPELINE__BACKEND=dask: runs use the cluster
    options = RunOptions(run_dir=p.run_dir, resume=run_id if resumed else None, backend=p.backend, scheduler=p.scheduler)
    # the intake's DAG serves the first run; a request prepared again in this process (its end was not
    # recorded) gets fresh task objects, as a resume in a new process would
    dag = resolved.dag if request.prepared == 0 else None
    run = prepare_spec(resolved.spec, file, message.params, options, run_id, path, dag=dag)
    request.prepared += 1
    return Prepared(run, options, resumed)


def outcome_of(prepared: Prepared, result: RunResult, started: float) -> Outcome:
    """A run that reached its end: state, why, per-task states, the summary."""
    data = result.to_dict()
    report = RunReport(
        pipeline=prepared.run.spec.name,
        tasks={name: t.get("state") for name, t in data["tasks"].items()},
        summary=summaries(prepared.run.dag, result),
        seconds=round(time.time() - started, 3),
        resumed=prepared.resumed,
        report=str(prepared.run.path / "report.json"),
    )
    if result.ok:
        return Outcome(Ending.SUCCEEDED, result.run_id, None, report)
    return Outcome(Ending.FAILED, result.run_id, data.get("reason") or _first_error(data), report)


def _first_error(data: dict[str, dict[str, dict[str, str | None]]]) -> str | None:
    for name, t in data["tasks"].items():
        if t.get("error"):
            return f"task {name!r}: {t['error']}"
    return None


class Execution:
    """The run side: claim a request's lease, run it (or refuse it), record how it ended."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        board: Board,
        metrics: DaemonMetrics,
        status: StatusPublisher,
        tasks: TaskGroup,
    ) -> None:
        self.settings, self.d, self.ledger, self.board = settings, settings.daemon, ledger, board
        self.metrics, self.status, self.tasks = metrics, status, tasks

    def start(self, request: Request) -> None:
        """Give the request a run slot now (the caller checked there is one)."""
        self.board.running[request.id] = request
        self.metrics.runs_active.set(len(self.board.running))
        self.tasks.start_soon(self._serve, request)

    async def _serve(self, request: Request) -> None:
        board, rid = self.board, request.id
        requeue = 0.0
        try:
            requeue = await self._claim_and_run(request)
        except Exception as exc:  # noqa: BLE001 - the ledger or broker failed: not recorded, so try again later
            log.error("request not recorded; will retry", request_id=rid, error=f"{type(exc).__name__}: {exc}")
            request.unrecorded += 1
            requeue = UNRECORDED_RETRY.delay(min(request.unrecorded, UNRECORDED_RETRY.attempts))
        finally:
            self._free(request)
        if requeue and not board.stopping:
            with anyio.move_on_after(requeue):  # a stop ends the wait: the request stays for the next daemon
                await board.stopped.wait()
            if board.ours(request.mark) and not board.stopping:
                board.queue(request)
                return
        if requeue:
            board.drop(request)

    def _free(self, request: Request) -> None:
        if self.board.running.get(request.id) is request:
            del self.board.running[request.id]
            self.metrics.runs_active.set(len(self.board.running))
        self.board.wake()

    async def _claim_and_run(self, request: Request) -> float:
        """Run the request if it is ours to run; returns seconds to wait before trying it again (0: done).

        From the moment it holds a run slot until its pipeline starts, a stop interrupts it (``request.scope``):
        a request still being claimed or prepared when the daemon stops never starts its pipeline."""
        d = self.d
        got: float | Ready = 0.0
        with anyio.CancelScope() as early:
            request.scope, request.starting = early, True
            if self.board.stopping:
                early.cancel()
            got = await self._claim_and_prepare(request)
        request.scope, request.starting = None, False
        if isinstance(got, float):
            return got
        row, prepared, started, cap, deadline = got
        if early.cancel_called or request.interrupted or self.board.stopping:  # (no await since: nothing started)
            if prepared.run.lock is not None:
                prepared.run.lock.release()
            await self._unclaim(request)
            return 0.0
        outcome = await self._run(request, row, prepared, started, min(cap, deadline or cap))
        if outcome is None:
            why = f"the run exceeded the daemon's maximum run time {d.max_run_seconds:g} s (DAEMON__MAX_RUN_SECONDS)"
            if deadline is not None and deadline <= cap:
                why = f"deadline {request.message.deadline} exceeded"
            outcome = Outcome.failed(row.run_id, why)
        await self._record(request, row.attempts, outcome)
        return 0.0

    async def _unclaim(self, request: Request) -> None:
        """Stopped before its pipeline started: give the claim back (no lease for the next daemon to wait out),
        its attempt not counted unless a pipeline already ran under it here; the offset stays, so the next daemon
        runs it."""
        request.interrupted = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            try:
                await self.ledger.unclaim(request.id, self.board.owner, uncount=request.id not in self.board.ran)
            except Exception as exc:  # noqa: BLE001 - the lease lapses on its own
                log.warning("claim not given back", request_id=request.id, error=f"{type(exc).__name__}: {exc}")
        log.info("request interrupted before it started", request_id=request.id)

    async def _claim_and_prepare(self, request: Request) -> float | Ready:
        """The claim and the run's set-up: a delay to retry after (0: done), or what the run needs.
        Cancelled by a stop (a claim already written is given back by the caller)."""
        d, rid = self.d, request.id
        claim, request.claim = request.claim, None
        if claim is not None and time.monotonic() - request.claimed_at > d.lease_seconds:
            claim = None  # it waited longer than a lease: if renewals failed, another daemon may hold it now
        try:
            if claim is None:  # (else claimed with its acceptance) told here already: the claim records it too
                claim = await self.ledger.claim(
                    rid, self.board.owner, d.lease_seconds, announced=rid in self.board.told, rerun=rid in self.board.ran
                )
            await anyio.lowlevel.checkpoint_if_cancelled()  # a stop before the set-up: no run directory made
        except anyio.get_cancelled_exc_class():
            await self._unclaim(request)  # the claim may have been written before the stop cut it short
            raise
        if claim.verdict == "busy":  # another live daemon runs it (a partition moved): wait for its lease
            return d.lease_seconds / 2
        row = claim.row
        if claim.verdict == "finished":
            await self.status.replay(rid, row, request.message.reply_topic)
            self.board.release(request)
            return 0.0
        try:
            return await self._prepare(request, row)
        except anyio.get_cancelled_exc_class():
            await self._unclaim(request)
            raise

    async def _prepare(self, request: Request, row: LedgerRow) -> float | Ready:
        """Refuse it (limits), or lock its run directory and set the run up; a delay or 0 as for the claim."""
        d = self.d
        started = time.time()
        deadline = request.message.deadline_ts()
        # the daemon's own limit, whatever the sender asked for, counted from the first start (resumes included)
        cap = started - row.ran_for + d.max_run_seconds
        refusal = self._refusal(row, started, cap, deadline)
        if refusal is not None:
            await self._told(request, row)
            await self._record(request, row.attempts, Outcome.failed(row.run_id, refusal))
            return 0.0
        # A fresh run is prepared while "accepted" is still on its way (no await in between: nothing can cancel
        # it half-way); a resume waits, since it reads its files in a thread.
        fresh = not (self.settings.pipeline.run_dir / row.run_id / "request.json").is_file()
        if not fresh:
            await self._told(request, row)
        prepared, failure = None, None
        try:
            if fresh:  # a few small file operations: a worker thread would wait for the GIL behind this loop
                prepared = prepare_request(request, row.run_id, self.settings)
            else:  # shielded: a stop must not lose the run lock the thread takes (the caller checks the stop)
                with anyio.CancelScope(shield=True):
                    prepared = await anyio.to_thread.run_sync(prepare_request, request, row.run_id, self.settings)
        except (RunDirBusy, SpecError, BadRequest) as exc:
            failure = exc
        if fresh:
            try:
                await self._told(request, row)
            except BaseException:
                if prepared is not None and prepared.run.lock is not None:
                    prepared.run.lock.release()
                raise
        if isinstance(failure, RunDirBusy):
            return d.lease_seconds / 2
        if failure is not None or prepared is None:  # e.g. the pipeline's files changed since it was checked
            reason = f"forbidden: {failure}" if isinstance(failure, BadRequest) else str(failure)
            await self._record(request, row.attempts, Outcome.failed(row.run_id, reason))
            return 0.0
        return row, prepared, started, cap, deadline

    def _refusal(self, row: LedgerRow, started: float, cap: float, deadline: float | None) -> str | None:
        """Why the claimed request is failed without a run, if it is."""
        d = self.d
        if row.attempts > d.max_attempts:  # e.g. a request whose run kills the daemon: never claimed for ever
            return (
                f"claimed {row.attempts} times (DAEMON__MAX_ATTEMPTS={d.max_attempts}): each earlier attempt "
                "was interrupted or its daemon died; not run again"
            )
        if started >= cap:
            return f"the run exceeded the daemon's maximum run time {d.max_run_seconds:g} s (DAEMON__MAX_RUN_SECONDS)"
        if deadline is not None and started >= deadline:
            return "the deadline passed before the run could start"
        return None

    async def _run(self, request: Request, row: LedgerRow, prepared: Prepared, started: float, ends_by: float) -> Outcome | None:
        """The pipeline run; None if it ran out of time (a stop's interruption is an ``interrupted`` outcome)."""
        message = request.message
        self.status.emit(
            request.id,
            "started",
            attempt=row.attempts,
            reply_topic=message.reply_topic,
            run_id=row.run_id,
            resumed=prepared.resumed,
            pipeline=prepared.run.spec.name,
        )
        if request.timestamp:
            self.metrics.request_to_start.observe(max(0.0, started - request.timestamp))
        observe = self._observer(request, row.attempts, prepared)
        with anyio.CancelScope(deadline=anyio.current_time() + (ends_by - time.time())) as scope:
            request.scope = scope  # (set with no await since the stop was last checked)
            self.board.ran.add(request.id)
            try:
                result = await execute(prepared.run, self.settings, prepared.options, observers=[observe], handle_signals=False)
            except anyio.get_cancelled_exc_class():
                if not scope.cancel_called:
                    raise
            except BaseException as exc:  # a task crashed its run (SystemExit, its own BaseException...):
                crash = innermost(exc)  # that is this request's outcome, not the daemon's end
                if isinstance(crash, anyio.get_cancelled_exc_class()):
                    raise
                return Outcome.failed(row.run_id, f"the run crashed: {type(crash).__name__}: {crash}")
            else:
                return outcome_of(prepared, result, started)
        return Outcome.interrupted(row.run_id) if request.interrupted else None

    async def _told(self, request: Request, row: LedgerRow) -> None:
        """Before "started": the story's "accepted" is on the topic and the ledger knows (else a takeover after a
        crash would tell "accepted" again, after this attempt's "started")."""
        board, rid, message = self.board, request.id, request.message
        announcing = board.announcing.get(rid)
        if announcing is not None:  # our own "accepted" is still on its way
            await announcing.wait()
        failed_here = rid in board.announce_failed
        board.announce_failed.discard(rid)
        if failed_here or (not row.announced and rid not in board.told):  # never reached the broker
            await self.status.emit_acked(
                rid, "accepted", attempt=0, reply_topic=message.reply_topic, run_id=row.run_id, priority=message.priority, retold=True
            )()
            await self.ledger.announce(rid)
        elif not row.announced:  # told after the claim was written
            await self.ledger.announce(rid)

    def _observer(self, request: Request, attempt: int, prepared: Prepared) -> Callable[[Event], None]:
        emit, message = self.status.emit, request.message
        named = request.resolved.file is not None  # inline specs name their own tasks: one label for all, or a
        pipeline = prepared.run.spec.name if named else "inline"  # sender could grow /metrics without bound
        seconds, began = self.metrics.task_seconds, {}

        def observe(event: Event) -> None:
            state = TASK_EVENTS.get(event.kind)
            if state is None or event.task is None:
                return
            emit(
                message.request_id,
                "task",
                attempt=attempt,
                reply_topic=message.reply_topic,
                task=event.task,
                state=state,
                error=event.error,
                task_attempt=event.attempt,
            )
            if event.kind is EventKind.TASK_STARTED:
                began[event.task] = event.at
            elif event.kind in (EventKind.TASK_SUCCEEDED, EventKind.TASK_FAILED) and event.task in began:
                task = event.task if named else "inline"
                seconds.labels(pipeline, task, state).observe(event.at - began.pop(event.task))

        return observe

    async def _record(self, request: Request, attempt: int, outcome: Outcome) -> None:
        """Ledger first, then the final event (acknowledged), then the offset: in that order, or not at all."""
        board, rid = self.board, request.id
        recorded = await self.ledger.finish(rid, board.owner, outcome.ending.value, outcome.stored())
        if recorded:
            # the pipeline is over and recorded: its slot may run the next request while the broker acknowledges
            self._free(request)
            board.side += 1  # (shutdown waits for it like for a dead letter)
            try:
                await self.status.emit_final(
                    rid, outcome.ending.value, attempt=attempt, reply_topic=request.message.reply_topic, **outcome.told()
                )
            finally:
                board.side -= 1
                board.wake()
            if outcome.ending.is_final:
                self.metrics.runs.labels(outcome.ending.value).inc()
        else:  # our lease lapsed and another daemon claimed it: its outcome is the one that counts
            log.warning("request taken over by another daemon; outcome not recorded", request_id=rid)
        if outcome.ending.is_final:  # (an interrupted request's offset stays: the next daemon resumes it)
            board.release(request)
