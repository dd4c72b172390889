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
from typing import Annotated, Any, Literal

import numpy as np
from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field

from task_components.datasets.mongo.fake import Locale, fake_paths, fill_fakes, new_faker

__all__ = [
    "Batch",
    "CollectionDef",
    "DocPack",
    "GeoPoint",
    "IndexDef",
    "Ref",
    "TimeSeries",
    "doc_ids",
    "geo_points",
    "ref_paths",
    "ref_values",
    "time_ordered",
    "weighted",
]


@dataclass(frozen=True, slots=True)
class Ref:
    """Marks a field as holding the ``_id`` of a document of ``collection``."""

    collection: str


IndexKey = Literal[1, -1, "text", "2dsphere", "hashed"]
SPECIAL_KINDS = ("text", "2dsphere", "hashed")


@dataclass(frozen=True, slots=True)
class IndexDef:
    """One index: ``keys`` are (field, kind) pairs, compound when several; a kind is 1/-1 (ascending,
    descending), ``"text"``, ``"2dsphere"`` (GeoJSON, see ``GeoPoint``) or ``"hashed"``. ``partial`` is a
    partialFilterExpression (the index holds, and a unique one judges, only matching documents).

    What MongoDB itself would refuse (a unique hashed or text index, a compound TTL index, two hashed
    keys) is refused here, when the pack is loaded. What a server refuses at creation (SecantusDB has no
    text or hashed indexes) fails the seeding with the collection, index and kind named, unless the index
    is ``optional``: then the seeding logs that it was skipped and the validation pass does not ask for it.
    """

    keys: tuple[tuple[str, IndexKey], ...]
    name: str
    unique: bool = False
    ttl_seconds: int | None = None  # a TTL index: documents expire this long after the (date) field
    partial: Mapping[str, Any] | None = None  # partialFilterExpression
    optional: bool = False  # skipped (and said so) where the server does not support its kind

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(f"index {self.name!r} ({self.kind}): {problem}")

    def _problem(self) -> str | None:
        if not self.keys:
            return "has no keys"
        bad = [k for _, k in self.keys if k not in (1, -1, *SPECIAL_KINDS)]
        if bad:
            return f"key kind {bad[0]!r} is none of 1, -1, 'text', '2dsphere', 'hashed'"
        kinds = {k for _, k in self.keys}
        if sum(k == "hashed" for _, k in self.keys) > 1:
            return "a hashed index has one hashed field"
        if self.unique and kinds & {"hashed", "text", "2dsphere"}:
            return "MongoDB refuses unique hashed, text and 2dsphere indexes"
        if self.ttl_seconds is not None and (len(self.keys) > 1 or kinds - {1, -1}):
            return "a TTL index has exactly one ascending or descending (date) field"
        if self.ttl_seconds is not None and self.ttl_seconds < 0:
            return "ttl_seconds must be >= 0"
        if self.partial is not None and not self.partial:
            return "an empty partial filter: leave partial unset instead"
        return None

    @property
    def kind(self) -> str:
        """What kind of index this is, for messages: ``hashed``, ``text``, ``2dsphere``, ``ttl``, else
        ``compound``/``single``, with ``partial``/``unique`` in front where they apply."""
        special = [k for _, k in self.keys if isinstance(k, str)]
        if special:
            base = str(special[0])
        elif self.ttl_seconds is not None:
            base = "ttl"
        else:
            base = "compound" if len(self.keys) > 1 else "single"
        return " ".join([*(["partial"] if self.partial else []), *(["unique"] if self.unique else []), base])

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"name": self.name}
        if self.unique:
            opts["unique"] = True
        if self.ttl_seconds is not None:
            opts["expireAfterSeconds"] = self.ttl_seconds
        if self.partial:
            opts["partialFilterExpression"] = dict(self.partial)
        return opts


class GeoPoint(BaseModel):
    """A GeoJSON point, what a ``2dsphere`` index reads: ``coordinates`` are (longitude, latitude)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["Point"] = "Point"
    coordinates: tuple[Annotated[float, Field(ge=-180, le=180)], Annotated[float, Field(ge=-90, le=90)]]


def geo_points(rng: np.random.Generator, centers: Sequence[tuple[float, float]], spread_deg: float = 1.0) -> list[dict[str, Any]]:
    """One GeoJSON point near each of ``centers`` (lon, lat): normal scatter, clipped to the globe."""
    pts = np.asarray(centers, dtype=float).reshape(-1, 2) + rng.normal(0.0, spread_deg, (len(centers), 2))
    lon, lat = np.clip(pts[:, 0], -180, 180), np.clip(pts[:, 1], -90, 90)
    return [{"type": "Point", "coordinates": [round(float(x), 6), round(float(y), 6)]} for x, y in zip(lon, lat, strict=True)]


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
    locale: Locale = "en_US"

    def ids(self) -> list[ObjectId]:
        return doc_ids(self.collection, self.first, self.count, self.origin)

    def times(self, start: datetime, span: timedelta) -> list[datetime]:
        return time_ordered(start, span, self.first, self.count, self.total, self.rng)

    def faker(self, locale: Locale | None = None) -> Any:
        """A Faker seeded from this batch's generator (one draw, so same seed, same values), for a
        generator that wants Faker values it correlates with others; plain fields use ``Fake``."""
        return new_faker(locale or self.locale, int(self.rng.integers(0, 2**63)))


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

    def documents(self, batch: Batch) -> list[dict[str, Any]]:
        """The generator's documents, with the ``Fake`` fields it left out filled (Faker seeded from the
        batch's generator after the generator ran, so its own draws are the same with or without)."""
        docs = self.generate(batch)
        paths = fake_paths(self.model)
        if paths:
            fill_fakes(docs, paths, batch.locale, int(batch.rng.integers(0, 2**63)))
        return docs


@dataclass(frozen=True, slots=True)
class DocPack:
    name: str
    summary: str
    collections: Mapping[str, CollectionDef]
    origin: datetime = field(default=datetime(2024, 1, 1))  # time-ordered fields start here
    locale: Locale = "en_US"  # Faker's locale(s) for ``Fake`` fields and ``Batch.faker()``


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
