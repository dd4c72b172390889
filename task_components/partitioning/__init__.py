"""Parquet/JSON dataset files and the manifest every later task reads."""

from task_components.partitioning.manifest import FileEntry, Manifest
from task_components.partitioning.task import DataFile, Partition, PartitionParams

COMPONENTS = [Partition]

__all__ = ["COMPONENTS", "DataFile", "FileEntry", "Manifest", "Partition", "PartitionParams"]
