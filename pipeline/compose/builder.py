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

import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from dag_orchestrator.dag import DAG, DAGValidationError
from dag_orchestrator.executor import FailurePolicy
from dag_orchestrator.task import FunctionTask, RetryPolicy, Task
from pipeline.compose.catalog import component_class
from pipeline.compose.errors import PipelineError
from task_components.base import Component, retry_warnings, wiring_errors

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["Pipeline", "Step", "StepSource", "stream_inputs"]

# what ``Pipeline.step`` accepts: a registered name, a Component class, a ready Task, an async function
StepSource = str | type[Component[Any]] | Task | Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Step:
    """The handle ``Pipeline.step`` returns: pass it to another step to make that step need this one."""

    pipeline: Pipeline = field(repr=False, compare=False)
    name: str

    def options(
        self, *, retries: int | None = None, retry_delay: float | None = None, timeout: float | None = None,
        kind: str | None = None,
    ) -> Step:  # fmt: skip
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
    retries: int = 0
    retry_delay: float = 1.0
    timeout: float | None = None
    kind: str | None = None

    @property
    def source(self) -> type[Task] | Task:
        if self.cls is not None:
            return self.cls
        assert self.task is not None
        return self.task


def stream_inputs(
    consumer: type[Task] | Task, needs: list[str], producers: Mapping[str, type[Task] | Task]
) -> list[str]:
    """The needs a consumer reads as streams: it reads streams and they emit one (the only place this is
    decided). A plain Task declares its own ``streams_from``; a component's is inferred from the classes."""
    if getattr(consumer, "stream_input", False) is not True:
        return []
    return [n for n in needs if n in producers and _emits(producers[n])]


def _emits(producer: type[Task] | Task) -> bool:
    if isinstance(producer, Task):
        return producer.emits_stream
    return bool(getattr(producer, "emits", False))


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
        self, name: str, *, params: Mapping[str, Any] | None = None, description: str = "",
        policy: FailurePolicy | str = FailurePolicy.FAIL_FAST, max_concurrency: int | None = None,
        kind_limits: Mapping[str, int] | None = None,
    ) -> None:  # fmt: skip
        if not name or not isinstance(name, str):
            raise PipelineError(f"a pipeline needs a non-empty string name, got {name!r}")
        self.name = name
        self.params: dict[str, Any] = dict(params or {})
        self.description = description
        self.policy = FailurePolicy(policy)
        self.max_concurrency = max_concurrency
        self.kind_limits: dict[str, int] = dict(kind_limits or {})
        self._decls: dict[str, _Decl] = {}

    # -- composing ------------------------------------------------------------------------------
    def step(
        self, source: StepSource, /, *inputs: Step | str, name: str | None = None,
        params: Mapping[str, Any] | None = None, **kwargs: Any,
    ) -> Step:  # fmt: skip
        """Add a step; ``inputs`` (handles, or names of steps added later) are what it needs.

        ``source``: a registered component name (``"generate"``), a Component subclass (yours need no
        registration), a Task, or an ``async def f(ctx)``. Keyword arguments are the component's
        parameters, checked by ``build()``; ``params=`` takes them as a mapping (for a parameter whose
        name is ``name``). Engine options (retries, timeout) go through the handle's ``options()``.
        """
        raw = {**(params or {}), **kwargs}
        cls: type[Component[Any]] | None = None
        task: Task | None = None
        fn: Callable[..., Awaitable[Any]] | None = None
        if isinstance(source, str):
            cls = component_class(source, name)
            default = source.rsplit(".", 1)[-1]
        elif isinstance(source, type) and issubclass(source, Component):
            cls = source
            default = getattr(source, "component", source.__name__).rsplit(".", 1)[-1]
        elif isinstance(source, Task):
            task, default = source, source.name
            if name not in (None, source.name):
                raise PipelineError(f"a Task keeps its own name {source.name!r}", pipeline=self.name, task=name,
                                    field="name")  # fmt: skip
        elif inspect.iscoroutinefunction(source):
            fn, default = source, source.__name__
        else:
            raise PipelineError(f"a step is a component name, a Component class, a Task or an async function, "
                                f"got {source!r}", pipeline=self.name, task=name)  # fmt: skip
        if (task is not None or fn is not None) and raw:
            raise PipelineError(f"a plain task takes no parameters, got {sorted(raw)}", pipeline=self.name,
                                task=name or default, field=sorted(raw)[0], about="params")  # fmt: skip
        step_name = name or self._free_name(default)
        if step_name in self._decls:
            raise PipelineError("two steps have this name", pipeline=self.name, task=step_name, field="name")
        if fn is not None:
            task = FunctionTask(fn, step_name)
        needs: list[str] = []
        for item in inputs:
            if isinstance(item, Step):
                if item.pipeline is not self:
                    raise PipelineError(f"input {item.name!r} is a step of pipeline {item.pipeline.name!r}",
                                        pipeline=self.name, task=step_name, field="needs")  # fmt: skip
                item = item.name
            elif not isinstance(item, str):
                raise PipelineError(f"an input is a step's handle or name, got {item!r}", pipeline=self.name,
                                    task=step_name, field="needs")  # fmt: skip
            needs.append(item)
        uses = cls.component if cls is not None else type(task).__name__
        self._decls[step_name] = _Decl(step_name, uses, cls, task, raw, needs)
        return Step(self, step_name)

    def _free_name(self, base: str) -> str:
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
        return {d.name: {"uses": d.uses, "needs": list(d.needs) + list(d.task.needs if d.task else ()),
                         "with": d.params} for d in self._decls.values()}  # fmt: skip

    # -- checking -------------------------------------------------------------------------------
    def build(self, settings: Settings | None = None) -> DAG:
        """The checked DAG (nothing runs), or the first problem as a PipelineError.

        With ``settings``, each task's ``settings_problem`` is checked too (a broker address missing...).
        """
        if not self._decls:
            raise PipelineError("has no steps", pipeline=self.name)
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

    def _task(self, d: _Decl, kinds: Mapping[str, type[Task] | Task]) -> Task:
        for need in d.needs:
            if need not in self._decls:
                raise self._error(f"needs {need!r}, which is not a task in this pipeline", d.name, "needs")
        if d.cls is None:
            assert d.task is not None
            task = d.task
            needs = list(dict.fromkeys([*task.needs, *d.needs]))
            if needs != list(task.needs):
                task.needs = tuple(needs)
            return task
        try:
            params = d.cls.Params.model_validate(d.params)
        except ValidationError as err:
            where, message = _params_problem(err)
            raise self._error(message, d.name, where or None, about="params") from None
        retry = RetryPolicy(attempts=d.retries + 1, backoff=d.retry_delay) if d.retries else None
        try:
            return d.cls(d.name, params, d.needs, streams_from=stream_inputs(d.cls, d.needs, kinds), retry=retry,
                         timeout=d.timeout, kind=d.kind)  # fmt: skip
        except ValueError as err:  # the Task's own checks (a timeout that is not positive)
            raise self._error(str(err), d.name, "options") from None

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
