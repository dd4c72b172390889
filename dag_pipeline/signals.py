"""A library run's manners with signals: take only what the application leaves free, give back what it had.

The CLI owns its process, so its runs take SIGINT, SIGTERM and SIGHUP outright. A run started from
Python lives in someone else's process: an application that handles a signal itself keeps handling it,
and whatever a run takes is handed back as it was once the run ends (the receiver that stops a run
resets a signal to its default when it closes, and removes an asyncio loop's handler for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import threading
from collections.abc import Iterable, Iterator

__all__ = ["restoring_signals", "unclaimed_signals"]


def unclaimed_signals(signums: Iterable[signal.Signals]) -> tuple[signal.Signals, ...]:
    """The stop signals nobody in this process handles yet: a library run takes only those.

    Still at their default (or at ``asyncio.run``'s own Ctrl-C handler, which only cancels the main
    task); an application's ``signal.signal`` handler, an asyncio loop's ``add_signal_handler`` or an
    ignored signal is the application's to keep, during the run as after it.
    """
    out = []
    for signum in signums:
        handler = signal.getsignal(signum)
        if (
            handler in (signal.SIG_DFL, signal.default_int_handler)
            or isinstance(getattr(handler, "__self__", None), asyncio.Runner)
            or (isinstance(handler, functools.partial) and isinstance(getattr(handler.func, "__self__", None), asyncio.Runner))
        ):
            out.append(signum)
    return tuple(out)


@contextlib.contextmanager
def restoring_signals(signums: Iterable[signal.Signals]) -> Iterator[None]:
    """Afterwards, each signal's handler is what it was before: the receiver that stops the run resets
    them to the default when it closes, which a library must not do to the application it runs in.

    Both kinds are put back: ``signal.signal`` handlers, and an asyncio loop's ``add_signal_handler``
    callbacks (a receiver on the same loop replaces and then removes them).
    """
    signums = tuple(signums)
    if not signums or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in signums}
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    handles = dict(getattr(loop, "_signal_handlers", {}))  # asyncio keeps no public list of them
    try:
        yield
    finally:
        for s, handler in before.items():
            handle = handles.get(s)
            if loop is not None and handle is not None:
                loop.add_signal_handler(s, handle._callback, *handle._args)
            elif handler is not None and signal.getsignal(s) != handler:
                signal.signal(s, handler)
