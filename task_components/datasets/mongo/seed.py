"""Seeding one collection, and the validation pass over a whole pack (PyMongo's ``AsyncMongoClient``).

Seeding creates the collection (a time-series one when declared) and its indexes first, so unique
indexes judge every insert: documents go in unordered bulk writes of ``batch_size`` (1,000 by default)
and a duplicate key (E11000) is counted and reported, not fatal unless asked. Parent ids are read back
from the database once the parents are seeded, so a child only ever references a document that exists.
Generation of a batch (CPU) runs in a worker thread; the next insert waits for it, the event loop never.

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
from pydantic import ValidationError

from task_components.contracts import SeedResult
from task_components.datasets.mongo.model import Batch, CollectionDef, DocPack, ref_paths, ref_values

__all__ = ["CollectionReport", "DuplicateKeysError", "seed_collection", "validate_pack"]

DUPLICATE_KEY = 11000


class DuplicateKeysError(RuntimeError):
    """Raised only with ``fail_on_duplicates``: by default duplicates are counted and reported."""


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
    for index in coll.indexes:
        await target.create_index(list(index.keys), **index.options())
    parents = await _parents(db, coll)
    inserted = duplicates = batches = 0
    first_duplicate = ""
    tag = zlib.crc32(coll.name.encode())
    for first in range(0, count, batch_size):
        rng = np.random.default_rng([seed, tag, first // batch_size])
        batch = Batch(coll.name, rng, first, min(batch_size, count - first), count, parents, pack.origin)
        docs = await anyio.to_thread.run_sync(coll.generate, batch)
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
    names = tuple(i.name for i in coll.indexes)
    return SeedResult(pack.name, coll.name, db.name, inserted, duplicates, batches, names, time.perf_counter() - started)


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
        rep.missing_indexes = [i.name for i in coll.indexes if i.name not in present]
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
