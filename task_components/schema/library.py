"""Loading schemas (files, dicts, builtin names) and the user's own schema library.

Builtin schemas ship as JSON in ``library/``; ``schemas add`` copies a user's file into the user
library (``$SCHEMA_LIBRARY`` or ``~/.config/dag-pipeline/schemas``), where it can shadow nothing:
builtin names are reserved so a pipeline that says ``schema: ecommerce`` always means the same thing.
"""

from __future__ import annotations

import json
import os
import re
import stat
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


MAX_SCHEMA_BYTES = 4 * 1024 * 1024  # a schema is a few KB; a device or a huge file is not one


def read_schema_file(path: str | Path) -> CollectionSchema:
    """A schema file: a regular file of at most MAX_SCHEMA_BYTES (never a device, FIFO or terminal, which could
    block or fill memory). Errors name the place (line, column), never quote the file's content: the path may
    come from a request to the daemon, and its sender must not read files through our messages."""
    p = Path(path)
    try:
        with open(p, "rb", buffering=0, opener=_open_nonblocking) as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise SchemaError(f"{p}: not a regular file (a schema is a JSON or YAML file)")
            if st.st_size > MAX_SCHEMA_BYTES:
                raise SchemaError(f"{p}: {st.st_size:,} bytes; a schema file may have at most {MAX_SCHEMA_BYTES:,}")
            data = fh.read(MAX_SCHEMA_BYTES + 1)
    except OSError as exc:
        raise SchemaError(f"{p}: cannot read schema file ({exc.strerror})") from None
    if len(data) > MAX_SCHEMA_BYTES:  # grew while read
        raise SchemaError(f"{p}: more than {MAX_SCHEMA_BYTES:,} bytes; too large for a schema file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(
            f"{p}: not a text (UTF-8) schema file: byte {exc.object[exc.start]:#04x} at offset {exc.start} cannot be decoded"
        ) from None
    try:
        raw = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{p}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SchemaError(f"{p}: not valid YAML{where}") from None
    if isinstance(raw, list):
        raw = {"fields": raw}
    if isinstance(raw, dict) and "collection_name" not in raw and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p.stem):
        raw = {"collection_name": p.stem, **raw}  # unnamed: named after the file, as milvus-ingest names its output
    return parse_schema(raw, str(p))


def _open_nonblocking(path: str, flags: int) -> int:
    """Open without blocking (a FIFO with no writer would block the open itself); reads of a regular file
    are unaffected."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


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
