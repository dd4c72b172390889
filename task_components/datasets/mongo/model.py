"""How a document pack is described: pydantic models with typed references, indexes, and generators.

A collection is a pydantic model (the schema every document must satisfy, including computed fields
checked by model validators), its indexes, a document count and a generator. A field that refers to
another collection says so in its type, ``Annotated[ObjectId, Ref("users")]``, anywhere in the model
(also inside lists of sub-documents): the references are read from the models, so they are at once the
seeding order (the DAG edges), what the seeder draws parent ids from, and what the validation pass
counts orphans against. Nothing about references is written twice.

Generators are vectorized per batch: they get a numpy generator keyed by (seed, collection, batch),
the batch's position, and the ids of the parent collections as stored (read back after the parents
were seeded, so a parent rejected as a duplicate is never referenced).
"""

from __future__ import annotations

import struct
import types
import typing
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from bson import ObjectId
from pydantic import BaseModel

__all__ = [
    "Batch",
    "CollectionDef",
    "DocPack",
    "IndexDef",
    "Ref",
    "TimeSeries",
    "doc_ids",
    "ref_paths",
    "ref_values",
    "time_ordered",
    "weighted",
]


@dataclass(frozen=True, slots=True)
class Ref:
    """Marks a field as holding the ``_id`` of a document of ``collection``."""

    collection: str


@dataclass(frozen=True, slots=True)
class IndexDef:
    keys: tuple[tuple[str, Literal[1, -1]], ...]  # (field, direction): compound when several
    name: str
    unique: bool = False
    ttl_seconds: int | None = None  # a TTL index: documents expire this long after the (date) field

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"name": self.name}
        if self.unique:
            opts["unique"] = True
        if self.ttl_seconds is not None:
            opts["expireAfterSeconds"] = self.ttl_seconds
        return opts


@dataclass(frozen=True, slots=True)
class TimeSeries:
    time_field: str
    meta_field: str | None = None
    granularity: Literal["seconds", "minutes", "hours"] = "seconds"

    def options(self) -> dict[str, Any]:
        opts = {"timeField": self.time_field, "granularity": self.granularity}
        if self.meta_field:
            opts["metaField"] = self.meta_field
        return opts


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch to generate: documents ``first .. first+count-1`` of ``total``, and the parents as stored
    (``parents["users"]``: their ids; ``parents["products.price_cents"]``: a field asked for in
    ``parent_fields``, aligned with the ids)."""

    collection: str
    rng: np.random.Generator
    first: int
    count: int
    total: int
    parents: Mapping[str, Sequence[Any]]
    origin: datetime

    def ids(self) -> list[ObjectId]:
        return doc_ids(self.collection, self.first, self.count, self.origin)

    def times(self, start: datetime, span: timedelta) -> list[datetime]:
        return time_ordered(start, span, self.first, self.count, self.total, self.rng)


Generator = Callable[[Batch], list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class CollectionDef:
    name: str
    model: type[BaseModel]
    count: int
    generate: Generator
    indexes: tuple[IndexDef, ...] = ()
    timeseries: TimeSeries | None = None
    parent_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # beyond _id, per parent

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(coll for _, coll in ref_paths(self.model)))


@dataclass(frozen=True, slots=True)
class DocPack:
    name: str
    summary: str
    collections: Mapping[str, CollectionDef]
    origin: datetime = field(default=datetime(2024, 1, 1))  # time-ordered fields start here


def _refs_in(annotation: Any) -> tuple[list[Ref], list[type[BaseModel]]]:
    """The Ref markers and nested models found in one field annotation (through Optional/list/Annotated)."""
    refs: list[Ref] = []
    models: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        a = stack.pop()
        if typing.get_origin(a) is typing.Annotated:
            base, *meta = typing.get_args(a)
            refs += [m for m in meta if isinstance(m, Ref)]
            stack.append(base)
        elif isinstance(a, type) and issubclass(a, BaseModel):
            models.append(a)
        elif typing.get_origin(a) in (list, tuple, typing.Union, types.UnionType):
            stack += [x for x in typing.get_args(a) if x is not type(None) and x is not Ellipsis]
    return refs, models


def ref_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(path to the field, referenced collection) for every reference in ``model``, nested ones too."""
    out: list[tuple[tuple[str, ...], str]] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        refs, nested = _refs_in(info.rebuild_annotation())
        out += [((*prefix, key), r.collection) for r in refs]
        for sub in nested:
            out += ref_paths(sub, (*prefix, key))
    return out


def ref_values(doc: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """The values at ``path`` in a document, stepping into lists of sub-documents."""
    if not path:
        if isinstance(doc, list):
            yield from doc
        elif doc is not None:
            yield doc
        return
    if isinstance(doc, list):
        for item in doc:
            yield from ref_values(item, path)
    elif isinstance(doc, dict) and path[0] in doc:
        yield from ref_values(doc[path[0]], path[1:])


def doc_ids(collection: str, start: int, count: int, at: datetime) -> list[ObjectId]:
    """Deterministic ObjectIds: a timestamp, the collection, and the document's index (unique per pack)."""
    tag = zlib.crc32(collection.encode())
    secs = int(at.timestamp())
    return [ObjectId(struct.pack(">III", secs, tag, i)) for i in range(start, start + count)]


def weighted(rng: np.random.Generator, choices: Sequence[Any], weights: Sequence[float], n: int) -> list[Any]:
    w = np.asarray(weights, dtype=float)
    idx = rng.choice(len(choices), n, p=w / w.sum())
    return [choices[i] for i in idx]


def time_ordered(start: datetime, span: timedelta, first: int, count: int, total: int, rng: np.random.Generator) -> list[datetime]:
    """Times that increase with the document index across batches: index i of ``total`` falls in the
    i-th slice of ``span``, jittered inside its slice, so later documents are never earlier."""
    step = span.total_seconds() / max(total, 1)
    offsets = (np.arange(first, first + count) + rng.random(count)) * step
    return [start + timedelta(seconds=float(s)) for s in np.round(offsets, 3)]
