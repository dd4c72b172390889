"""What each component parameter names, for the daemon's trust policy (policy.py).

Every field of every registered component is either classified here (by its annotation and name, plus
a table for the fields whose name does not say what they are) or is a plain value; the unit test walks
every registered component, nested models and mappings included, so a new path, topic or name field
cannot slip past unclassified.
"""

from __future__ import annotations

import re
import typing
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = [
    "DEFAULT_TOPICS",
    "EMPTY_IS_UNSET",
    "NESTED_MAPPINGS",
    "PLAIN_MAPPINGS",
    "TABLE",
    "WORKER_FIELDS",
    "Kind",
    "default_topic",
    "field_kind",
    "nested_kind",
]


class Kind(StrEnum):
    PATH = "path"  # a file or directory on the daemon's host the run may write
    READ = "read"  # a file the run only reads: also allowed under DAEMON__READ_ROOTS and the pipelines dir
    TOPIC = "topic"  # a Kafka topic or consumer group the run reads, writes or joins
    NAME = "name"  # a database, collection or table on a server the daemon can reach
    REF = "ref"  # a built-in or library schema name, or (anything else) a file to read
    URI = "uri"  # a server URI (must be the configured one) or a local file (a path)
    KEY = "key"  # an object-key prefix joined under a store root: no "..", not absolute
    DURATION = "duration"  # seconds: bounded by the daemon's maximum run time
    VALUE = "value"  # reviewed: a plain value although its name sounds like a place (e.g. file_size)
    CODE = "code"  # names Python code the run would import (a user's pack module or file): built-in names only
    PROCESS = "process"  # takes over the process's own signals (the CLI's switch): never on under the daemon


# Fields whose name does not say what they are (component, field) -> kind.
TABLE: dict[tuple[str, str], Kind] = {
    ("generate", "schema_ref"): Kind.REF,
    ("generate.upload", "schema_ref"): Kind.REF,
    ("milvus.create_collection", "schema_ref"): Kind.REF,
    ("dataset.commit", "config"): Kind.READ,
    ("dataset.table", "config"): Kind.READ,
    ("dataset.load", "path"): Kind.READ,
    ("run.result", "run"): Kind.READ,
    ("testdata.produce", "stop_on_signal"): Kind.PROCESS,
    ("mongo.seed", "pack"): Kind.CODE,
    ("mongo.validate", "pack"): Kind.CODE,
    ("standardize", "config_file"): Kind.READ,  # rules read (and re-read while running), never written
    ("quality.check", "config_file"): Kind.READ,
    ("dataset.realtime", "config_file"): Kind.READ,  # the pack's config, read once (its out is checked resolved)
    ("sink.milvus", "uri"): Kind.URI,
    ("storage.upload", "prefix"): Kind.KEY,
    ("generate.upload", "prefix"): Kind.KEY,  # its upload.prefix
    ("source.kafka", "group"): Kind.TOPIC,
    ("milvus.bulk_import", "poll_interval"): Kind.DURATION,
    ("partition", "file_size"): Kind.VALUE,
    ("partition", "file_count"): Kind.VALUE,
    ("partition", "rows_per_file"): Kind.VALUE,
    ("generate.upload", "file_count"): Kind.VALUE,  # its files.file_count
    ("generate.upload", "rows_per_file"): Kind.VALUE,
    ("dataset.table", "table"): Kind.VALUE,  # a table of the pack (the pack refuses any other)
    ("mongo.seed", "collection"): Kind.NAME,
    ("shadow.sync", "table"): Kind.NAME,
    ("shadow.files", "table"): Kind.NAME,
}
# An empty value these components read as "unset" (the file's or the pack's own setting then applies, and
# check_request sees that one in the resolved pack config): not a path to the working directory. For a mapping
# listed here the component drops empty entries the same way. Reviewed per component: others take '' as cwd.
EMPTY_IS_UNSET = {
    ("dataset.table", "config"),
    ("dataset.commit", "config"),
    ("dataset.table", "overrides"),
    ("dataset.commit", "overrides"),
    ("dataset.realtime", "config_file"),
    ("dataset.realtime", "out"),
}
# A topic or group left unset: the component uses this setting (so the check looks at that one).
DEFAULT_TOPICS: dict[tuple[str, str], str] = {
    ("source.kafka", "topic"): "topic_source",
    ("source.kafka", "group"): "consumer_group",
    ("testdata.produce", "topic"): "topic_source",
    ("sink.kafka", "topic"): "topic_sink",
    ("sink.dead_letter", "topic"): "dead_letter_topic",
}
# Mapping parameters whose keys are settings (classified by name, e.g. a pack's ``out``); every other mapping
# parameter holds record field names or server options (reviewed: PLAIN_MAPPINGS), and the test knows both.
NESTED_MAPPINGS = {
    ("dataset.table", "overrides"),
    ("dataset.commit", "overrides"),
    ("dataset.table", "config"),
    ("dataset.commit", "config"),
}
PLAIN_MAPPINGS = {
    ("milvus.create_collection", "indexes"),
    ("standardize", "mapping"),
    ("standardize", "types"),
    ("standardize", "fields"),
    ("standardize", "country_aliases"),
    ("verify", "search_params"),
    ("generate", "schema_ref"),
    ("generate.upload", "schema_ref"),
    ("milvus.create_collection", "schema_ref"),
}
# process counts: 1 .. CPU count in the daemon (0 = in its own thread)
WORKER_FIELDS = {("generate", "workers"), ("generate.upload", "workers"), ("shadow.files", "workers")}
_PATH_NAMES = {"out", "path", "dir", "root", "local_root", "file", "folder"}
_PATH_SUFFIXES = ("_dir", "_path", "_root", "_file", "_folder")
_NAME_NAMES = {"database", "collection"}
_DURATION = re.compile(r"(^|_)(seconds|timeout|delay|interval)($|_)")


def field_kind(component: str, name: str, annotation: Any) -> Kind | None:
    """What a parameter field names, or None if it is not a place, a topic, a name or a duration."""
    if (component, name) in TABLE:
        return TABLE[(component, name)]
    if _mentions(annotation, Path) or name in _PATH_NAMES or name.endswith(_PATH_SUFFIXES):
        return Kind.PATH
    if name == "topic" or name.endswith("_topic"):
        return Kind.TOPIC
    if name in _NAME_NAMES:
        return Kind.NAME
    if _DURATION.search(name) and (_mentions(annotation, float) or _mentions(annotation, int)):
        return Kind.DURATION
    return None


def nested_kind(key: str) -> Kind | None:
    """A key inside a mapping parameter (e.g. a pack config's ``overrides``): classified by its name."""
    return field_kind("", key, Any)


def default_topic(component: str, name: str, settings: Settings) -> str | None:
    attr = DEFAULT_TOPICS.get((component, name))
    return getattr(settings.kafka, attr) if attr else None


def _mentions(annotation: Any, kind: type) -> bool:
    if annotation is kind or (isinstance(annotation, type) and issubclass(annotation, kind)):
        return True
    return any(_mentions(a, kind) for a in typing.get_args(annotation))
