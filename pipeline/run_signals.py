"""The stop signals of a run: SIGINT, SIGTERM and SIGHUP cancel it; a hangup reaches only the run.

Kept apart from the runner so the rules for signals (nohup, a hung-up terminal, the processes a run
starts) read in one place; ``execute`` installs them for the run's duration.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
from collections.abc import Iterator

import anyio

from dag_orchestrator.executor import Executor

__all__ = ["cancel_on_signal", "hangup_reaches_only_the_run", "stop_signals"]


def stop_signals() -> tuple[signal.Signals, ...]:
    """SIGINT, SIGTERM and SIGHUP, less SIGHUP when this process was started with it ignored.

    ``nohup`` (or a shell's ``disown``-style launch) ignores SIGHUP before exec so the command outlives
    its terminal; installing a receiver would replace that SIG_IGN and turn the caller's "keep going"
    into a cancelled run. Asked at each run's start, before the receiver replaces anything.
    """
    hup_ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    return (signal.SIGINT, signal.SIGTERM) if hup_ignored else (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def cancel_on_signal(executor: Executor, signums: tuple[signal.Signals, ...]) -> None:
    hung_up = False
    with anyio.open_signal_receiver(*signums) as signals:
        async for signum in signals:
            hung_up = signum == signal.SIGHUP
            if hung_up:
                _leave_hung_up_terminal()
            executor.cancel(f"interrupted by {signal.Signals(signum).name}")
            break
    if hung_up:  # the receiver is gone (default: terminate); a second hangup must not cut the cleanup short
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


@contextlib.contextmanager
def hangup_reaches_only_the_run(signums: tuple[signal.Signals, ...]) -> Iterator[None]:
    """While the run lasts, the processes it starts never die of the terminal's hangup; the run does.

    A closed terminal (or the shell relaying it) sends SIGHUP to the whole process group: initdb
    half-way through creating the embedded PostgreSQL, the multiprocessing resource tracker, the
    forkserver, Milvus Lite. Any of them dying of it turns an orderly stop into a broken one (a data
    directory initdb could not clean up, a resource tracker's tracebacks). A blocked signal is inherited
    by every thread created afterwards and every process they start, so SIGHUP is blocked in this
    (the loop's) thread for the run, and one listener thread, the only one with it unblocked, takes it
    for the whole process: Python's handler there wakes the event loop, which cancels the run.
    """
    if signal.SIGHUP not in signums or threading.current_thread() is not threading.main_thread():
        yield
        return
    stop = threading.Event()

    def listen() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        stop.wait()

    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    listener = threading.Thread(target=listen, name="sighup", daemon=True)
    listener.start()
    try:
        yield
    finally:
        stop.set()
        listener.join(5)
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _leave_hung_up_terminal() -> None:
    """After a hangup every write to the terminal fails (EIO): point those descriptors at /dev/null.

    The run still has to stop its tasks, write its report and print its summary; none of that may die
    on a terminal nobody reads any more. Pipes and files are kept, and so is a terminal that still
    answers (a deliberate ``kill -HUP`` while someone watches: the summary still reaches them). A
    hung-up terminal is a character device that answers isatty with EIO, i.e. False.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                if stat.S_ISCHR(os.fstat(fd).st_mode) and not os.isatty(fd):
                    os.dup2(devnull, fd)
    finally:
        os.close(devnull)
