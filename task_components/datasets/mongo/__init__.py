"""MongoDB seeding packs: collections described by pydantic models, seeded in reference order, validated.

A pack is built in (``ecommerce``) or the user's own module or file (``loader``); fields ask for Faker
values with ``Fake`` and references with ``Ref``; indexes may be text, 2dsphere, hashed, partial, TTL."""

from task_components.datasets.mongo.fake import Fake
from task_components.datasets.mongo.model import Batch, CollectionDef, DocPack, GeoPoint, IndexDef, Ref, TimeSeries, geo_points
from task_components.datasets.mongo.task import DocSeed, DocValidate, doc_pack_tasks, doc_packs, get_doc_pack

__all__ = [
    "Batch",
    "CollectionDef",
    "DocPack",
    "DocSeed",
    "DocValidate",
    "Fake",
    "GeoPoint",
    "IndexDef",
    "Ref",
    "TimeSeries",
    "doc_pack_tasks",
    "doc_packs",
    "geo_points",
    "get_doc_pack",
]
