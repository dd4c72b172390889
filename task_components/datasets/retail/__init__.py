"""The retail star-schema pack (see tables.py for the graph); it accepts the seed tool's config.json as is."""

from dataclasses import replace

from task_components.datasets.retail.seedconfig import translate
from task_components.datasets.retail.tables import RETAIL as _TABLES_PACK

RETAIL = replace(_TABLES_PACK, adapt=translate)

__all__ = ["RETAIL"]
