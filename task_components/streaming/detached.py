"""Run a batch's CPU work in a thread, so a signal is honoured while it runs, and stop it between records.

The stages of a batch are pure Python; run on the event loop they would keep it from reacting to
SIGTERM until the batch ends (seconds for a large batch with many rules). In a thread the loop keeps
running (the interpreter switches threads every few milliseconds), so cancellation reaches the source
at once. On cancellation the thread is told to stop and the stages see it at their next ``checkpoint()``
(one per record): the thread ends within a record's time, before the interpreter exits (a thread still
inside a C++ extension at exit aborts the process). One that does not end within ``grace`` seconds is
abandoned: it is a daemon thread, unlike anyio's worker threads (joined at exit), so it never keeps the
process alive. A stopped batch is not committed; a resumed run reads it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

__all__ = ["Abandoned", "checkpoint", "run_detached"]

T = TypeVar("T")
_local = threading.local()


class Abandoned(Exception):
    """Raised by ``checkpoint()`` in a thread whose awaiting task was cancelled."""


def checkpoint() -> None:
    """Call between records: raises ``Abandoned`` once the batch's run was cancelled (no-op elsewhere)."""
    stop = getattr(_local, "stop", None)
    if stop is not None and stop.is_set():
        raise Abandoned


async def run_detached(fn: Callable[..., T], *args: Any, grace: float = 3.0) -> T:
    """``fn(*args)`` in a fresh daemon thread: its result or exception; told to stop if cancelled."""
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        _local.stop = stop
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, which re-raises it
            outcome["error"] = exc
        try:
            anyio.from_thread.run_sync(done.set, token=token)
        except RuntimeError:  # the loop is gone: the run was cancelled and has ended
            pass

    threading.Thread(target=work, name="stream-stages", daemon=True).start()
    try:
        await done.wait()
    except BaseException:
        stop.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(grace):
            await done.wait()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
