"""The YAML front end: a validated spec becomes Python API steps, built by the one ``Pipeline.build``.

Building checks everything that can be known before a run (the component exists, its parameters
validate, every need is a task, no cycle, the typed wiring), so a miswired pipeline fails ``validate``
with exit 2, not at run time; here the problem is only renamed in the file's terms (``SpecError``
naming the file, the task and ``with.FIELD``). Component discovery (built-ins and plugins) lives in
``pipeline.compose.catalog``; ``components`` is re-exported for the CLI and the daemon.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dag_orchestrator.dag import DAG
from pipeline.compose import BUILTIN_PACKAGES, Pipeline, PipelineError, component_class, components
from pipeline.spec import PipelineSpec, SpecError

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["BUILTIN_PACKAGES", "build_dag", "components", "pipeline_of"]


def pipeline_of(spec: PipelineSpec, file: str | Path) -> Pipeline:
    """The spec as Python API steps (every component resolved first: an unknown one is named at once)."""
    try:
        classes = {name: component_class(t.uses, name) for name, t in spec.tasks.items()}
    except PipelineError as err:
        raise SpecError.of(file, err) from None
    p = Pipeline(
        spec.name,
        params=spec.params,
        description=spec.description,
        policy=spec.policy,
        max_concurrency=spec.max_concurrency,
        kind_limits=spec.kind_limits,
    )
    try:
        for name, t in spec.tasks.items():
            p.step(classes[name], *t.needs, name=name, params=t.with_).options(
                retries=t.retries, retry_delay=t.retry_delay, timeout=t.timeout, kind=t.kind
            )
    except PipelineError as err:  # a task's name the engine cannot use (``../x``): named in the file's terms
        raise SpecError.of(file, err) from None
    return p


def build_dag(spec: PipelineSpec, file: str | Path, settings: Settings | None = None) -> DAG:
    """Check every task against its component (and, given ``settings``, the configuration each needs) and
    return a validated DAG (nothing runs)."""
    p = pipeline_of(spec, file)
    try:
        return p.build(settings)
    except PipelineError as err:
        raise SpecError.of(file, err) from None
