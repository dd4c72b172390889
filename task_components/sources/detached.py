"""Run a batch's CPU work in a daemon thread, so a signal is honoured while it runs.

The stages of a batch are pure Python; run on the event loop they would keep it from reacting to
SIGTERM until the batch ends (seconds for a large batch with many rules). In a thread the loop keeps
running (the interpreter switches threads every few milliseconds), so cancellation reaches the source
at once. The thread is a *daemon* thread, unlike anyio's worker threads (joined at interpreter exit):
a cancelled batch's thread is abandoned and never keeps the process alive. Its records are not
committed, so a resumed run reads them again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

__all__ = ["run_detached"]

T = TypeVar("T")


async def run_detached(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a fresh daemon thread; its result or exception, or abandoned if cancelled."""
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, which re-raises it
            outcome["error"] = exc
        try:
            anyio.from_thread.run_sync(done.set, token=token)
        except RuntimeError:  # the loop is gone: the run was cancelled and has ended
            pass

    threading.Thread(target=work, name="stream-stages", daemon=True).start()
    await done.wait()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
