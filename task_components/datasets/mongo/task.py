"""``mongo.seed`` and ``mongo.validate``: a document pack's collections as tasks, references as edges.

A collection task must list the tasks seeding the collections its model references (checked when the
graph is built, so exit 2 otherwise): the DAG is the dependency order, and collections that do not
reference each other seed at once. ``mongo.validate`` needs every collection's task; it fails the run
(exit 1) when it finds an orphan, a schema violation or a missing index, after printing its report.
``pack`` is a built-in name or the user's own module or file (``loader``). With no MongoDB configured
both connect to ``mongodb://localhost:27017``, the seeding tool's own default, and log that they do.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from config.settings import Settings
from dag_orchestrator.context import PipelineContext
from dag_orchestrator.task import Task
from task_components.base import Component
from task_components.clients import mongo_client, mongo_uri
from task_components.contracts import SeedResult
from task_components.datasets.mongo.loader import builtin_doc_packs, load_doc_pack
from task_components.datasets.mongo.model import DocPack
from task_components.datasets.mongo.seed import render_report, seed_collection, validate_pack
from task_components.datasets.pack import PackConfigError

__all__ = ["DEFAULT_URI", "DocSeed", "DocValidate", "doc_pack_tasks", "doc_packs", "get_doc_pack", "seeding_database", "seeding_uri"]

log = structlog.get_logger("datasets")


def doc_packs() -> dict[str, DocPack]:
    """The built-in packs by name (a user's own pack is named by module or file, see ``loader``)."""
    return builtin_doc_packs()


def get_doc_pack(name: str) -> DocPack:
    """A built-in pack by name, or the user's own: ``my_module:PACK``, ``path/to/pack.py[:PACK]``."""
    return load_doc_pack(name)


DEFAULT_URI = "mongodb://localhost:27017"


def seeding_uri(settings: Settings) -> str:
    """``MONGODB__CONNECTION_STRING`` (or ``MONGODB__URI``), else the seeding tool's own ``MONGODB_URI``,
    else a MongoDB on localhost, as that tool defaults; the log says which (never the URI's credentials)."""
    if settings.mongodb.connection_string is not None:
        return mongo_uri(settings)
    env = os.environ.get("MONGODB_URI")
    if env:
        log.info("mongo_connection", source="MONGODB_URI")
        return env
    log.info("mongo_default_connection", uri=DEFAULT_URI, reason="none of MONGODB__CONNECTION_STRING, MONGODB__URI, MONGODB_URI is set")
    return DEFAULT_URI


class DocPackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pack: str = Field(description="document pack: a built-in name (ecommerce), my_module:PACK, or path/to/pack.py[:PACK]")
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
    """The collections of ``pack`` that the tasks ``names`` seed (the same pack however it is spelled)."""
    wanted = get_doc_pack(pack)
    return {t.params.collection for n in names if isinstance(t := tasks.get(n), DocSeed) and get_doc_pack(t.params.pack) is wanted}


@asynccontextmanager
async def seeding_database(ctx: PipelineContext, p: DocPackParams) -> AsyncIterator[Any]:
    settings = ctx.services.settings
    client = mongo_client(seeding_uri(settings), serverSelectionTimeoutMS=p.server_selection_timeout_ms, tz_aware=False)
    try:
        yield client[p.database or settings.mongodb.database]
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):  # closed even when a sibling's failure cancels us
            await client.close()


PackP = TypeVar("PackP", bound=DocPackParams)


class _MongoTask(Component[PackP]):
    """Needs no setting: with none, the seeding connects to ``DEFAULT_URI`` (and logs it)."""

    __slots__ = ()


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
        async with seeding_database(ctx, p) as db:
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
        async with seeding_database(ctx, p) as db:
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


def doc_pack_tasks(pack: DocPack | str, **params: Any) -> dict[str, Any]:
    """The ``tasks`` of a pipeline seeding ``pack``: one per collection, references as needs, then validate.
    A user's own pack is passed as its spec (``"my_module:PACK"``, ``"pack.py"``), which the tasks carry."""
    spec = pack if isinstance(pack, str) else pack.name
    resolved = get_doc_pack(spec)
    shared = {k: v for k, v in params.items() if k in ("database", "server_selection_timeout_ms")}
    tasks: dict[str, Any] = {
        c.name: {"uses": "mongo.seed", "needs": list(c.references), "with": {"pack": spec, "collection": c.name, **params}}
        for c in resolved.collections.values()
    }
    tasks["validate"] = {"uses": "mongo.validate", "needs": list(resolved.collections), "with": {"pack": spec, **shared}}
    return tasks
