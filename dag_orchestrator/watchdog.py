"""A server whose users have all died stops within seconds, even when none of them could say so.

An embedded server (the run directory's PostgreSQL) is a daemon of its own: it outlives the process
that started it by design, so several processes can share it, and the last one to exit stops it. A
process killed with SIGKILL (or by a closed terminal before it could clean up) never does, and its
server would run until someone resumes that run, which may be never. So each embedded server gets one
small detached watcher, this module run as a script (``python watchdog.py ...``: it imports nothing of
the package, so it costs a few MB and starts at once). Every ``interval`` seconds it takes the
server's own lock (the one its users take to register and unregister), reads the recorded user pids,
and when none is alive it stops the server (SIGINT to the postmaster: a fast shutdown) and exits. It
also exits as soon as the server is gone, whoever stopped it. Its own session keeps a terminal hangup
from reaching it.

It is started before the server, not after: a process killed while the server starts (initdb and
pg_ctl run in their own sessions and finish without it) is not yet in the server's list of users, so
each starter records its pid in a second list (``starting``) first, and the watcher counts those as
users too. A server that comes up after every user and starter died is stopped as soon as it appears;
when none appears within ``start_grace`` seconds, the start died with its starter and the watch ends.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["alive", "read_users", "split_alive", "watch", "watchdog_script"]


def alive(pid: int) -> bool:
    """A zombie is dead for this purpose: it will never unregister, only its parent's wait reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): kill(0) is all we know
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def read_users(pids_file: Path) -> list[int] | None:
    """The recorded user pids; ``[]`` when the file is gone; None when it cannot be read as a list now.

    pgserver rewrites the file by truncating it first, so an empty or half-written file is a list in
    flux, not "no users": reading it as none would stop a server in use. The caller skips that round.
    """
    try:
        text = pids_file.read_text()
    except FileNotFoundError:
        return []
    except OSError:
        return None
    try:
        pids = json.loads(text)
    except ValueError:
        return None
    if not isinstance(pids, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in pids):
        return None
    return pids


def split_alive(pids: list[int]) -> tuple[list[int], list[int]]:
    """(alive, dead); the caller holds the lock and rewrites the file if it drops any."""
    live = [p for p in pids if alive(p)]
    return live, [p for p in pids if p not in live]


def watchdog_script() -> str:
    """Run as ``python -I <this file>``: -I keeps this directory off sys.path, so no module here shadows one."""
    return str(Path(__file__).resolve())


def _server_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _stop(pid: int, grace: float) -> None:
    """Fast shutdown, then immediate, then kill: a server nobody uses must not linger on a stuck client."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGQUIT, 3.0), (signal.SIGKILL, 3.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive(pid):
            return


def _prune(file: Path) -> tuple[list[int], list[int]] | None:
    """(alive, dead) pids of a list, the dead dropped from the file; None: the list is in flux."""
    users = read_users(file)
    if users is None:
        return None
    live, dead = split_alive(users)
    if dead:
        file.write_text(json.dumps(live))
    return live, dead


def watch(
    pids_file: Path,
    lock_file: Path,
    server_pid_file: Path,
    starting_file: Path | None = None,
    interval: float = 0.5,
    grace: float = 10.0,
    start_grace: float = 30.0,
) -> str:
    """Return why the watch ended: ``gone`` (no server, and no start under way: someone else stopped it),
    ``stopped`` (we did) or ``never started`` (its starter died and no server came up within ``start_grace``).

    A start is under way while a pid in ``starting_file`` lives: each starter records itself there
    (under the lock) before it starts this watcher or the server, and drops itself once registered.
    """
    import fasteners  # the lock pgserver's users take (fcntl.lockf on the same file)

    lock = fasteners.InterProcessLock(str(lock_file))
    _say(
        f"watching the server of {server_pid_file.parent} (users in {pids_file.name}"
        f"{f', starting in {starting_file.name}' if starting_file else ''})"
    )
    unreadable = False
    starter_died: float | None = None  # when a starter was last found dead with no server up
    while True:
        with lock:
            server = _server_pid(server_pid_file)
            up = server is not None and alive(server)
            users = _prune(pids_file)
            starters = _prune(starting_file) if starting_file else ([], [])
            if users is None or starters is None:  # mid-rewrite or damaged: never a reason to stop a server
                if not unreadable:
                    _say("a list of users is empty or not a list of pids: skipping rounds until it is")
                unreadable = True
            elif up and server is not None:
                unreadable, starter_died = False, None
                if not users[0] and not starters[0]:
                    _say(f"every user is dead: stopping server {server}")
                    _stop(server, grace)
                    return "stopped"
            else:
                unreadable = False
                if starters[1]:  # killed while starting: its initdb or pg_ctl may still bring a server up
                    starter_died = time.monotonic()
                if starters[0]:  # a start under way (perhaps again, after someone stopped the server)
                    starter_died = None
                elif starter_died is None:
                    _say("the server is gone (stopped by someone else, or its start failed): leaving")
                    return "gone"
                elif time.monotonic() - starter_died > start_grace:
                    _say(f"no server came up within {start_grace:.0f} s of its last starter's death: leaving")
                    return "never started"
        time.sleep(interval)


def _say(message: str) -> None:
    """One line to stderr, which the starter points at ``postgres/watchdog.log``."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} watchdog[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    """``[--detach PID_FILE] PIDS_FILE LOCK_FILE SERVER_PID_FILE [STARTING_FILE]``.

    ``--detach`` forks: the watcher's pid goes to PID_FILE and the first process exits at once, so the
    watcher is nobody's child (no zombie, no "still running" warning in the process that started it).
    """
    pid_file = None
    if argv[:1] == ["--detach"] and len(argv) > 1:
        pid_file, argv = Path(argv[1]), argv[2:]
    if len(argv) not in (3, 4):
        print("usage: watchdog.py [--detach PID_FILE] PIDS_FILE LOCK_FILE SERVER_PID_FILE [STARTING_FILE]", file=sys.stderr)
        return 2
    pids_file, lock_file, server_pid_file = map(Path, argv[:3])
    starting_file = Path(argv[3]) if len(argv) == 4 else None
    if pid_file is not None:
        child = os.fork()
        if child:
            pid_file.write_text(str(child))
            os._exit(0)
    watch(pids_file, lock_file, server_pid_file, starting_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
