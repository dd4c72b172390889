"""Component name -> Component class: the built-in packages' ``COMPONENTS`` lists and plugins.

Plugins add theirs through the ``dag_pipeline.components`` entry-point group (each entry point names
a Component subclass). A plugin that reuses a built-in name is rejected rather than silently shadowing
it. A Python pipeline may also use a Component class directly, registered or not.
"""

from __future__ import annotations

import difflib
import importlib
from functools import lru_cache
from importlib.metadata import entry_points

from pipeline.compose.errors import PipelineError
from task_components.base import Component

__all__ = ["BUILTIN_PACKAGES", "ENTRY_POINT_GROUP", "component_class", "components"]

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
    "task_components.fused",
]
ENTRY_POINT_GROUP = "dag_pipeline.components"


def components() -> dict[str, type[Component]]:
    """Every registered component by name (built-in first, then plugins), sorted by name: a copy, so a
    caller's change never reaches the registry every pipeline resolves names in."""
    return dict(_registry())


@lru_cache(maxsize=1)
def _registry() -> dict[str, type[Component]]:
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


def component_class(uses: str, task: str | None = None) -> type[Component]:
    """The registered class, or a PipelineError (field ``uses``) with the closest name as a hint."""
    registry = _registry()
    if uses in registry:
        return registry[uses]
    close = difflib.get_close_matches(uses, registry, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; see `run_pipeline.py components`"
    raise PipelineError(f"unknown component {uses!r}{hint}", task=task, field="uses")
