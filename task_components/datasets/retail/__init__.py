"""The retail star-schema pack (see tables.py for the graph)."""

from task_components.datasets.retail.tables import RETAIL

__all__ = ["RETAIL"]
