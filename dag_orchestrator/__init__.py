"""An async DAG engine: tasks, graphs, an anyio executor, streams between tasks, resumable state."""

from dag_orchestrator.context import PipelineContext, RunServices
from dag_orchestrator.dag import DAG, DAGValidationError
from dag_orchestrator.events import Event, EventKind
from dag_orchestrator.executor import Executor, FailurePolicy, SequentialExecutor, StopReason, TaskTimeoutError
from dag_orchestrator.state import RunResult, StateStore, TaskRun, TaskState
from dag_orchestrator.streams import StreamConsumerGone, UpstreamStreamError
from dag_orchestrator.task import FunctionTask, RetryPolicy, Task, task

__all__ = [
    "DAG",
    "DAGValidationError",
    "Event",
    "EventKind",
    "Executor",
    "FailurePolicy",
    "FunctionTask",
    "PipelineContext",
    "RetryPolicy",
    "RunResult",
    "RunServices",
    "SequentialExecutor",
    "StateStore",
    "StopReason",
    "StreamConsumerGone",
    "Task",
    "TaskRun",
    "TaskState",
    "TaskTimeoutError",
    "UpstreamStreamError",
    "task",
]
