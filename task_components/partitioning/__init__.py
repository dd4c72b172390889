"""Parquet/JSON dataset files and the manifest every later task reads."""

from task_components.manifest import FileEntry, Manifest
from task_components.partitioning.task import LoadDataset, Partition, PartitionParams

COMPONENTS = [Partition, LoadDataset]

__all__ = ["COMPONENTS", "FileEntry", "LoadDataset", "Manifest", "Partition", "PartitionParams"]
