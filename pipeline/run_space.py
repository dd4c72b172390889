"""Will the run fit on its disk? A rough estimate of what a run writes into its run directory, said before it starts."""

from __future__ import annotations

from pathlib import Path

import structlog

from config.settings import Settings
from dag_orchestrator.dag import DAG
from dag_orchestrator.diskspace import free_bytes, human
from task_components.base import Component

__all__ = ["estimated_bytes", "warn_if_short_of_space"]


_MB = 1 << 20
# Bytes in the run directory per byte of generated rows (in-memory size), measured on the quickstart:
# Parquet files about 0.8x, Milvus Lite 1.5x, the embedded PostgreSQL 2x plus about 40 MB of its own.
_COPIES = {"partition": 1.0, "lite": 1.5, "embedded_pg": 2.0}
_EMBEDDED_PG_BASE = 40 * _MB


def estimated_bytes(dag: DAG, settings: Settings) -> int:
    """A rough size of what the run will write into its run directory, from the rows it generates.

    Only generated rows are sized (a dataset read from elsewhere is not), so this is a floor for a
    warning before the start, never a reason to refuse one.
    """
    from task_components.generation.task import GenerateParams
    from task_components.schema.arrow import row_bytes

    components = [t for t in dag if isinstance(t, Component)]
    uses = {t.component for t in components}
    rows = sum(t.params.total_rows * row_bytes(t.params.schema) for t in components if isinstance(t.params, GenerateParams))
    lite = bool(uses & {"milvus.bulk_import", "milvus.insert"}) and not settings.milvus.uri
    embedded_pg = "shadow.sync" in uses and settings.postgres.dsn is None
    copies = _COPIES["partition"] * ("partition" in uses) + _COPIES["lite"] * lite
    copies += _COPIES["embedded_pg"] * embedded_pg
    return int(rows * copies) + _EMBEDDED_PG_BASE * embedded_pg


def warn_if_short_of_space(path: Path, run_id: str, dag: DAG, settings: Settings) -> int | None:
    """Warn (never refuse: the estimate is rough) when the run directory's filesystem looks too small.

    Returns the estimate when it exceeds the free space, else None.
    """
    usage = free_bytes(path)
    if usage is None:
        return None
    need = estimated_bytes(dag, settings)
    if need <= usage[0]:
        return None
    structlog.get_logger("pipeline.runner").warning(
        "the run directory's disk may be too small for this run",
        run_id=run_id,
        run_dir=str(path),
        free=human(usage[0]),
        estimated=human(need),
    )
    return need
