"""A full disk (or an exhausted quota) is named as one: the path that could not be written and the space left beside it.

Without this a full disk shows up as whatever the writer's library makes of it (pyarrow's "Error
writing bytes", initdb's exit status 1, a bare ``[Errno 28]``), and a person goes looking for a bug.
Every place that writes a run's own files (request, journal, results, report) goes through
``naming_enospc``; a task's failure is passed through ``explain`` when it is recorded, so a component's
write (a partition file) is named the same way without each component knowing about it.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DiskFullError", "explain", "free_bytes", "human", "is_enospc", "naming_enospc", "space_note"]


class DiskFullError(OSError):
    """ENOSPC (or EDQUOT) with the path and the free space in its message (its errno kept for callers).

    A quota is said as one: "no space left" beside a filesystem with gigabytes free sends a person to
    the wrong place.
    """

    def __init__(self, path: str | Path, action: str = "writing", code: int = errno.ENOSPC) -> None:
        super().__init__(code, f"{_what(code)} {action} {path}: {space_note(path)}", str(path))

    def __str__(self) -> str:
        return str(self.strerror)


def free_bytes(path: str | Path) -> tuple[int, int] | None:
    """(free, total) bytes of the filesystem holding ``path`` or its nearest existing parent."""
    p = Path(path).absolute()
    for candidate in (p, *p.parents):
        try:
            usage = shutil.disk_usage(candidate)
        except OSError:
            continue
        return usage.free, usage.total
    return None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def space_note(path: str | Path) -> str:
    usage = free_bytes(path)
    if usage is None:
        return "free space unknown"
    free, total = usage
    return f"{human(free)} free of {human(total)} on its filesystem"


def _what(code: int | None) -> str:
    return "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"


def is_enospc(exc: BaseException) -> bool:
    """An OSError with ENOSPC, or a library's wrapping of one that kept only the text (pyarrow)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return isinstance(exc, OSError) and ("No space left on device" in text or "[errno 28]" in text.lower())


def explain(exc: BaseException, fallback: str | Path | None) -> str | None:
    """The disk-full sentence for ``exc`` (None when it is not one); ``fallback`` when it names no file."""
    if isinstance(exc, DiskFullError) or not is_enospc(exc):
        return None
    where = getattr(exc, "filename", None) or fallback
    what = _what(getattr(exc, "errno", None))
    if where is None:
        return what
    return f"{what} writing {where}: {space_note(where)}"


@contextmanager
def naming_enospc(path: str | Path, action: str = "writing") -> Iterator[None]:
    """Re-raise a disk-full OSError as DiskFullError naming ``path``; any other error passes unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if is_enospc(exc):
            code = errno.EDQUOT if exc.errno == errno.EDQUOT else errno.ENOSPC
            raise DiskFullError(getattr(exc, "filename", None) or path, action, code) from exc
        raise
