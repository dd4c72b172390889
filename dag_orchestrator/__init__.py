"""An async DAG engine: tasks, graphs, an anyio executor, streams between tasks, resumable state."""

import os

# gRPC (under pymilvus) hooks fork() to make a child's gRPC usable. We fork only to exec another program:
# pgserver starts pg_ctl as its own OS user, which makes CPython fork() rather than vfork(), and with
# client threads inside gRPC the hook then runs in a half-copied process: pg_ctl was seen dying of
# SIGSEGV there. Off before gRPC first loads (it reads the variable once); a user's own value is kept.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

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
