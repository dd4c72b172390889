"""The pipelines a console user may start, and their parameters checked as ``--set`` checks them.

A pipeline declares its parameters by their defaults; a value typed in a form arrives as text and is
read as a YAML scalar, as ``--set rows=5000`` is, then must be of its default's kind (an int where the
default is an int, a number where it is a float). Only files directly in the pipelines directory are
offered, by name: a form cannot point the server at any other file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.daemon.requests import same_kind
from pipeline.spec import SpecError, read_yaml

__all__ = ["Catalog", "ParamError", "PipelineEntry"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_TEXT = 10_000  # a parameter's text from a form


class ParamError(ValueError):
    """A parameter that cannot be used: ``field`` names it (``params.rows``, or ``pipeline``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(slots=True)
class PipelineEntry:
    name: str
    file: Path
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def form_fields(self) -> list[dict[str, Any]]:
        """One form input per parameter: its name, its default as ``--set`` would write it, and its kind."""
        return [{"name": k, "default": _as_text(v), "kind": _kind(v)} for k, v in self.params.items()]


def _as_text(value: Any) -> str:
    """A default as the text a user would type after ``--set name=``: YAML flow style, one line."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if default is None:
        return "any"
    return "str" if isinstance(default, str) else type(default).__name__


class Catalog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def entries(self) -> list[PipelineEntry]:
        if not self.directory.is_dir():
            return []
        out = []
        for file in sorted(self.directory.glob("*.y*ml")):
            try:
                out.append(self._entry(file))
            except SpecError:
                continue  # a broken file is not offered; `run-pipeline validate` says why
        return out

    def get(self, name: str) -> PipelineEntry:
        if not NAME.fullmatch(name or ""):
            raise ParamError("pipeline", f"{name!r} is not a pipeline name")
        for suffix in (".yaml", ".yml"):
            file = self.directory / f"{name}{suffix}"
            if file.is_file():
                try:
                    return self._entry(file)
                except SpecError as exc:
                    raise ParamError("pipeline", str(exc)) from None
        known = ", ".join(e.name for e in self.entries()) or "none"
        raise ParamError("pipeline", f"no pipeline {name!r} in {self.directory} (known: {known})")

    @staticmethod
    def _entry(file: Path) -> PipelineEntry:
        raw = read_yaml(file)
        if not isinstance(raw, dict) or not isinstance(raw.get("params") or {}, dict):
            raise SpecError(file, "not a pipeline file")
        params = dict(raw.get("params") or {})
        bad = [k for k, v in params.items() if not isinstance(k, str) or not _plain(v)]
        if bad:  # a form, JSON and --set all need text names and plain values
            raise SpecError(file, f"parameter {bad[0]!r}: a name must be text and a default plain data", field="params")
        return PipelineEntry(file.stem, file, str(raw.get("description") or "")[:2000], params)


def _plain(value: Any, depth: int = 0) -> bool:
    """Text, numbers, booleans, null, and lists/mappings of them (what JSON can carry), not too deep."""
    if depth > 8:
        return False
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def checked_params(entry: PipelineEntry, given: dict[str, Any]) -> dict[str, Any]:
    """The given parameters as the run will use them, or a ParamError naming the first one at fault."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        where = f"params.{key}"
        if key not in entry.params:
            known = ", ".join(sorted(entry.params)) or "none"
            raise ParamError(where, f"the pipeline declares no such parameter (known: {known})")
        default = entry.params[key]
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                raise ParamError(where, f"longer than {MAX_TEXT} characters")
            if default is None and not value.strip():
                value = None  # an untouched empty field of a parameter whose default is null
            elif not isinstance(default, str):  # a text parameter keeps its text; the rest reads as --set reads
                value = _scalar(value)
        if default is not None and not same_kind(value, default):
            raise ParamError(where, f"expected {_kind(default)} like the default {default!r}, got {value!r}"[:300])
        out[key] = value
    return out


def _scalar(text: str) -> Any:
    """Text as ``--set`` reads it (``parse_overrides``): YAML (5000 an int, [1, 2] a list), else the text itself."""
    if not text.strip():
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if _plain(value) else text  # a date, a tag: as typed
