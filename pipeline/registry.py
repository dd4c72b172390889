"""Component name -> Task class, and turning a validated spec into a DAG.

Building the DAG checks everything that can be known before a run: the component exists, its
parameters validate, every need is a task, no cycle, and the typed wiring (each task finds the input
types it declares among its needs), so a miswired pipeline fails ``validate`` with exit 2, not at run time.

Built-in components come from the ``COMPONENTS`` list of each task_components package; plugins add
theirs through the ``dag_pipeline.components`` entry-point group (each entry point names a Component
subclass). A plugin that reuses a built-in name is rejected rather than silently shadowing it.
"""

from __future__ import annotations

import difflib
import importlib
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import ValidationError

from dag_orchestrator.dag import DAG, DAGValidationError
from dag_orchestrator.task import RetryPolicy
from pipeline.spec import PipelineSpec, SpecError
from task_components.base import Component, wiring_errors

__all__ = ["BUILTIN_PACKAGES", "build_dag", "components"]

BUILTIN_PACKAGES = [
    "task_components.demo",
    "task_components.generation",
    "task_components.partitioning",
    "task_components.storage",
    "task_components.milvus",
    "task_components.shadow",
    "task_components.verification",
    "task_components.runs",
    "task_components.standardization",
    "task_components.quality",
    "task_components.sinks",
    "task_components.sources",
    "task_components.datasets",
]
ENTRY_POINT_GROUP = "dag_pipeline.components"


@lru_cache(maxsize=1)
def components() -> dict[str, type[Component]]:
    found: dict[str, type[Component]] = {}

    def add(cls: type[Component], origin: str) -> None:
        if cls.component in found and found[cls.component] is not cls:
            raise RuntimeError(f"component name {cls.component!r} from {origin} is already registered")
        found[cls.component] = cls

    for module_name in BUILTIN_PACKAGES:
        module = importlib.import_module(module_name)
        for cls in module.COMPONENTS:
            add(cls, module_name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Component)):
            raise RuntimeError(f"entry point {ep.name!r} ({ep.value}) is not a Component subclass")
        add(cls, f"plugin {ep.value}")
    return dict(sorted(found.items()))


def _component_for(file: Path, task: str, uses: str) -> type[Component]:
    registry = components()
    if uses in registry:
        return registry[uses]
    close = difflib.get_close_matches(uses, registry, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; see `run_pipeline.py components`"
    raise SpecError(file, f"unknown component {uses!r}{hint}", task=task, field="uses")


def build_dag(spec: PipelineSpec, file: str | Path) -> DAG:
    """Check every task against its component and return a validated DAG (nothing runs)."""
    file = Path(file)
    classes = {name: _component_for(file, name, t.uses) for name, t in spec.tasks.items()}
    dag = DAG(spec.name)
    for name, t in spec.tasks.items():
        cls = classes[name]
        for need in t.needs:
            if need not in spec.tasks:
                raise SpecError(file, f"needs {need!r}, which is not a task in this pipeline", task=name, field="needs")
        try:
            params = cls.Params.model_validate(t.with_)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(["with", *(str(p) for p in first["loc"])])
            msg = "unknown parameter (check its spelling)" if first["type"] == "extra_forbidden" else first["msg"]
            msg = msg.removeprefix("Value error, ")
            got = repr(first.get("input"))
            got = got if len(got) <= 120 else got[:117] + "..."  # a whole mapping would drown the message
            if first["type"] == "value_error" and isinstance(first.get("input"), dict):
                got = ""  # a check over several fields: its message names them, the mapping adds nothing
            raise SpecError(file, f"{msg}{f' (got {got})' if got else ''}", task=name, field=field) from None
        streams_from = [n for n in t.needs if cls.stream_input and classes[n].emits]
        retry = RetryPolicy(attempts=t.retries + 1, backoff=t.retry_delay) if t.retries else None
        dag.add(cls(name, params, t.needs, streams_from=streams_from, retry=retry, timeout=t.timeout, kind=t.kind))
    try:
        dag.validate()
    except DAGValidationError as err:
        raise SpecError(file, str(err), task=err.task, field="needs") from None
    problems = wiring_errors({t.name: t for t in dag})
    if problems:
        task, message = problems[0]
        raise SpecError(file, message, task=task, field="needs")
    return dag
