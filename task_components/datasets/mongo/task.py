"""``mongo.seed`` and ``mongo.validate``: a document pack's collections as tasks, references as edges.

A collection task must list the tasks seeding the collections its model references (checked when the
graph is built, so exit 2 otherwise): the DAG is the dependency order, and collections that do not
reference each other seed at once. ``mongo.validate`` needs every collection's task; it fails the run
(exit 1) when it finds an orphan, a schema violation or a missing index, after printing its report.
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.task import Task
from task_components.base import Component
from task_components.clients import mongo_client, mongo_uri
from task_components.connect import missing
from task_components.contracts import SeedResult
from task_components.datasets.mongo.model import DocPack
from task_components.datasets.mongo.seed import render_report, seed_collection, validate_pack
from task_components.datasets.pack import PackConfigError

__all__ = ["DocSeed", "DocValidate", "doc_pack_tasks", "doc_packs", "get_doc_pack"]


def doc_packs() -> dict[str, DocPack]:
    from task_components.datasets.mongo.ecommerce import ECOMMERCE

    return {ECOMMERCE.name: ECOMMERCE}


def get_doc_pack(name: str) -> DocPack:
    known = doc_packs()
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known document packs: {', '.join(sorted(known))}"
    raise PackConfigError(f"unknown document pack {name!r}{hint}")


class DocPackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pack: str = Field(description="document pack name, e.g. ecommerce")
    database: str | None = Field(None, description="default: MONGODB__DATABASE")
    server_selection_timeout_ms: int = Field(5000, ge=100)

    @model_validator(mode="after")
    def _known(self) -> DocPackParams:
        get_doc_pack(self.pack)
        return self


class SeedParams(DocPackParams):
    collection: str
    seed: int = 42
    scale: float = Field(1.0, gt=0, description="multiplies the pack's document counts")
    count: int | None = Field(None, ge=1, description="documents to seed (default: the pack's count x scale)")
    batch_size: int = Field(1000, ge=1, le=100_000, description="documents per bulk write")
    drop: bool = Field(True, description="drop the collection first, so a seeding is repeatable")
    fail_on_duplicates: bool = Field(False, description="fail on a duplicate key instead of reporting it")

    @model_validator(mode="after")
    def _known_collection(self) -> SeedParams:
        colls = get_doc_pack(self.pack).collections
        if self.collection not in colls:
            close = difflib.get_close_matches(self.collection, colls, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; collections: {', '.join(colls)}"
            raise PackConfigError(f"pack {self.pack!r} has no collection {self.collection!r}{hint}")
        return self


def _seeded(tasks: Mapping[str, Task], names: Any, pack: str) -> set[str]:
    return {t.params.collection for n in names if isinstance(t := tasks.get(n), DocSeed) and t.params.pack == pack}


@asynccontextmanager
async def _database(ctx: PipelineContext, p: DocPackParams) -> AsyncIterator[Any]:
    settings = ctx.services.settings
    client = mongo_client(settings, serverSelectionTimeoutMS=p.server_selection_timeout_ms, tz_aware=False)
    try:
        yield client[p.database or settings.mongodb.database]
    finally:
        await client.close()


PackP = TypeVar("PackP", bound=DocPackParams)


class _MongoTask(Component[PackP]):
    __slots__ = ()

    def settings_problem(self, settings: Any) -> str | None:
        return missing(mongo_uri, settings)


class DocSeed(_MongoTask[SeedParams]):
    __slots__ = ()
    component = "mongo.seed"
    summary = "seed one collection of a document pack (bulk writes, indexes, references to seeded parents)"
    Params = SeedParams
    Result = SeedResult

    def needs_problem(self, tasks: dict[str, Task]) -> str | None:
        p = self.params
        refs = get_doc_pack(p.pack).collections[p.collection].references
        missing = [r for r in refs if r not in _seeded(tasks, self.needs, p.pack)]
        if missing:
            names = ", ".join(missing)
            return f"collection {p.collection!r} references {names}: the task(s) seeding them must be needs"
        return None

    async def run(self, ctx: PipelineContext) -> SeedResult:
        p = self.params
        pack = get_doc_pack(p.pack)
        coll = pack.collections[p.collection]
        count = p.count or max(1, round(coll.count * p.scale))
        async with _database(ctx, p) as db:
            return await seed_collection(
                db, pack, coll, seed=p.seed, count=count, batch_size=p.batch_size, drop=p.drop, fail_on_duplicates=p.fail_on_duplicates
            )

    def summarize(self, result: SeedResult) -> dict[str, Any]:
        rate = result.inserted / result.seconds if result.seconds else 0.0
        return {
            "inserted": result.inserted,
            "duplicates": result.duplicates,
            "batches": result.batches,
            "indexes": len(result.indexes),
            "docs/s": f"{rate:,.0f}",
        }


class DocValidate(_MongoTask[DocPackParams]):
    __slots__ = ()
    component = "mongo.validate"
    summary = "validate a seeded document pack: orphans, schema violations, missing indexes (must be zero)"
    Params = DocPackParams
    Result = dict
    needs_types = (SeedResult,)

    def needs_problem(self, tasks: dict[str, Task]) -> str | None:
        p = self.params
        missing = [c for c in get_doc_pack(p.pack).collections if c not in _seeded(tasks, self.needs, p.pack)]
        if missing:
            return f"validates pack {p.pack!r} after every collection: missing needs for {', '.join(missing)}"
        return None

    async def run(self, ctx: PipelineContext) -> dict[str, Any]:
        p = self.params
        pack = get_doc_pack(p.pack)
        seeded = {r.collection: r for n in self.needs if isinstance(r := ctx.result(n), SeedResult)}
        async with _database(ctx, p) as db:
            reports = await validate_pack(db, pack)
            text = render_report(pack.name, db.name, reports, seeded)
        print(text, flush=True)  # the report is the point of this task: shown whatever the log settings
        if ctx.run_dir is not None:
            (ctx.run_dir / f"{pack.name}_validation.txt").write_text(text + "\n")
        result = {
            "documents": sum(r.documents for r in reports),
            "orphans": sum(r.orphans for r in reports),
            "schema_violations": sum(r.schema_violations for r in reports),
            "missing_indexes": sum(len(r.missing_indexes) for r in reports),
            "duplicates": sum(s.duplicates for s in seeded.values()),
            "collections": {
                r.collection: {"documents": r.documents, "orphans": r.orphans, "schema_violations": r.schema_violations} for r in reports
            },
        }
        bad = [r for r in reports if not r.ok]
        if bad:
            raise RuntimeError(
                f"validation found problems in {', '.join(r.collection for r in bad)}: "
                f"{bad[0].first_problem or 'missing indexes or no documents'}"
            )
        return result

    def summarize(self, result: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in result.items() if k != "collections"}


def doc_pack_tasks(pack: DocPack, **params: Any) -> dict[str, Any]:
    """The ``tasks`` of a pipeline seeding ``pack``: one per collection, references as needs, then validate."""
    shared = {k: v for k, v in params.items() if k in ("database", "server_selection_timeout_ms")}
    tasks: dict[str, Any] = {
        c.name: {"uses": "mongo.seed", "needs": list(c.references), "with": {"pack": pack.name, "collection": c.name, **params}}
        for c in pack.collections.values()
    }
    tasks["validate"] = {"uses": "mongo.validate", "needs": list(pack.collections), "with": {"pack": pack.name, **shared}}
    return tasks
