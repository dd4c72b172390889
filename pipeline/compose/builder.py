"""Composing a pipeline in Python: steps, handles that make the edges, and every check before a run.

A ``Pipeline`` records steps; nothing is instantiated or checked against another step until
``build()``, so steps may name needs declared later (the YAML front end does) and ``build()`` runs
every check in one order, whichever front end composed the pipeline: each need is a step, parameters
validate against the component's model, no cycle, streams are possible, each task finds the input
types it declares among its needs (``wiring_errors``) and, given settings, what the configuration
lacks (``settings_problem``). The first problem is raised as one ``PipelineError``.

Passing a step's handle to another step is the edge (Dask's delayed, Hamilton's parameter names);
whether that edge carries a stream is decided here and only here (``stream_inputs``): the consumer
reads streams and the producer emits one.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from dag_orchestrator.dag import DAG, DAGValidationError
from dag_orchestrator.executor import FailurePolicy
from dag_orchestrator.task import FunctionTask, RetryPolicy, Task
from pipeline.compose.catalog import component_class
from pipeline.compose.errors import PipelineError
from task_components.base import Component, retry_warnings, wiring_errors

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["TASK_NAME", "Pipeline", "Step", "StepSource", "stream_inputs", "task_name_problem"]

# a task's name is a file name in the run directory (``results/NAME.pkl``, a Milvus Lite file) and a key in
# reports and command lines: nothing that can climb out of a directory (``/``, ``\``, a leading dot), no
# whitespace or control character, not read as an option (a leading ``-``). Brackets and the like are
# fine: no user text is read as markup.
TASK_NAME = re.compile(r"[^\s/\\.\-\x00-\x1f\x7f][^\s/\\\x00-\x1f\x7f]{0,99}")


def task_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a task (None: it can), for both front ends."""
    if not isinstance(name, str):
        return f"a task's name is a string, got {name!r}"
    if not TASK_NAME.fullmatch(name):
        return (
            f"a task's name is 1 to 100 characters without '/', '\\', spaces or control characters, not "
            f"starting with '.' or '-', got {name!r}"
        )
    return None


# what ``Pipeline.step`` accepts: a registered name, a Component class, a ready Task, an async function
StepSource = str | type[Component[Any]] | Task | Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Step:
    """The handle ``Pipeline.step`` returns: pass it to another step to make that step need this one."""

    pipeline: Pipeline = field(repr=False, compare=False)
    name: str

    def options(
        self,
        *,
        retries: int | None = None,
        retry_delay: float | None = None,
        timeout: float | None = None,
        kind: str | None = None,
    ) -> Step:
        """How the engine runs this step (not the component's parameters): extra attempts after a failure,
        the first retry's delay (doubling), seconds per attempt, the concurrency group. Returns the handle."""
        decl = self.pipeline._decls[self.name]
        if retries is not None:
            decl.retries = retries
        if retry_delay is not None:
            decl.retry_delay = retry_delay
        if timeout is not None:
            decl.timeout = timeout
        if kind is not None:
            decl.kind = kind
        return self


@dataclass(slots=True)
class _Decl:
    name: str
    uses: str  # the component's name (a plain task: its class), for reports and request.json
    cls: type[Component[Any]] | None  # None: ``task`` is used as it is
    task: Task | None
    params: dict[str, Any]
    needs: list[str]
    retries: int | None = None  # None: not set (a Task keeps its own)
    retry_delay: float | None = None
    timeout: float | None = None
    kind: str | None = None

    @property
    def source(self) -> type[Task] | Task:
        if self.cls is not None:
            return self.cls
        assert self.task is not None
        return self.task


def stream_inputs(consumer: type[Task] | Task, needs: list[str], producers: Mapping[str, type[Task] | Task]) -> list[str]:
    """The needs a consumer reads as streams: it reads streams and they emit one (the only place this is
    decided). A plain Task declares its own ``streams_from``; a component's is inferred from the classes."""
    if getattr(consumer, "stream_input", False) is not True:
        return []
    return [n for n in needs if n in producers and _emits(producers[n])]


def _emits(producer: type[Task] | Task) -> bool:
    if isinstance(producer, Task):
        return producer.emits_stream
    return bool(getattr(producer, "emits", False))


def _function_name(fn: Callable[..., Any]) -> str:
    """An async function's name; a ``functools.partial`` is named after the function it wraps."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return str(getattr(fn, "__name__", type(fn).__name__))


def _params_problem(err: ValidationError) -> tuple[str, str]:
    """(parameter path, message) for the first problem pydantic found in a step's parameters."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = "unknown parameter (check its spelling)" if first["type"] == "extra_forbidden" else first["msg"]
    msg = msg.removeprefix("Value error, ")
    got = repr(first.get("input"))
    got = got if len(got) <= 120 else got[:117] + "..."  # a whole mapping would drown the message
    if first["type"] == "value_error" and isinstance(first.get("input"), dict):
        got = ""  # a check over several fields: its message names them, the mapping adds nothing
    return where, f"{msg}{f' (got {got})' if got else ''}"


class Pipeline:
    """A named set of steps; ``build()`` checks it and returns the engine's DAG.

    ``params`` are the run's parameters (``ctx.params``, the report); ``policy``, ``max_concurrency``
    and ``kind_limits`` are the YAML file's top-level settings of the same names.
    """

    def __init__(
        self,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        description: str = "",
        policy: FailurePolicy | str = FailurePolicy.FAIL_FAST,
        max_concurrency: int | None = None,
        kind_limits: Mapping[str, int] | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise PipelineError(f"a pipeline needs a non-empty string name, got {name!r}")
        self.name = name
        self.params: dict[str, Any] = dict(params or {})
        self.description = description
        try:
            self.policy = FailurePolicy(policy)
        except ValueError:
            known = ", ".join(repr(p.value) for p in FailurePolicy)
            raise PipelineError(f"policy is one of {known}, got {policy!r}", pipeline=name, field="policy") from None
        self.max_concurrency = max_concurrency
        self.kind_limits: dict[str, int] = dict(kind_limits or {})
        self._decls: dict[str, _Decl] = {}

    # -- composing ------------------------------------------------------------------------------
    def step(
        self,
        source: StepSource,
        /,
        *inputs: Step | str,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Step:
        """Add a step; ``inputs`` (handles, or names of steps added later) are what it needs.

        ``source``: a registered component name (``"generate"``), a Component subclass (yours need no
        registration), a Task, or an ``async def f(ctx)``. Keyword arguments are the component's
        parameters, checked by ``build()``; ``params=`` takes them as a mapping (for a parameter whose
        name is ``name``). Engine options (retries, timeout) go through the handle's ``options()``.
        """
        both = sorted(set(params or {}) & set(kwargs))
        if both:
            raise PipelineError(
                f"given both in params= and as a keyword: {both}", pipeline=self.name, task=name, field=both[0], about="params"
            )
        raw = {**(params or {}), **kwargs}
        cls: type[Component[Any]] | None = None
        task: Task | None = None
        fn: Callable[..., Awaitable[Any]] | None = None
        if isinstance(source, str):
            try:
                cls = component_class(source, name or source.rsplit(".", 1)[-1])
            except PipelineError as err:  # named in this pipeline too
                raise PipelineError(err.problem, pipeline=self.name, task=err.task, field=err.field) from None
            default = source.rsplit(".", 1)[-1]
        elif isinstance(source, type) and issubclass(source, Component):
            cls = source
            default = source.component.rsplit(".", 1)[-1]
        elif isinstance(source, Task):
            task, default = source, source.name
            if name is not None and name != source.name:
                raise PipelineError(f"a Task keeps its own name {source.name!r}", pipeline=self.name, task=str(name), field="name")
            same = next((d.name for d in self._decls.values() if d.task is source), None)
            if same is not None or source.name in self._decls:
                raise PipelineError(
                    f"this Task is already step {same or source.name!r}; a Task is one step (make "
                    "another Task, or use the async function twice)",
                    pipeline=self.name,
                    task=source.name,
                    field="name",
                )
        elif inspect.iscoroutinefunction(source):
            fn, default = source, _function_name(source)
        else:
            raise PipelineError(
                f"a step is a component name, a Component class, a Task or an async function, got {source!r}", pipeline=self.name, task=name
            )
        if (task is not None or fn is not None) and raw:
            raise PipelineError(
                f"a plain task takes no parameters, got {sorted(raw)}",
                pipeline=self.name,
                task=name or default,
                field=sorted(raw)[0],
                about="params",
            )
        step_name = name if name is not None else self._free_name(default)
        problem = task_name_problem(step_name)
        if problem:
            raise PipelineError(problem, pipeline=self.name, task=str(step_name) or None, field="name")
        if step_name in self._decls:
            raise PipelineError("two steps have this name", pipeline=self.name, task=step_name, field="name")
        if fn is not None:
            task = FunctionTask(fn, step_name)
        needs: list[str] = []
        for item in inputs:
            if isinstance(item, Step):
                if item.pipeline is not self:
                    raise PipelineError(
                        f"input {item.name!r} is a step of pipeline {item.pipeline.name!r}",
                        pipeline=self.name,
                        task=step_name,
                        field="needs",
                    )
                item = item.name
            elif not isinstance(item, str):
                raise PipelineError(f"an input is a step's handle or name, got {item!r}", pipeline=self.name, task=step_name, field="needs")
            if item not in needs:
                needs.append(item)
        uses = cls.component if cls is not None else type(task).__name__
        self._decls[step_name] = _Decl(step_name, uses, cls, task, raw, needs)
        return Step(self, step_name)

    def _free_name(self, base: str) -> str:
        """``base``, or ``base_2``, ``base_3``... (only steps the pipeline names itself are renamed)."""
        name, n = base, 1
        while name in self._decls:
            n += 1
            name = f"{base}_{n}"
        return name

    def __iter__(self) -> Iterator[Step]:
        return (Step(self, n) for n in self._decls)

    def __len__(self) -> int:
        return len(self._decls)

    def __getitem__(self, name: str) -> Step:
        if name not in self._decls:
            raise KeyError(f"no step named {name!r} in pipeline {self.name!r}")
        return Step(self, name)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each step as a YAML task would say it (uses, needs, with), for reports and ``request.json``."""
        return {
            d.name: {"uses": d.uses, "needs": list(d.needs) + list(d.task.needs if d.task else ()), "with": d.params}
            for d in self._decls.values()
        }

    # -- checking -------------------------------------------------------------------------------
    def build(self, settings: Settings | None = None) -> DAG:
        """The checked DAG (nothing runs), or the first problem as a PipelineError.

        With ``settings``, each task's ``settings_problem`` is checked too (a broker address missing...).
        """
        if not self._decls:
            raise PipelineError("has no steps", pipeline=self.name)
        self._run_settings()
        kinds = {d.name: d.source for d in self._decls.values()}
        dag = DAG(self.name)
        for d in self._decls.values():
            dag.add(self._task(d, kinds))
        try:
            dag.validate()
        except DAGValidationError as err:
            raise self._error(str(err), err.task, "needs") from None
        tasks = {t.name: t for t in dag}
        problems = wiring_errors(tasks)
        if problems:
            raise self._error(problems[0][1], problems[0][0], "needs")
        if settings is not None:
            for t in dag:
                problem = t.settings_problem(settings) if isinstance(t, Component) else None
                if problem:
                    raise self._error(problem, t.name, None, about="settings")
        return dag

    def _run_settings(self) -> None:
        """The pipeline's own settings, checked as the run would (a PipelineError now, not a crash later)."""
        mc = self.max_concurrency
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or mc < 1):
            raise self._error(f"max_concurrency is a whole number >= 1 (or None), got {mc!r}", None, "max_concurrency")
        if not isinstance(self.kind_limits, Mapping):
            raise self._error(f"kind_limits maps a kind to a limit, got {self.kind_limits!r}", None, "kind_limits")
        for kind, limit in self.kind_limits.items():
            if not isinstance(kind, str) or isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise self._error(f"a kind's limit is a whole number >= 1, got {kind!r}: {limit!r}", None, f"kind_limits.{kind}")

    def _options(self, d: _Decl) -> tuple[RetryPolicy | None, float | None]:
        """The step's retry policy (None: not set) and timeout, or a PipelineError naming the option."""
        for option, value in (("retries", d.retries), ("retry_delay", d.retry_delay), ("timeout", d.timeout)):
            if value is None:
                continue
            whole = option == "retries"
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
                raise self._error(f"{option} is a {'whole ' if whole else ''}number, got {value!r}", d.name, option, about="options")
            if value < 0 or (option == "timeout" and value == 0):
                bound = "> 0" if option == "timeout" else ">= 0"
                raise self._error(f"{option} must be {bound}, got {value!r}", d.name, option, about="options")
        if d.kind is not None and (not isinstance(d.kind, str) or not d.kind):
            raise self._error(f"kind is a non-empty string, got {d.kind!r}", d.name, "kind", about="options")
        if d.retries is None and d.retry_delay is None:
            return None, d.timeout
        base = d.task.retry if d.task is not None else RetryPolicy(backoff=1.0)
        attempts = d.retries + 1 if d.retries is not None else base.attempts
        return dataclasses.replace(base, attempts=attempts, backoff=d.retry_delay if d.retry_delay is not None else base.backoff), d.timeout

    def _task(self, d: _Decl, kinds: Mapping[str, type[Task] | Task]) -> Task:
        problem = task_name_problem(d.name)
        if problem:
            raise self._error(problem, None, "name")
        for need in d.needs:
            if need not in self._decls:
                raise self._error(f"needs {need!r}, which is not a task in this pipeline", d.name, "needs")
        retry, timeout = self._options(d)
        if d.cls is None:
            assert d.task is not None
            # a copy: the same Task object may be a step of other pipelines, each with its own needs and options
            task = copy.copy(d.task)
            task.needs = tuple(dict.fromkeys([*d.task.needs, *d.needs]))
            if retry is not None:
                task.retry = retry
            if timeout is not None:
                task.timeout = timeout
            if d.kind is not None:
                task.kind = d.kind
            if isinstance(task, Component):  # a configured instance: its parameters are checked like any step's
                task.params = self._params(type(task), task.params, d.name)
            return task
        params = self._params(d.cls, d.params, d.name)
        try:
            return d.cls(
                d.name,
                params,
                d.needs,
                streams_from=stream_inputs(d.cls, d.needs, kinds),
                retry=retry if retry is not None and retry.attempts > 1 else None,
                timeout=timeout,
                kind=d.kind,
            )
        except ValueError as err:  # the Task's own checks
            raise self._error(str(err), d.name, "options") from None

    def _params(self, cls: type[Component[Any]], raw: Any, task: str) -> BaseModel:
        try:
            return cls.Params.model_validate(raw)
        except ValidationError as err:
            where, message = _params_problem(err)
            raise self._error(message, task, where or None, about="params") from None

    def _error(self, problem: str, task: str | None, where: str | None, about: str | None = None) -> PipelineError:
        return PipelineError(problem, pipeline=self.name, task=task, field=where, about=about)

    def warnings(self, dag: DAG | None = None) -> list[tuple[str, str]]:
        """(task, message) for what is allowed but will not do what it says (retries a stream cannot use)."""
        dag = dag if dag is not None else self.build()
        return retry_warnings({t.name: t for t in dag})

    def validate(self, settings: Settings | None = None) -> list[tuple[str, str]]:
        """Every check ``run-pipeline validate`` makes, settings included (from the environment when
        not given); raises PipelineError, returns the warnings as (task, message)."""
        if settings is None:
            from config import get_settings

            settings = get_settings()
        return self.warnings(self.build(settings))

    def graph(self, format: str = "mermaid") -> str:
        """The DAG as Mermaid or Graphviz DOT (bold/thick edges are streams)."""
        dag = self.build()
        return dag.to_dot() if format == "dot" else dag.to_mermaid()

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={list(self._decls)})"
