"""Task primitives: what a unit of work is, and how it may be retried.

This module needs nothing else from the package (as Hamilton keeps ``node.py`` apart), so every other
module can depend on it without cycles: ``>>`` reaches the DAG open in a ``with DAG(...)`` block through
``active_dag``, a context variable defined here and set by the DAG, not by importing dag.py.
A Task carries only its declaration (name, needs, policies); what changes while a run is in flight
lives in the executor's per-run scheduler and ``TaskRun`` records.
``a >> b`` appends ``a`` to ``b.needs``, so a task's needs are the one source of its edges.
"""

from __future__ import annotations

import contextvars
import inspect
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["FunctionTask", "RetryPolicy", "Task", "TaskLike", "active_dag", "task"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failed task is tried again, and how long to wait between tries.

    The delay before retry ``n`` (1-based) is ``backoff * factor**(n-1)`` capped at ``max_delay``, then
    stretched by up to ``jitter`` (a fraction) so that many retrying tasks do not hit a service in
    lockstep. Jitter only ever lengthens a delay, so delays keep growing whenever ``factor > 1 + jitter``.
    Only exceptions that are instances of ``retry_on`` are retried; anything else fails at once.
    """

    attempts: int = 1
    backoff: float = 0.5
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.factor < 1 or self.jitter < 0:
            raise ValueError("RetryPolicy needs backoff >= 0, factor >= 1 and jitter >= 0")

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """``attempt`` is the number of the try that just failed (1-based)."""
        return attempt < self.attempts and isinstance(error, self.retry_on)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        try:
            grown = self.backoff * self.factor ** (attempt - 1)
        except OverflowError:  # a retry-forever loop reaches attempt ~1025 at factor 2: the cap applies long before
            grown = self.max_delay
        base = min(self.max_delay, grown)
        spread = (rng or random).random() * self.jitter
        return base * (1.0 + spread)


NO_RETRY = RetryPolicy()


class TaskLike(Protocol):
    name: str
    needs: tuple[str, ...]


class Composer(Protocol):
    """What ``>>`` needs of the DAG being composed (the DAG class, seen without importing it)."""

    def connect(self, upstream: Task, downstream: Task | Sequence[Task]) -> None: ...


active_dag: contextvars.ContextVar[Composer | None] = contextvars.ContextVar("active_dag", default=None)


def _composing(for_task: Task) -> Composer:
    dag = active_dag.get()
    if dag is None:
        raise RuntimeError(f"'>>' on task {for_task.name!r} needs an active DAG: use it inside 'with DAG(name) as dag:'")
    return dag


class Task:
    """A named unit of async work in a DAG.

    Subclasses implement ``run(ctx)``. ``needs`` names upstream tasks whose results this one reads;
    ``streams_from`` is the subset of ``needs`` whose chunk *stream* it consumes while they still run
    (such a task starts together with its producers). ``emits_stream`` marks a producer: it calls
    ``await ctx.emit(chunk)`` and its consumers read ``ctx.stream(name)``. ``kind`` groups tasks for
    per-kind concurrency limits (e.g. at most 2 ``milvus`` tasks at once).
    """

    __slots__ = ("emits_stream", "kind", "name", "needs", "retry", "streams_from", "timeout")
    stream_spill = False  # a consumer that must not slow its producer: its lag waits on disk (streams.Spill)
    # a consumer that can read a finished producer's result instead of its stream: a resumed run does not
    # re-run the producer (and everything it streams from) just to feed this task again
    stream_replay = False

    def __init__(
        self,
        name: str,
        needs: Sequence[str] = (),
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        kind: str = "default",
        streams_from: Sequence[str] = (),
        emits_stream: bool = False,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"a task needs a non-empty string name, got {name!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"task {name!r}: timeout must be positive, got {timeout}")
        missing = [s for s in streams_from if s not in needs]
        if missing:
            raise ValueError(f"task {name!r}: streams_from {missing} must also be listed in needs")
        self.name = name
        self.needs = tuple(dict.fromkeys(needs))
        self.retry = retry or NO_RETRY
        self.timeout = timeout
        self.kind = kind
        self.streams_from = tuple(streams_from)
        self.emits_stream = emits_stream

    async def run(self, ctx: Any) -> Any:
        raise NotImplementedError(f"task {self.name!r} ({type(self).__name__}) does not implement run()")

    def __rshift__(self, other: Task | Sequence[Task]) -> Task | Sequence[Task]:
        _composing(self).connect(self, other)
        return other

    def __rrshift__(self, other: Sequence[Task]) -> Task:
        dag = _composing(self)
        for upstream in other:
            dag.connect(upstream, self)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, needs={list(self.needs)})"


TaskFn = Callable[..., Awaitable[Any]]


class FunctionTask(Task):
    """A Task made from an async function by ``@task``; the function receives the context."""

    __slots__ = ("fn",)

    def __init__(self, fn: TaskFn, name: str, **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@task needs an async function, {fn.__qualname__} is not one")
        super().__init__(name, **kwargs)
        self.fn = fn

    async def run(self, ctx: Any) -> Any:
        return await self.fn(ctx)


def task(
    fn: TaskFn | None = None,
    *,
    name: str | None = None,
    needs: Sequence[str] = (),
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    kind: str = "default",
    streams_from: Sequence[str] = (),
    emits_stream: bool = False,
) -> Any:
    """Turn ``async def f(ctx)`` into a Task, so composition reads like plain Python.

    Usable bare (``@task``) or with options (``@task(needs=["a"], retry=RetryPolicy(3))``).
    """

    def wrap(f: TaskFn) -> FunctionTask:
        return FunctionTask(
            f,
            name or f.__name__,
            needs=needs,
            retry=retry,
            timeout=timeout,
            kind=kind,
            streams_from=streams_from,
            emits_stream=emits_stream,
        )

    return wrap(fn) if fn is not None else wrap
