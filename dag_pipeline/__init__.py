"""Compose and run pipelines of components from Python; the same engine and checks as the YAML files.

    import dag_pipeline as dp

    p = dp.Pipeline("quickstart")
    gen = p.step("generate", schema="simple", total_rows=10_000)
    files = p.step("partition", gen, format="parquet")   # passing a handle makes the edge
    run = p.run(run_dir="runs")                          # await p.run_async(...) inside an event loop

See docs/python.md.
"""

from dag_orchestrator.context import PipelineContext, RunServices
from dag_orchestrator.executor import FailurePolicy
from dag_orchestrator.state import RunResult, TaskState
from dag_orchestrator.task import RetryPolicy, Task, task
from dag_pipeline.run import Pipeline, PipelineRun
from pipeline.compose import PipelineError, Step, components
from task_components.base import Component, NoParams

__all__ = [
    "Component",
    "FailurePolicy",
    "NoParams",
    "Pipeline",
    "PipelineContext",
    "PipelineError",
    "PipelineRun",
    "RetryPolicy",
    "RunResult",
    "RunServices",
    "Step",
    "Task",
    "TaskState",
    "components",
    "task",
]
