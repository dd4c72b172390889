"""Object storage (S3 via aiobotocore, or a local directory) and the upload task."""

from task_components.storage.stores import LocalStore, ObjectStore, S3Store, StorageError
from task_components.storage.task import StoreSpec, Upload, UploadParams, open_store, store_spec

COMPONENTS = [Upload]

__all__ = [
    "COMPONENTS",
    "LocalStore",
    "ObjectStore",
    "S3Store",
    "StorageError",
    "StoreSpec",
    "Upload",
    "UploadParams",
    "open_store",
    "store_spec",
]
