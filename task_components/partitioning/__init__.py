"""Parquet/JSON dataset files and the manifest every later task reads."""

from task_components.partitioning.manifest import FileEntry, Manifest
from task_components.partitioning.task import DataFile, LoadDataset, Partition, PartitionParams

COMPONENTS = [Partition, LoadDataset]

__all__ = ["COMPONENTS", "DataFile", "FileEntry", "LoadDataset", "Manifest", "Partition", "PartitionParams"]
