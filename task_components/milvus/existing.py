"""``milvus.existing``: a collection loaded earlier, by anyone, as the result a load task would have had.

``verify`` compares a dataset with what an import or insert task put into Milvus. To verify a data
directory against a collection without the run that loaded it (it may have been loaded by milvus-ingest,
or by hand), this task describes the live collection (its indexes, so search uses the metric it was built
with) and pairs it with the dataset's manifest. The schema is the manifest's: it is what the files say
the rows must hold, which is what is being checked.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from dag_orchestrator.context import PipelineContext
from task_components.base import Component
from task_components.clients import milvus_client, milvus_target
from task_components.connect import count_rows
from task_components.contracts import CollectionInfo, ImportResult, Manifest


class ExistingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="collection name (default: the dataset schema's)")


def describe_indexes(client: Any, name: str) -> dict[str, dict[str, Any]]:
    """Index settings by field name, in the shape milvus.create_collection records them."""
    found: dict[str, dict[str, Any]] = {}
    for index in client.list_indexes(name):
        d = client.describe_index(name, index)
        field = d.get("field_name")
        if field:
            params = {
                k: v
                for k, v in d.items()
                if k
                not in (
                    "field_name",
                    "index_name",
                    "index_type",
                    "metric_type",
                    "total_rows",
                    "indexed_rows",
                    "pending_index_rows",
                    "state",
                )
            }
            found[field] = {"index_type": d.get("index_type"), "metric_type": d.get("metric_type"), "params": params}
    return found


class Existing(Component[ExistingParams]):
    __slots__ = ()
    component = "milvus.existing"
    Result = ImportResult
    needs_types = (Manifest,)
    summary = "an existing collection paired with a dataset, so `verify` can check a collection loaded earlier"
    Params = ExistingParams
    default_kind = "milvus"

    async def run(self, ctx: PipelineContext) -> ImportResult:
        p = self.params
        manifest: Manifest | None = self.upstream(ctx, Manifest)
        if manifest is None:
            raise ValueError("milvus.existing needs a dataset.load (or partition) task among its needs")
        target = milvus_target(ctx.services.settings, ctx.run_dir)
        name = p.collection or manifest.collection_schema.collection_name
        started = time.perf_counter()

        def describe() -> tuple[dict[str, dict[str, Any]], int]:
            client = milvus_client(target)
            try:
                if not client.has_collection(name):
                    raise LookupError(f"collection {name!r} does not exist at {target.uri} (--collection-name?)")
                return describe_indexes(client, name), count_rows(client, name)
            finally:
                client.close()

        indexes, rows = await anyio.to_thread.run_sync(describe)
        info = CollectionInfo(name=name, collection_schema=manifest.collection_schema, indexes=indexes, target=target.public())
        return ImportResult(
            collection=name,
            method="existing",
            rows_in_milvus=rows,
            rows_expected=manifest.total_rows,
            files=len(manifest.files),
            seconds=time.perf_counter() - started,
            info=info,
            manifest=manifest,
        )

    def summarize(self, result: ImportResult) -> dict[str, Any]:
        return {"collection": result.collection, "rows in milvus": result.rows_in_milvus}
