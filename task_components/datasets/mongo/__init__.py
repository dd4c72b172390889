"""MongoDB seeding packs: collections described by pydantic models, seeded in reference order, validated."""

from task_components.datasets.mongo.model import Batch, CollectionDef, DocPack, IndexDef, Ref, TimeSeries
from task_components.datasets.mongo.task import DocSeed, DocValidate, doc_pack_tasks, doc_packs, get_doc_pack

__all__ = [
    "Batch",
    "CollectionDef",
    "DocPack",
    "DocSeed",
    "DocValidate",
    "IndexDef",
    "Ref",
    "TimeSeries",
    "doc_pack_tasks",
    "doc_packs",
    "get_doc_pack",
]
