"""Seeding one collection, and the validation pass over a whole pack (PyMongo's ``AsyncMongoClient``).

Seeding creates the collection (a time-series one when declared) and its indexes first, so unique
indexes judge every insert: documents go in unordered bulk writes of ``batch_size`` (1,000 by default)
and a duplicate key (E11000) is counted and reported, not fatal unless asked. Parent ids are read back
from the database once the parents are seeded, so a child only ever references a document that exists.
Generation of a batch (CPU) runs in a worker thread; the next insert waits for it, the event loop never.

A declared index the server refuses fails the seeding with the collection, index and kind named
(``IndexRefusedError``), unless the index is ``optional`` and the server says its kind is unsupported:
then it is skipped with a warning (``mongo_index_skipped``) and the validation pass does not ask for it.

Validation re-reads every document: each must satisfy its pydantic model (types, ranges, computed
fields), every reference must resolve to a stored parent, every declared index must exist.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
import structlog
from pydantic import ValidationError

from task_components.contracts import SeedResult
from task_components.datasets.mongo.model import Batch, CollectionDef, DocPack, IndexDef, ref_paths, ref_values

__all__ = ["CollectionReport", "DuplicateKeysError", "IndexRefusedError", "seed_collection", "validate_pack"]

DUPLICATE_KEY = 11000
CANNOT_CREATE_INDEX = 67
COMMAND_NOT_SUPPORTED = 115
log = structlog.get_logger("datasets")


class DuplicateKeysError(RuntimeError):
    """Raised only with ``fail_on_duplicates``: by default duplicates are counted and reported."""


class IndexRefusedError(RuntimeError):
    """The server would not create a declared index (e.g. SecantusDB: no text or hashed indexes)."""


def _unsupported(exc: Exception) -> bool:
    code = getattr(exc, "code", None)
    return code in (CANNOT_CREATE_INDEX, COMMAND_NOT_SUPPORTED) or "not supported" in str(exc).lower()


def _same(info: Mapping[str, Any] | None, index: IndexDef) -> bool:
    """Whether an existing index (``list_indexes``) already is ``index``, so it is not created again: a
    server may refuse an identical 2dsphere index as a conflict (SecantusDB compares its stored
    2dsphereIndexVersion), and a seeding with ``drop=False`` finds every index already there."""
    if info is None:
        return False
    key = [(f, int(k) if isinstance(k, int | float) else k) for f, k in dict(info["key"]).items()]
    same_key = "_fts" in dict(info["key"]) if index.kind.endswith("text") else key == [tuple(k) for k in index.keys]
    return (
        same_key
        and bool(info.get("unique", False)) == index.unique
        and info.get("expireAfterSeconds") == index.ttl_seconds
        and info.get("partialFilterExpression") == (dict(index.partial) if index.partial else None)
    )


async def _create_index(target: Any, collection: str, index: IndexDef) -> bool:
    """Create ``index``; False if the server does not support its kind and it is optional (logged). Any
    other refusal names the collection, the index and its kind, with the server's own words."""
    from pymongo.errors import OperationFailure

    try:
        await target.create_index(list(index.keys), **index.options())
    except OperationFailure as exc:
        reason = str((exc.details or {}).get("errmsg") or exc)
        if index.optional and _unsupported(exc):
            log.warning("mongo_index_skipped", collection=collection, index=index.name, kind=index.kind, reason=reason)
            return False
        hint = " (mark it optional=True to seed without it where unsupported)" if _unsupported(exc) else ""
        raise IndexRefusedError(
            f"collection {collection!r}: the server refused index {index.name!r} (kind {index.kind}): {reason}{hint}"
        ) from None
    return True


async def _parents(db: Any, coll: CollectionDef) -> dict[str, Sequence[Any]]:
    out: dict[str, Sequence[Any]] = {}
    for parent in coll.references:
        wanted = coll.parent_fields.get(parent, ())
        rows = [d async for d in db[parent].find({}, {"_id": 1, **dict.fromkeys(wanted, 1)}).sort("_id", 1)]
        if not rows:
            raise RuntimeError(f"{coll.name} references {parent}, which holds no documents")
        out[parent] = [d["_id"] for d in rows]
        for f in wanted:
            out[f"{parent}.{f}"] = [d.get(f) for d in rows]
    return out


async def seed_collection(
    db: Any,
    pack: DocPack,
    coll: CollectionDef,
    *,
    seed: int,
    count: int,
    batch_size: int = 1000,
    drop: bool = True,
    fail_on_duplicates: bool = False,
) -> SeedResult:
    from pymongo.errors import BulkWriteError

    started = time.perf_counter()
    if drop:
        await db.drop_collection(coll.name)
    if coll.timeseries is not None and coll.name not in await db.list_collection_names():
        await db.create_collection(coll.name, timeseries=coll.timeseries.options())
    target = db[coll.name]
    existing = {i["name"]: i async for i in await target.list_indexes()}
    created = [i.name for i in coll.indexes if _same(existing.get(i.name), i) or await _create_index(target, coll.name, i)]
    parents = await _parents(db, coll)
    inserted = duplicates = batches = 0
    first_duplicate = ""
    tag = zlib.crc32(coll.name.encode())
    for first in range(0, count, batch_size):
        rng = np.random.default_rng([seed, tag, first // batch_size])
        batch = Batch(coll.name, rng, first, min(batch_size, count - first), count, parents, pack.origin, pack.locale)
        docs = await anyio.to_thread.run_sync(coll.documents, batch)
        batches += 1
        try:
            result = await target.insert_many(docs, ordered=False)
            inserted += len(result.inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if other:
                raise RuntimeError(f"{coll.name}: MongoDB refused {len(other)} documents; first: {other[0].get('errmsg')}") from None
            inserted += exc.details.get("nInserted", 0)
            duplicates += len(errors)
            first_duplicate = first_duplicate or str(errors[0].get("errmsg", ""))[:200]
    if duplicates and fail_on_duplicates:
        raise DuplicateKeysError(f"{coll.name}: {duplicates} documents refused as duplicate keys; first: {first_duplicate}")
    return SeedResult(pack.name, coll.name, db.name, inserted, duplicates, batches, tuple(created), time.perf_counter() - started)


@dataclass(slots=True)
class CollectionReport:
    collection: str
    documents: int = 0
    orphans: int = 0  # documents with at least one reference to a missing parent
    schema_violations: int = 0
    missing_indexes: list[str] = field(default_factory=list)
    first_problem: str = ""

    @property
    def ok(self) -> bool:
        return not (self.orphans or self.schema_violations or self.missing_indexes) and self.documents > 0


async def validate_pack(db: Any, pack: DocPack, collections: Sequence[str] | None = None) -> list[CollectionReport]:
    names = list(collections or pack.collections)
    ids: dict[str, set[Any]] = {}
    for name in {p for n in names for p in pack.collections[n].references} | set(names):
        ids[name] = {d["_id"] async for d in db[name].find({}, {"_id": 1})}
    reports = []
    for name in names:
        coll = pack.collections[name]
        rep = CollectionReport(name)
        paths = ref_paths(coll.model)
        async for doc in db[name].find({}):
            rep.documents += 1
            try:
                coll.model.model_validate(doc)
            except ValidationError as exc:
                rep.schema_violations += 1
                rep.first_problem = rep.first_problem or f"{doc.get('_id')}: {exc.errors()[0]['msg']}"
            missing = [(p, v) for p, parent in paths for v in ref_values(doc, p) if v not in ids[parent]]
            if missing:
                rep.orphans += 1
                rep.first_problem = rep.first_problem or f"{doc.get('_id')}: {'.'.join(missing[0][0])} -> missing"
        present = {i["name"] async for i in await db[name].list_indexes()}
        rep.missing_indexes = [i.name for i in coll.indexes if i.name not in present and not i.optional]
        reports.append(rep)
    return reports


def render_report(pack: str, database: str, reports: Sequence[CollectionReport], seeded: Mapping[str, Any]) -> str:
    """The printed validation report: one line per collection, then the verdict."""
    head = f"{'collection':<14}{'documents':>10}{'duplicates':>11}{'orphans':>9}{'violations':>11}  indexes missing"
    lines = [f"validation of pack {pack!r} in database {database!r}", head]
    for r in reports:
        dup = getattr(seeded.get(r.collection), "duplicates", "-")
        lines.append(
            f"{r.collection:<14}{r.documents:>10}{dup!s:>11}{r.orphans:>9}{r.schema_violations:>11}  {', '.join(r.missing_indexes) or '-'}"
        )
        if r.first_problem:
            lines.append(f"  first problem: {r.first_problem}")
    verdict = "OK" if all(r.ok for r in reports) else "PROBLEMS FOUND"
    lines.append(f"{verdict}: {sum(r.orphans for r in reports)} orphans, {sum(r.schema_violations for r in reports)} schema violations")
    return "\n".join(lines)
