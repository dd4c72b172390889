"""Dask distributed behind the same ordered, bounded map as LocalBackend (``--backend dask``).

Why Dask and not more of our own: a scheduler that knows where workers are, restarts a lost one (its
nanny) and recomputes what died with it, and a dashboard, are what users already run for CPU-heavy work.
The engine keeps what it needs for determinism: jobs are pure functions of their arguments, results are
consumed in submission order with at most ``window`` outstanding, so output is byte-identical to the
local backend and memory stays bounded whatever the dataset size.

With no scheduler address a LocalCluster of worker processes starts for the run and stops with it. When
every worker runs on this host, Arrow results come back through ``/dev/shm`` exactly as with the local
backend (zero copy, no serialisation); from remote workers they travel over Dask's comms (pickled Arrow
buffers). Each result also says which worker made it, so the run report can show the placement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import anyio
import structlog

from dag_orchestrator.backends.local import SHM_DIR, _call_via_shm, _receive, default_workers

__all__ = ["DaskBackend"]

log = structlog.get_logger("dag_orchestrator.dask")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _on_worker(fn: Callable[..., Any], shm: bool, *args: Any) -> tuple[str, Any]:
    """Runs on a Dask worker: the result (through /dev/shm when the client shares the host) and where."""
    from distributed import get_worker

    result = _call_via_shm(fn, *args) if shm else fn(*args)
    return get_worker().address, result


def _local_hosts() -> set[str]:
    names = set(_LOOPBACK) | {socket.gethostname()}
    with contextlib.suppress(OSError):
        names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    return names


class DaskBackend:
    """``async with DaskBackend(scheduler) as b: async for r in b.map_ordered(fn, jobs): ...``"""

    def __init__(self, scheduler: str | None = None, workers: int | None = None, retries: int = 1) -> None:
        self.scheduler, self.retries = scheduler, retries
        self.workers = workers if workers is not None else default_workers()
        self.placement: Counter[str] = Counter()  # worker address -> jobs it ran
        self.dashboard: str | None = None
        self._client: Any = None
        self._cluster: Any = None
        self._shm = False

    async def __aenter__(self) -> DaskBackend:
        from distributed import Client, LocalCluster

        if self.scheduler:
            self._client = await Client(self.scheduler, asynchronous=True, timeout="30s")
        else:
            self._cluster = await LocalCluster(
                n_workers=max(1, self.workers), threads_per_worker=1, processes=True, asynchronous=True,
                dashboard_address="127.0.0.1:0", host="127.0.0.1", silence_logs=logging.WARNING,
            )  # fmt: skip
            self._client = await Client(self._cluster, asynchronous=True)
        info = self._client.scheduler_info()
        hosts = {urlsplit(addr).hostname for addr in info.get("workers", {})}
        self._shm = bool(hosts) and hosts <= _local_hosts() and os.access(SHM_DIR, os.W_OK)
        self.dashboard = self._client.dashboard_link
        log.info("dask connected", scheduler=self._client.scheduler.address, workers=len(info.get("workers", {})),
                 dashboard=self.dashboard, shared_memory=self._shm)  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            if self._client is not None:
                await self._client.close()
            if self._cluster is not None:
                await self._cluster.close()
            self._client = self._cluster = None

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if self._client is None:
            raise RuntimeError("use DaskBackend in `async with`")
        return self._client.submit(_on_worker, fn, self._shm, *args, pure=False, retries=self.retries)

    def _take(self, produced: tuple[str, Any]) -> Any:
        worker, result = produced
        self.placement[worker] += 1
        return _receive(result)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._take(await self._submit(fn, args))

    async def map_ordered(
        self, fn: Callable[..., Any], jobs: Iterable[tuple[Any, ...]], window: int | None = None
    ) -> AsyncIterator[Any]:
        """Yield ``fn(*job)`` for each job, in order, with at most ``window`` jobs outstanding."""
        live = len(self._client.scheduler_info().get("workers", {})) if self._client is not None else 1
        window = window or max(live, 1) + 1
        pending: deque[Any] = deque()
        it = iter(jobs)
        try:
            for job in it:
                pending.append(self._submit(fn, job))
                if len(pending) >= window:
                    break
            while pending:
                result = self._take(await pending[0])
                pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(self._submit(fn, nxt))
                yield result
        finally:
            with anyio.CancelScope(shield=True):
                await self._drop(pending)

    async def _drop(self, pending: deque[Any]) -> None:
        """Cancel what is outstanding; a finished /dev/shm result nobody will read is unlinked."""
        for fut in pending:
            if fut.status == "finished" and self._shm:
                with contextlib.suppress(Exception):
                    _receive((await fut)[1])
        if pending and self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.cancel(list(pending))
