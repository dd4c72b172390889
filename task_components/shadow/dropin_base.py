"""What the sync and async drop-in clients share: where the shadow and the key tracker live, stale-schema errors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from task_components.errors import ShadowSchemaError
from task_components.shadow.mirror import ShadowStore
from task_components.shadow.tracker import KeyStateTracker

PAGE = 16_384  # Milvus' largest query page


def _dsn(pg_dsn: str | None) -> str:
    dsn = pg_dsn or os.environ.get("POSTGRES__DSN", "")
    if not dsn:
        raise ValueError("the shadowing client needs a PostgreSQL DSN: pass pg_dsn=... or set POSTGRES__DSN")
    return dsn


def default_tracker_path(dsn: str) -> Path:
    """One tracker per shadow database, under the user's cache directory (XDG_CACHE_HOME honoured)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dag-pipeline" / "shadow" / hashlib.sha256(dsn.encode()).hexdigest()[:16]


def _shadow_store(
    pg_dsn: str | None, tracker_path: str | Path | None, ignore_vector: bool = False, map_size: int = 1 << 30
) -> tuple[KeyStateTracker | None, ShadowStore]:
    if not isinstance(ignore_vector, bool):  # a string "false" would read as True
        raise TypeError(f"ignore_vector must be True or False, got {ignore_vector!r}")
    dsn = _dsn(pg_dsn)
    if tracker_path == "":
        tracker = None  # explicitly off
    else:
        tracker = KeyStateTracker(Path(tracker_path) if tracker_path else default_tracker_path(dsn), map_size=map_size)
    return tracker, ShadowStore(dsn, tracker, ignore_vector=ignore_vector)


def _stop_portal(portal: Any, portal_cm: Any, store: ShadowStore) -> None:
    try:
        portal.call(store.close)
    finally:
        portal_cm.__exit__(None, None, None)


def _stale(reason: str, exc: BaseException) -> ShadowSchemaError:
    err = ShadowSchemaError(f"{reason} (the error with the stale schema: {type(exc).__name__}: {exc})")
    err.__cause__ = exc
    return err


def _ids(ids: Any) -> list[Any]:
    return list(ids) if isinstance(ids, Sequence) and not isinstance(ids, str | bytes) else [ids]
