"""Worker processes (or threads) behind an async, ordered, bounded map.

Why a bounded window: results are large (Arrow batches of tens of MB); submitting every job at once
would hold them all in memory. At most ``window`` jobs are in flight or waiting to be consumed, so
memory stays at ``window`` results whatever the dataset size. Results come back in submission order,
which is what makes streamed output deterministic.

Arrow results cross the process boundary through shared memory: the worker writes the batch as an
Arrow IPC file in ``/dev/shm`` and returns its path; the parent memory-maps it (zero copy) and unlinks
it at once, so the pages live exactly as long as the batch. Pickling a 24 MB batch through a pipe cost
more than generating it. A result nobody consumed (cancellation) is unlinked by a done-callback.

Processes start with ``forkserver`` (never ``fork``: the parent runs an event loop and client threads
that must not be duplicated mid-state), preloading the modules the jobs need so each worker pays the
numpy/pyarrow import once. The forkserver and every worker die with the run even when it is SIGKILLed
(``orphans``), so a killed run strands no process. The first worker is requested from a worker
thread (``_ready``): that submit waits for the forkserver to import its preload, about 0.5 s during
which the event loop, and so every other task, the progress view and signal handling, would stand
still. The forkserver itself is started from the loop's thread, never a worker thread: the kernel's
parent-death signal follows the thread that started a process, and anyio retires idle threads.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import forkserver
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pyarrow as pa

from dag_orchestrator.backends.orphans import die_with_parent, expect_children
from dag_orchestrator.watchdog import alive

SHM_DIR = "/dev/shm"
SHM_PREFIX = "dag-pipeline-"
_SHM_NAME = re.compile(rf"{SHM_PREFIX}(\d+)-[0-9a-f]{{32}}\.arrow")


class _ShmBatch:
    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def _call_via_shm(owner: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Runs in the worker: an Arrow batch goes out through shared memory, anything else is pickled. The file
    is named after ``owner``, the process that will read it, so ``sweep_shm`` can tell when nobody will."""
    result = fn(*args)
    if isinstance(result, pa.RecordBatch):
        path = os.path.join(SHM_DIR, f"{SHM_PREFIX}{owner}-{uuid.uuid4().hex}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, result.schema) as writer:
            writer.write_batch(result)
        del result
        pa.default_memory_pool().release_unused()  # the batch now lives in /dev/shm: give its pages back
        return _ShmBatch(path)
    return result


def _receive(result: Any) -> Any:
    if isinstance(result, _ShmBatch):
        try:
            with pa.memory_map(result.path) as source:
                return pa.ipc.open_file(source).get_batch(0)
        finally:
            os.unlink(result.path)
    return result


def _discard(fut: Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is None and isinstance(fut.result(), _ShmBatch):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fut.result().path)


def sweep_shm() -> int:
    """Remove results whose owner is gone (a run killed with SIGKILL never unlinks them, and /dev/shm is
    RAM until reboot); returns how many. Run when a backend starts, so the next run cleans up after a kill."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    removed = 0
    for name in names:
        m = _SHM_NAME.fullmatch(name)
        if m is None or alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(SHM_DIR, name))
            removed += 1
    return removed


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


async def _result_of(fut: Future[Any]) -> Any:
    """Wait for a concurrent future without blocking the event loop or holding a thread (anyio only)."""
    if not fut.done():
        done = anyio.Event()
        token = anyio.lowlevel.current_token()
        loop_thread = threading.get_ident()

        def wake(_: Future[Any]) -> None:
            if threading.get_ident() == loop_thread:  # already done when the callback was added
                done.set()
                return
            try:
                anyio.from_thread.run_sync(done.set, token=token)
            except RuntimeError:  # the run has ended: nobody waits for this result any more
                pass

        fut.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:  # cancelled: drop the job, or unlink its shared-memory result when it lands
            if not fut.cancel():
                fut.add_done_callback(_discard)
            raise
    return fut.result()


class LocalBackend:
    def __init__(self, workers: int | None = None, preload: Sequence[str] = ()) -> None:
        self.workers = default_workers() if workers is None else workers
        self.preload = list(preload)
        self._pool: Executor | None = None
        self._started = False

    @property
    def _shm(self) -> bool:
        return self.workers > 0 and os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        if self._shm:
            return self._executor().submit(_call_via_shm, os.getpid(), fn, *args)
        return self._executor().submit(fn, *args)

    def _executor(self) -> Executor:
        if self._pool is None:
            self._pool = self._create()
        return self._pool

    def _create(self) -> Executor:
        if self._shm:
            sweep_shm()
        if self.workers == 0:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpu")
        ctx = mp.get_context("forkserver")
        expect_children()  # the forkserver checks it was started by this process, still alive
        ctx.set_forkserver_preload(["dag_orchestrator.backends.orphans", *self.preload])
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=die_with_parent)

    async def _ready(self) -> None:
        """Start the pool and its first worker without blocking the loop (see the module docstring)."""
        if self._started:
            return
        pool = self._executor()
        if isinstance(pool, ProcessPoolExecutor):
            forkserver.ensure_running()  # returns at once; the forkserver imports its preload on its own
            await anyio.to_thread.run_sync(pool.submit, int)  # returns once the forkserver has forked a worker
        self._started = True

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        await self._ready()
        return _receive(await _result_of(self._submit(fn, args)))

    async def map_ordered(self, fn: Callable[..., Any], jobs: Iterable[tuple[Any, ...]], window: int | None = None) -> AsyncIterator[Any]:
        """Yield ``fn(*job)`` for each job, in order, with at most ``window`` jobs outstanding."""
        window = window or max(self.workers, 1) + 1  # one spare: each worker always has its next job
        await self._ready()
        pending: deque[Future[Any]] = deque()
        it = iter(jobs)
        try:
            for job in it:
                pending.append(self._submit(fn, job))
                if len(pending) >= window:
                    break
            while pending:
                result = _receive(await _result_of(pending[0]))
                pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(self._submit(fn, nxt))
                yield result
        finally:
            for fut in pending:
                if not fut.cancel():
                    fut.add_done_callback(_discard)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._started = False

    async def __aenter__(self) -> LocalBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            self.close()
