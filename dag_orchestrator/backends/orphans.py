"""Worker processes die with the process that started them, even when it is SIGKILLed.

A SIGKILLed run cannot clean up, and a forkserver or pool worker it leaves behind lives on (the
forkserver waits for requests forever). On Linux ``PR_SET_PDEATHSIG`` asks the kernel to kill a process
when its parent dies, so: the forkserver imports this module as a preload (it sets the signal for itself,
its parent being the run), and each pool worker calls ``die_with_parent`` as its initializer (its parent
being the forkserver). The resource tracker then sees its last user gone and exits too. Importing this
module in any other process does nothing.

The parent may die while the child is still getting there: then ``getppid()`` already names whoever
adopted the child, and comparing it after the request proves nothing. So the expected parent's pid
travels in the environment (``DAG_PIPELINE_PARENT_PID``, set by ``expect_children`` in the run before
it starts the forkserver, and by each process here for its own children): a child that finds another
parent exits at once.

They also ignore SIGHUP: a closed terminal hangs up its whole foreground process group, and a worker
dying of it would turn the run's orderly stop (the run treats SIGHUP as an interruption) into a broken
pool; they end when the run ends, whichever way.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PARENT = "DAG_PIPELINE_PARENT_PID"


def expect_children() -> None:
    """Name this process as the parent its children must find (call before starting them)."""
    os.environ[PARENT] = str(os.getpid())


def die_with_parent() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if not sys.platform.startswith("linux"):
        return
    try:
        parent = int(os.environ.get(PARENT, ""))
    except ValueError:
        parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return
    if os.getppid() != parent:  # the parent died before the request took effect (or before we started)
        os._exit(1)
    expect_children()  # a pool worker forked from here must find this process as its parent


def _is_forkserver() -> bool:
    """This process is multiprocessing's forkserver: ``python -c 'from multiprocessing.forkserver import main; ...'``.
    Any other ``-c`` program that imported the forkserver module (a console's run did) is not."""
    argv = sys.orig_argv  # interpreter flags may come before -c
    command = argv[argv.index("-c") + 1] if "-c" in argv[:-1] else ""
    return "multiprocessing.forkserver" in sys.modules and command.startswith("from multiprocessing.forkserver import main")


if _is_forkserver():
    die_with_parent()
