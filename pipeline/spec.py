"""The YAML pipeline file: load, override, interpolate, and report errors a person can act on.

Every problem becomes one SpecError naming the file, the task and the field, raised before anything
runs. Interpolation: a value that is exactly ``"${params.rows}"`` keeps the parameter's type (an int
stays an int, so pydantic can check it); inside a longer string it is substituted as text.
``${env.NAME}`` reads the environment, ``${env.NAME:-default}`` falls back to a default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dag_orchestrator.executor import FailurePolicy
from pipeline.compose.errors import PipelineError

__all__ = ["PipelineSpec", "SpecError", "TaskSpec", "load_spec", "parse_overrides", "read_yaml", "spec_from_raw"]

_REF = re.compile(r"\$\{(params|env|pipeline)\.([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SpecError(PipelineError):
    """An invalid pipeline file; ``str()`` is the one line shown to the user, naming the file first."""

    def __init__(self, file: str | Path, message: str, *, task: str | None = None, field: str | None = None) -> None:
        super().__init__(message, task=task, field=field)
        where = [str(file)]
        if task:
            where.append(f"task {task!r}")
        if field:
            where.append(f"field {field!r}")
        self.args = (f"{': '.join(where)}: {message}",)
        self.file = str(file)

    @classmethod
    def of(cls, file: str | Path, err: PipelineError) -> SpecError:
        """A problem the Python API found, named in the file's terms (a parameter is ``with.NAME``)."""
        field = ".".join(["with", *filter(None, [err.field])]) if err.about == "params" else err.field
        return cls(file, err.problem, task=err.task, field=field)


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    uses: str = Field(description="registered component name, see `run_pipeline.py components`")
    needs: list[str] = Field(default_factory=list)
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    retries: int = Field(0, ge=0, description="extra attempts after the first failure")
    retry_delay: float = Field(1.0, ge=0, description="first retry delay in seconds, doubling each time")
    timeout: float | None = Field(None, gt=0, description="seconds per attempt")
    kind: str | None = Field(None, description="concurrency group; defaults to the component's")


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    policy: FailurePolicy = FailurePolicy.FAIL_FAST
    max_concurrency: int | None = Field(None, ge=1)
    kind_limits: dict[str, int] = Field(default_factory=dict)
    tasks: dict[str, TaskSpec]


def parse_overrides(pairs: list[str], file: str | Path = "--set") -> dict[str, Any]:
    """``["rows=5000", "schema=simple"]`` -> typed values (YAML scalars: 5000 is an int)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(file, f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _interpolate(value: Any, params: dict[str, Any], file: Path, task: str, path: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, params, file, task, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, params, file, task, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def lookup(m: re.Match[str]) -> Any:
        source, key, default = m.group(1), m.group(2), m.group(3)
        if source == "pipeline":
            if key != "dir":
                known = "${pipeline.dir}"
                raise SpecError(file, f"unknown reference ${{pipeline.{key}}} (known: {known})", task=task, field=path)
            # the pipeline file's own folder: files it names mean the same from any working directory
            return str(file.resolve().parent)
        if source == "params":
            if key not in params:
                known = ", ".join(sorted(params)) or "none"
                raise SpecError(file, f"unknown parameter ${{params.{key}}} (known: {known})", task=task, field=path)
            return params[key]
        if key in os.environ:
            return os.environ[key]
        if default is not None:
            return default
        raise SpecError(file, f"environment variable {key} is not set (use ${{env.{key}:-default}})", task=task, field=path)

    whole = _REF.fullmatch(value)
    if whole:
        return lookup(whole)
    result = _REF.sub(lambda m: str(lookup(m)), value)
    if "${" in result:
        raise SpecError(
            file,
            f"cannot interpolate {value!r}: use ${{params.NAME}}, ${{env.NAME}} or ${{pipeline.dir}}",
            task=task,
            field=path,
        )
    return result


def _pydantic_message(file: Path, err: ValidationError) -> SpecError:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    task = loc[1] if len(loc) > 1 and loc[0] == "tasks" else None
    field = ".".join(loc[2:]) if task else ".".join(loc)
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling)"
    return SpecError(file, msg, task=task, field=field or None)


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineSpec:
    """Read, override and interpolate a pipeline file; raise SpecError on any problem."""
    return spec_from_raw(read_yaml(path), path, overrides)


def read_yaml(path: str | Path) -> Any:
    """A pipeline file's YAML, or a SpecError naming the file and, for a syntax error, the place."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(file, "no such file") from None
    except OSError as exc:
        raise SpecError(file, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            file,
            f"not a text (UTF-8) file: byte {exc.object[exc.start]:#04x} at offset {exc.start} "
            "cannot be decoded; a pipeline file is UTF-8 YAML",
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(file, f"YAML syntax error at {where}{problem}") from None
    return raw


def spec_from_raw(raw: Any, file: str | Path, overrides: dict[str, Any] | None = None) -> PipelineSpec:
    """A parsed pipeline (YAML file or a daemon request's inline spec): override, interpolate, validate."""
    file = Path(file)
    if not isinstance(raw, dict):
        raise SpecError(file, "expected a mapping with 'name' and 'tasks' at the top level")
    if not isinstance(raw.get("tasks"), dict) or not raw["tasks"]:
        raise SpecError(file, "'tasks' must be a non-empty mapping of task name -> {uses: ...}", field="tasks")
    raw = dict(raw)
    if not isinstance(raw.get("params") or {}, dict):
        raise SpecError(file, "'params' must be a mapping of parameter name -> default value", field="params")
    params = dict(raw.get("params") or {})
    for key, value in (overrides or {}).items():
        if key not in params:
            known = ", ".join(sorted(params)) or "none"
            raise SpecError(file, f"--set {key}: the pipeline has no parameter {key!r} (known: {known})")
        params[key] = value
    raw["params"] = params
    raw["tasks"] = dict(raw["tasks"])
    for name, body in raw["tasks"].items():
        if not isinstance(body, dict):
            raise SpecError(file, "a task must be a mapping with at least 'uses'", task=str(name))
        raw["tasks"][name] = _interpolate(body, params, file, str(name), "")
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as err:
        raise _pydantic_message(file, err) from None
