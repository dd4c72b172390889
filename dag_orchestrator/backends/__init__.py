"""Where CPU-heavy work runs. One async interface: ``map_ordered(fn, args, window)``.

``LocalBackend`` uses worker processes (or threads with ``workers=0``); ``DaskBackend`` (``--backend dask``)
uses a Dask distributed cluster, a LocalCluster by default. Because callers only see ordered results of
pure functions, output does not depend on the backend or on the worker count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dag_orchestrator.backends.local import LocalBackend, default_workers

if TYPE_CHECKING:
    from dag_orchestrator.backends.dask_cluster import DaskBackend

__all__ = ["BACKENDS", "LocalBackend", "default_workers", "make_backend"]

BACKENDS = ("local", "dask")


def make_backend(kind: str, workers: int | None = None, scheduler: str | None = None, group: int = 4) -> LocalBackend | DaskBackend:
    """The backend a run asked for; Dask is imported only when used (it is an optional dependency). ``group``:
    jobs per Dask task (small jobs share a round trip; a whole file's work is one task, so a lost worker
    costs Dask one file to redo)."""
    if kind == "local":
        return LocalBackend(workers)
    if kind == "dask":
        from dag_orchestrator.backends.dask_cluster import DaskBackend

        return DaskBackend(scheduler, workers, group=group)
    raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
