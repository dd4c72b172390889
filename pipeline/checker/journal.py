"""In-doubt writes of the checker: written down before each batch, removed once both sides have it.

Why: the shadowing client writes PostgreSQL in an open transaction, then Milvus, then commits. A
``kill -9`` between Milvus' acknowledgement and the commit leaves Milvus holding a batch the shadow
lost (the tracker names the shadow as the wrong side, correctly, but the run's next validation would
fail on damage the checker itself did). Each writer therefore records its batch here first (keys,
operation and row version: enough to rebuild the rows, see ``rows.make_rows``), and a restart replays
every entry through the shadowing client before writing anything new: an insert or upsert becomes an
upsert of the same rows, a delete the same delete, so both sides end holding the same rows whatever
the crash left. One small file per writer slot, replaced atomically (write, fsync, rename).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Intent:
    op: str  # insert, upsert or delete
    keys: list[int]
    version: int  # the rows' version for insert/upsert (rows.make_rows); 0 for delete


def default_dir(uri: str, dsn: str, collection: str) -> Path:
    """One journal per (Milvus, shadow database, collection), under the user's cache directory."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(f"{uri}\x00{dsn}\x00{collection}".encode()).hexdigest()[:16]
    return cache / "dag-pipeline" / "checker" / digest


class JournalBusyError(ValueError):
    """Another checker holds this journal: two writers on one journal would overwrite each other's entries."""


class Journal:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self._lock: int | None = None

    def lock(self) -> None:
        """Hold the journal for this process (released when it exits, however it exits)."""
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalBusyError(
                f"another checker is running with the journal {self.dir} (same Milvus, shadow and collection): "
                "stop it first, or give this one another --collection"
            ) from None
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _path(self, slot: int) -> Path:
        return self.dir / f"intent-{slot}.json"

    def begin(self, slot: int, intent: Intent) -> None:
        path, tmp = self._path(slot), self.dir / f".intent-{slot}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(asdict(intent), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def done(self, slot: int) -> None:
        self._path(slot).unlink(missing_ok=True)

    def pending(self) -> Iterator[tuple[int, Intent]]:
        """Entries a previous process left (it died mid-batch), oldest slot first."""
        for path in sorted(self.dir.glob("intent-*.json")):
            raw = json.loads(path.read_text(encoding="utf-8"))
            yield int(path.stem.split("-", 1)[1]), Intent(raw["op"], [int(k) for k in raw["keys"]], int(raw["version"]))
