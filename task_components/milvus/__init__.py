"""Milvus tasks: create collection, bulk import (+wait, Lite falls back to insert), insert."""

from task_components.milvus.tasks import BulkImport, CreateCollection, Insert

COMPONENTS = [CreateCollection, BulkImport, Insert]

__all__ = ["COMPONENTS", "BulkImport", "CreateCollection", "Insert"]
