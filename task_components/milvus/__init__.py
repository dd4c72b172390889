"""Milvus tasks: create collection, bulk import (+wait, Lite falls back to insert), insert, an existing collection."""

from task_components.milvus.existing import Existing
from task_components.milvus.tasks import BulkImport, CreateCollection, Insert

COMPONENTS = [CreateCollection, BulkImport, Insert, Existing]

__all__ = ["COMPONENTS", "BulkImport", "CreateCollection", "Existing", "Insert"]
