"""Exclusive locks on what one run must own alone: its run directory, or a resource such as a collection.

Two processes resuming one run id would interleave their journal entries; two runs loading one
collection would drop or double each other's rows. Both are refused up front with a message naming
the holder. The locks are ``flock`` on small files, so the kernel releases them when the holder dies,
however it dies (a SIGKILLed run never leaves a stale lock behind). They guard processes on one
machine; runs on different machines sharing a Milvus are not seen.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["LockHeld", "PathLock", "resource_lock"]


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it."""


class PathLock:
    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self._fd: int | None = None

    def acquire(self, **info: Any) -> PathLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = ", ".join(f"{k} {v}" for k, v in holder.items() if k != "since")
            since = time.strftime("%H:%M:%S", time.localtime(holder["since"])) if "since" in holder else "?"
            raise LockHeld(f"{self.what} is in use by another live process ({who}, since {since})") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), **info, "since": time.time()}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):  # no holder named once released (a live process may lock again)
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _read(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        return {}


def resource_lock(what: str, *identity: str) -> PathLock:
    """A machine-wide lock named by ``identity`` (e.g. a Milvus URI, database and collection)."""
    key = hashlib.sha1("|".join(identity).encode()).hexdigest()[:16]
    return PathLock(Path(tempfile.gettempdir()) / "dag-pipeline-locks" / f"{key}.lock", what)
