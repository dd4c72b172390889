"""Where CPU-heavy work runs. One async interface: ``map_ordered(fn, args, window)``.

``LocalBackend`` uses worker processes (or threads with ``workers=0``); a Dask backend with the same
interface is the planned scale-out (``--backend dask``). Because callers only see ordered results of
pure functions, output does not depend on the backend or on the worker count.
"""

from dag_orchestrator.backends.local import LocalBackend, default_workers

__all__ = ["LocalBackend", "default_workers"]
