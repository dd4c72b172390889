"""The base of every registered component: a Task configured by a validated pydantic model.

A component declares its parameter model (``Params``), its registry name, whether it emits a chunk
stream, whether it consumes the streams of the needs that emit one, and its typed contract: the
``Result`` type its run returns and the input types it must find among its needs (``needs_types``,
from ``task_components.contracts``). Components find inputs by type, not by task name, so the
registry can check a pipeline's wiring when the DAG is built (``wiring_errors``) and ``validate``
rejects a task that cannot find its input before anything runs. The engine only sees a plain Task.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.retry import INNER_RETRY
from dag_orchestrator.task import RetryPolicy, Task

T = TypeVar("T")
P = TypeVar("P", bound=BaseModel)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(Task, Generic[P]):
    """``Component[MyParams]``: ``self.params`` is a ``MyParams`` to the type checker (``Params = MyParams``)."""

    __slots__ = ("params",)

    component: ClassVar[str]
    summary: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    default_kind: ClassVar[str] = "default"
    emits: ClassVar[bool] = False  # calls ctx.emit(chunk)
    stream_input: ClassVar[bool] = False  # reads the streams of its stream-emitting needs
    Result: ClassVar[type | None] = None  # what run() returns; None: not declared (accepted anywhere)
    # retries its failing operations itself (per file, batch, job): a stream task's declared retries apply
    retries_inside: ClassVar[bool] = False
    # each entry: one input the task must find among its needs; a tuple lists acceptable alternatives
    needs_types: ClassVar[tuple[type | tuple[type, ...], ...]] = ()

    def __init__(
        self,
        name: str,
        params: P | None = None,
        needs: Sequence[str] = (),
        *,
        streams_from: Sequence[str] = (),
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(
            name,
            needs,
            retry=retry,
            timeout=timeout,
            kind=kind or self.default_kind,
            streams_from=streams_from,
            emits_stream=self.emits,
        )
        self.params: P = params if params is not None else cast(P, self.Params())

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """``class X(Component[XParams])`` is enough: ``Params`` is taken from the type argument unless set.

        A type argument that is not a pydantic model, or a ``Params`` that is not the type argument (or
        a subclass of it), is a TypeError here: otherwise ``self.params`` is not what the checker was told.
        A class without a ``component`` name is named by its class (a user's unregistered component).
        """
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "component", None), str):
            cls.component = cls.__qualname__
        for base in cls.__dict__.get("__orig_bases__", ()):
            origin, args = get_origin(base), get_args(base)
            if not (isinstance(origin, type) and issubclass(origin, Component) and args):
                continue
            arg = args[0]
            if isinstance(arg, TypeVar):
                return  # still generic (``class Configured(Component[P])``)
            if not (isinstance(arg, type) and not get_args(arg) and issubclass(arg, BaseModel)):
                raise TypeError(
                    f"{cls.__qualname__}: Component[{getattr(arg, '__name__', arg)!s}] needs a pydantic "
                    "model (a BaseModel subclass) as its parameter type"
                )
            declared = cls.__dict__.get("Params")
            if declared is None:
                cls.Params = arg
            elif not (isinstance(declared, type) and issubclass(declared, arg)):
                raise TypeError(
                    f"{cls.__qualname__}: Params = {getattr(declared, '__name__', declared)!s} but the "
                    f"class is Component[{arg.__name__}]; declare one (or a subclass of it)"
                )
            return

    def inner_retry(self) -> RetryPolicy:
        """The policy for retrying one operation inside the task: the declared one when it allows more."""
        return self.retry if self.retry.attempts > INNER_RETRY.attempts else INNER_RETRY

    def required_inputs(self) -> list[tuple[type, ...]]:
        """The inputs this configured task needs (parameters may add or drop one: override to say so)."""
        return [t if isinstance(t, tuple) else (t,) for t in self.needs_types]

    def upstream(self, ctx: PipelineContext, kind: type[T]) -> T | None:
        """The result of the first need whose result is a ``kind`` (tasks find inputs by type, not name)."""
        for need in self.needs:
            if need in self.streams_from and need not in ctx.results:
                continue  # a producer this task streams from has no result until its stream ends
            result = ctx.result(need)
            if isinstance(result, kind):
                return result
        return None

    def settings_problem(self, settings: Any) -> str | None:
        """What is missing from the configuration for this task to run (checked before a run: exit 2)."""
        return None

    def summarize(self, result: Any) -> dict[str, Any]:
        """A few figures for the run summary and report (rows, files...); empty by default."""
        return {}

    def needs_problem(self, tasks: dict[str, Task]) -> str | None:
        """What is wrong with this task's needs beyond their result types (e.g. a dataset table whose
        foreign-key parents are not among its needs); checked when the DAG is built, so exit 2."""
        return None


class ConfiguredComponent(Component[P]):
    """A component whose result is its validated configuration wrapped in ``Result`` (streaming stages and
    sinks: the source task drives them, so their own run only hands that object over)."""

    __slots__ = ()

    async def run(self, ctx: PipelineContext) -> Any:
        assert self.Result is not None, f"{type(self).__name__} declares no Result"
        return self.Result(self.params)


def _names(types: Iterable[type]) -> str:
    return " or ".join(t.__name__ for t in types)


def wiring_errors(tasks: dict[str, Task]) -> list[tuple[str, str]]:
    """(task, message) for every Component whose needs produce none of a required input type.

    A need whose class declares no ``Result`` (a plain Task or an undeclared plugin) could produce
    anything, so it satisfies any requirement: the check only rejects what is certainly wrong.
    """
    problems: list[tuple[str, str]] = []
    for name, task in tasks.items():
        if not isinstance(task, Component):
            continue
        produced = {n: getattr(tasks.get(n), "Result", None) for n in task.needs}
        for wanted in task.required_inputs():
            if any(r is None or issubclass(r, wanted) for r in produced.values()):
                continue
            got = ", ".join(f"{n} -> {r.__name__}" for n, r in produced.items() if r is not None) or "no needs"
            problems.append((name, f"needs a task producing {_names(wanted)} among its needs (has: {got})"))
        problem = task.needs_problem(tasks)
        if problem:
            problems.append((name, problem))
    return problems


def retry_warnings(tasks: dict[str, Task]) -> list[tuple[str, str]]:
    """(task, message) where a declared ``retries:`` cannot apply: a stream task that retries nothing inside.

    The executor does not re-run a stream consumer after it has read, nor a producer after it has
    emitted, so for those a declared retry only helps before the first chunk.
    """
    out: list[tuple[str, str]] = []
    for name, task in tasks.items():
        streams = bool(task.streams_from) or task.emits_stream
        if streams and task.retry.attempts > 1 and not getattr(task, "retries_inside", False):
            out.append(
                (
                    name,
                    "declares retries but streams: it is not re-run once data has flowed, and it "
                    "retries nothing inside, so the retries only cover a failure before the first chunk",
                )
            )
    return out
