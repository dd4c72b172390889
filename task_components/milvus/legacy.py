"""Every legacy (ORM-style) pymilvus call this project makes, in one module: moving off it is this file.

Milvus 2.3 understands bulk import only through the gRPC ``Import`` calls, which pymilvus exposes only
through the ORM API (``connections`` + ``utility.do_bulk_insert`` / ``get_bulk_insert_state`` /
``list_bulk_insert_tasks``). pymilvus 3.0 warns that these go away in 3.1 and ``MilvusClient`` has no
replacement (it points at the REST import-jobs API, which Milvus 2.3 lacks), so pyproject bounds
pymilvus below 3.1 and this module is the only place allowed to call them. Servers from 2.4 on use
``import_jobs.RestImportJobs`` instead, chosen by ``import_jobs.open_import_jobs``.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from task_components.milvus.jobs import CALL_TIMEOUT, ImportJobsError, JobState

T = TypeVar("T")

__all__ = ["LegacyImportJobs"]

# the exact legacy calls made below; their PyMilvusDeprecationWarning is known and is the reason this
# module exists, so it is silenced here (and only for calls made from this module) and nowhere else
_KNOWN = r"`(connections\.connect|connections\.disconnect|utility\.do_bulk_insert|utility\.get_bulk_insert_state|utility\.list_bulk_insert_tasks)` is an ORM-style PyMilvus API"  # noqa: E501
_aliases = itertools.count()


def _quiet() -> None:
    """Re-installed before each call: pytest (and any caller's catch_warnings) resets filters per test."""
    from pymilvus.decorators import PyMilvusDeprecationWarning

    warnings.filterwarnings("ignore", message=_KNOWN, category=PyMilvusDeprecationWarning, module=__name__)


def _call(what: str, timeout: float, fn: Callable[[], T]) -> T:
    """A legacy call, its gRPC failure named (a deadline as "no answer within N s", like the REST path)."""
    import grpc
    from pymilvus.exceptions import MilvusException

    _quiet()
    try:
        return fn()
    except grpc.RpcError as exc:
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise ImportJobsError(f"{what}: no answer within {timeout:g} s") from exc
        details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
        raise ImportJobsError(f"{what}: {code}: {details}") from exc
    except MilvusException as exc:
        raise ImportJobsError(f"{what}: {exc.message}") from exc


def _state(task: Any) -> JobState:
    files = tuple(f for f in str(getattr(task, "files", "") or "").split(",") if f)  # Milvus joins them by ","
    name = str(getattr(task, "state_name", "") or "")
    return JobState(
        state=name, rows=int(getattr(task, "row_count", 0) or 0), reason=str(getattr(task, "failed_reason", "") or ""), files=files
    )


class LegacyImportJobs:
    """Bulk-import jobs through Milvus 2.3's gRPC calls (one ORM connection alias per instance)."""

    kind = "gRPC (Milvus 2.3)"

    def __init__(self, uri: str, token: str | None, db_name: str = "default", timeout: float = CALL_TIMEOUT) -> None:
        from pymilvus import connections

        self.timeout = timeout
        self.alias = f"legacy-import-{os.getpid()}-{next(_aliases)}"
        kwargs: dict[str, Any] = {"uri": uri, "token": token or "", "timeout": timeout}
        if db_name and db_name != "default":
            kwargs["db_name"] = db_name
        _call(f"connect to {uri}", timeout, lambda: connections.connect(self.alias, **kwargs))

    def submit(self, collection: str, location: str) -> int:
        from pymilvus import utility

        job = _call(
            f"do_bulk_insert of {location}",
            self.timeout,
            lambda: utility.do_bulk_insert(collection_name=collection, files=[location], using=self.alias, timeout=self.timeout),
        )
        return int(job)

    def state(self, job: int) -> JobState:
        from pymilvus import utility

        task = _call(
            f"get_bulk_insert_state of job {job}",
            self.timeout,
            lambda: utility.get_bulk_insert_state(job, using=self.alias, timeout=self.timeout),
        )
        return _state(task)

    def listed(self, collection: str) -> list[tuple[int, JobState]]:
        from pymilvus import utility

        tasks = _call(
            f"list_bulk_insert_tasks of {collection}",
            self.timeout,
            lambda: utility.list_bulk_insert_tasks(collection_name=collection, using=self.alias, timeout=self.timeout),
        )
        return [(int(t.task_id), _state(t)) for t in tasks]

    def close(self) -> None:
        from pymilvus import connections

        _quiet()
        connections.disconnect(self.alias)
