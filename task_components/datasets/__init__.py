"""Multi-table dataset packs: the retail star schema and MongoDB seeding (tables as tasks, keys as edges)."""

from task_components.datasets.events import DatasetEvents
from task_components.datasets.mongo import DocSeed, DocValidate
from task_components.datasets.pack import Pack, PackConfigError, PackRun, TableDef, load_pack_config, pack_tasks
from task_components.datasets.realtime import DatasetRealtime
from task_components.datasets.task import DatasetCommit, DatasetTable, get_pack, packs

COMPONENTS = [DatasetTable, DatasetCommit, DatasetEvents, DatasetRealtime, DocSeed, DocValidate]

__all__ = [
    "COMPONENTS",
    "DatasetCommit",
    "DatasetEvents",
    "DatasetRealtime",
    "DatasetTable",
    "Pack",
    "PackConfigError",
    "PackRun",
    "TableDef",
    "get_pack",
    "load_pack_config",
    "pack_tasks",
    "packs",
]
