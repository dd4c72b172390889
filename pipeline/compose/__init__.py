"""Composing pipelines from components in Python; the YAML loader (``pipeline.registry``) is a front end.

This package imports nothing else from ``pipeline``: the spec, the registry and the runner build on it.
"""

from pipeline.compose.builder import Pipeline, Step, StepSource, stream_inputs
from pipeline.compose.catalog import BUILTIN_PACKAGES, ENTRY_POINT_GROUP, component_class, components
from pipeline.compose.errors import PipelineError

__all__ = [
    "BUILTIN_PACKAGES",
    "ENTRY_POINT_GROUP",
    "Pipeline",
    "PipelineError",
    "Step",
    "StepSource",
    "component_class",
    "components",
    "stream_inputs",
]
