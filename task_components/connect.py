"""How components reach the stores they share: Milvus (server or Lite) and the shadow PostgreSQL.

Several components talk to the same store (create, import and verify to Milvus; shadow and verify to
PostgreSQL), so where a store is lives here, beside the contracts, not in one component's task module.
With nothing configured the embedded defaults apply: Milvus Lite and a PostgreSQL in the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from config.settings import Settings
from task_components.contracts import MilvusTarget

__all__ = ["count_rows", "embedded_dsn", "shadow_dsn", "target_for"]

_embedded: dict[str, Any] = {}


def target_for(settings: Settings, run_dir: Path | None) -> MilvusTarget:
    m = settings.milvus
    token = m.token.get_secret_value() if m.token else None
    if m.uri:
        return MilvusTarget(m.uri, token, m.db_name, lite=m.uri.endswith(".db"))
    if run_dir is None:
        raise ValueError("MILVUS__URI is not set and the run has no run directory for Milvus Lite")
    return MilvusTarget(str(Path(run_dir).resolve() / "milvus.db"), None, "default", lite=True)


def count_rows(client: Any, collection: str) -> int:
    reply = client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(reply[0]["count(*)"])


def embedded_dsn(run_dir: Path) -> str:
    """Start (once per process) a PostgreSQL in ``<run dir>/postgres``; it stops when the process exits."""
    key = str(run_dir.resolve())
    if key not in _embedded:
        import pgserver

        base = run_dir.resolve() / "postgres"
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)  # pgserver runs PostgreSQL as its own OS user, which must traverse this
        # the data directory itself belongs to pgserver: PostgreSQL refuses one that is not 0700/0750
        _embedded[key] = pgserver.get_server(str(base / "data"), cleanup_mode="stop")
    return str(_embedded[key].get_uri())


async def shadow_dsn(settings: Settings, run_dir: Path | None) -> tuple[str, bool]:
    if settings.postgres.dsn is not None:
        return settings.postgres.dsn.get_secret_value(), False
    if run_dir is None:
        raise ValueError("POSTGRES__DSN is not set and the run has no run directory for an embedded PostgreSQL")
    return await anyio.to_thread.run_sync(embedded_dsn, Path(run_dir)), True
