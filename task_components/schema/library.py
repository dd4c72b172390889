"""Loading schemas (files, dicts, builtin names) and the user's own schema library.

Builtin schemas ship as JSON in ``library/``; ``schemas add`` copies a user's file into the user
library (``$SCHEMA_LIBRARY`` or ``~/.config/dag-pipeline/schemas``), where it can shadow nothing:
builtin names are reserved so a pipeline that says ``schema: ecommerce`` always means the same thing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from task_components.schema.models import CollectionSchema, SchemaError

BUILTIN_DIR = Path(__file__).with_name("library")


def user_library() -> Path:
    return Path(os.environ.get("SCHEMA_LIBRARY", Path.home() / ".config" / "dag-pipeline" / "schemas"))


def _readable(err: ValidationError, source: str, raw: dict[str, Any]) -> SchemaError:
    first = err.errors()[0]
    loc = list(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    where = ""
    if len(loc) >= 2 and loc[0] in ("fields", "functions", "dynamic_fields") and isinstance(loc[1], int):
        items = raw.get(loc[0]) or []
        item = items[loc[1]] if loc[1] < len(items) else None
        name = item.get("name", f"#{loc[1]}") if isinstance(item, dict) else f"#{loc[1]}"
        rest = ".".join(str(p) for p in loc[2:])
        kind = {"fields": "field", "functions": "function", "dynamic_fields": "dynamic field"}[loc[0]]
        where = f"{kind} {name!r}" + (f", key {rest!r}" if rest else "") + ": "
        if msg.startswith(f"{kind} {name!r}"):
            where = ""
    elif loc:
        where = f"{'.'.join(str(p) for p in loc)}: "
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling)"
    return SchemaError(f"{source}: {where}{msg}")


def parse_schema(raw: Any, source: str = "schema") -> CollectionSchema:
    """A schema mapping, or milvus-ingest's fields-only form (a bare list of fields)."""
    if isinstance(raw, CollectionSchema):
        return raw
    if isinstance(raw, list):
        raw = {"fields": raw}
    if not isinstance(raw, dict):
        raise SchemaError(f"{source}: a schema is a mapping with 'fields', got {type(raw).__name__}")
    try:
        return CollectionSchema.model_validate(raw)
    except ValidationError as err:
        raise _readable(err, source, raw) from None


def read_schema_file(path: str | Path) -> CollectionSchema:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaError(f"{p}: cannot read schema file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{p}: not a text (UTF-8) schema file: byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start} cannot be decoded") from None  # fmt: skip
    try:
        raw = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SchemaError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {exc}") from None
    if isinstance(raw, list):
        raw = {"fields": raw}
    if isinstance(raw, dict) and "collection_name" not in raw and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p.stem):
        raw = {"collection_name": p.stem, **raw}  # unnamed: named after the file, as milvus-ingest names its output
    return parse_schema(raw, str(p))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))


def user_names() -> list[str]:
    lib = user_library()
    return sorted(p.stem for p in lib.glob("*.json")) if lib.exists() else []


def resolve_schema(ref: str | dict[str, Any] | CollectionSchema) -> CollectionSchema:
    """A builtin name, a user-library name, a file path, or an inline mapping."""
    if not isinstance(ref, str):
        return parse_schema(ref)
    for directory in (BUILTIN_DIR, user_library()):
        candidate = directory / f"{ref}.json"
        if candidate.exists():
            return read_schema_file(candidate)
    path = Path(ref)
    if path.exists():
        return read_schema_file(path)
    known = ", ".join(builtin_names() + user_names())
    raise SchemaError(f"schema {ref!r} is neither a builtin/library name nor a file (known: {known})")


def add_schema(name: str, path: str | Path) -> Path:
    if name in builtin_names():
        raise SchemaError(f"{name!r} is a builtin schema name; choose another name")
    schema = read_schema_file(path)  # validates before anything is copied
    lib = user_library()
    lib.mkdir(parents=True, exist_ok=True)
    target = lib / f"{name}.json"
    target.write_text(schema.model_dump_json(indent=2, exclude_defaults=True, by_alias=False))
    return target


def remove_schema(name: str) -> Path:
    if name in builtin_names():
        raise SchemaError(f"{name!r} is builtin and cannot be removed")
    target = user_library() / f"{name}.json"
    if not target.exists():
        raise SchemaError(f"no schema {name!r} in the user library ({user_library()})")
    target.unlink()
    return target
