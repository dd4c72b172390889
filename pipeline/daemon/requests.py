"""A run request off the request topic: parse it, check it, or say in one line why it is dead-lettered.

Everything the daemon can know before running is checked here, so a bad request never takes a run slot:
the bytes (size, UTF-8, JSON), the model (types, missing or unknown fields), the pipeline (a plain name
found in the pipelines directory, never a path out of it; or an inline spec that validates and uses only
registered components), and the params (declared by the pipeline, of the type of its default).

An inline spec may not read the daemon's environment (``${env.X}``): the daemon holds credentials
that a request sender must not be able to copy into a task parameter.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from dag_orchestrator.dag import DAG
from pipeline.registry import build_dag
from pipeline.spec import PipelineSpec, SpecError, read_yaml, spec_from_raw

__all__ = ["BadRequest", "Resolved", "RunRequest", "parse_request", "resolve_request", "resolve_spec"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # fullmatch: "$" would let a trailing newline in
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")
T = TypeVar("T")
MAX_DEPTH = 32  # JSON nesting a request may have: deeper is refused before anything recurses over it


class BadRequest(ValueError):
    """A request that cannot run; ``str()`` is the dead-letter reason, ``kind`` a short label for metrics."""

    def __init__(self, kind: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.request_id = kind, request_id


class RunRequest(BaseModel):
    """What a team sends to run a pipeline. ``pipeline`` is a name in the pipelines directory or a spec."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$",  # Rust regex: $ is the very end
        description="the idempotency key: a request_id runs at most once",
    )
    pipeline: str | dict[str, Any] = Field(description="pipeline name (pipelines/NAME.yaml) or an inline spec")
    params: dict[str, Any] = Field(default_factory=dict)
    priority: StrictInt = Field(0, ge=-1000, le=1000, description="higher runs first among waiting requests")
    deadline: datetime | None = Field(None, description="ISO 8601; the run must end by then or it fails")
    reply_topic: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,249}$", description="status events also go here")

    @property
    def pipeline_name(self) -> str:
        return self.pipeline if isinstance(self.pipeline, str) else str(self.pipeline.get("name", "inline"))

    def fingerprint(self) -> str:
        """What makes two deliveries the same request: the pipeline and its params (not priority, deadline
        or reply topic, which may differ on a retry without changing the effect)."""
        body = json.dumps({"pipeline": self.pipeline, "params": self.params}, sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    def deadline_ts(self) -> float | None:
        if self.deadline is None:
            return None
        when = self.deadline if self.deadline.tzinfo else self.deadline.replace(tzinfo=UTC)
        return when.timestamp()


def parse_request(value: bytes | None, max_bytes: int) -> RunRequest:
    """Bytes -> RunRequest, or BadRequest naming the field and value at fault."""
    if value is None:
        raise BadRequest("empty", "the message has no value (a tombstone?); expected a JSON run request")
    if len(value) > max_bytes:
        raise BadRequest(
            "oversize",
            f"the request is {len(value):,} bytes; the limit is {max_bytes:,} (DAEMON__MAX_REQUEST_BYTES)",
            _peek_id(value[:4096]),
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("not_json", f"not UTF-8: byte {value[exc.start]:#04x} at offset {exc.start}") from None
    try:
        raw = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise BadRequest("not_json", f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise BadRequest("invalid", f"JSON nested deeper than {MAX_DEPTH} levels", _peek_id(value[:4096])) from None
    if _depth(raw) > MAX_DEPTH:
        raise BadRequest("invalid", f"JSON nested deeper than {MAX_DEPTH} levels", _peek_id(value[:4096]))
    if not isinstance(raw, dict):
        raise BadRequest("invalid", f"expected a JSON object with request_id and pipeline, got {type(raw).__name__}")
    try:
        return RunRequest.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "request"
        msg = "unknown field (check its spelling)" if first["type"] == "extra_forbidden" else first["msg"]
        got = "" if first["type"] == "missing" else f" (got {_short(first.get('input'))})"
        rid = raw.get("request_id") if isinstance(raw.get("request_id"), str) else None
        rid = rid if rid is not None and _ID.fullmatch(rid) else None  # never key a reply by an invalid id
        kind = "missing_field" if first["type"] == "missing" else "invalid"
        raise BadRequest(kind, f"field {field!r}: {msg}{got}", rid) from None


@dataclass(slots=True, frozen=True)
class Resolved:
    """A request's pipeline, checked once and carried to the run (never parsed or built again)."""

    spec: PipelineSpec
    file: Path | None  # None: an inline spec
    dag: DAG


def resolve_spec(request: RunRequest, pipelines_dir: Path) -> tuple[PipelineSpec, Path | None]:
    """The validated spec with the request's params applied, and the file it came from (None if inline)."""
    resolved = resolve_request(request, pipelines_dir)
    return resolved.spec, resolved.file


Precheck = Callable[[PipelineSpec, PipelineSpec | None], None]


def resolve_request(request: RunRequest, pipelines_dir: Path, precheck: Precheck | None = None) -> Resolved:
    """The request's pipeline: validated spec (params applied), its file (None if inline) and its DAG.

    ``precheck(spec, baseline)`` runs on the spec with the params filled in *before* the DAG is built: building
    runs the components' validators, which open files a request names (a schema, a pack config). ``baseline``
    is the named pipeline with its own defaults (what the file itself says), None for an inline spec."""
    rid = request.request_id
    if isinstance(request.pipeline, str):
        name = request.pipeline
        if not _NAME.fullmatch(name) or ".." in name:
            raise BadRequest(
                "bad_pipeline", f"pipeline {_short(name)} is not a plain name (letters, digits, '_', '-', '.'): paths are not accepted", rid
            )
        base = pipelines_dir.resolve()
        file = (base / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")).resolve()
        if file.parent != base:
            raise BadRequest("bad_pipeline", f"pipeline {name!r} leaves the pipelines directory", rid)
        if not file.is_file():
            known = ", ".join(sorted(p.stem for p in base.glob("*.yaml"))) or "none"
            raise BadRequest("unknown_pipeline", f"unknown pipeline {name!r} (known: {known})", rid)
        raw = _validated(lambda: _read_pipeline(file), rid)  # once per request, not once per check
        _check_params(request.params, _declared_params(lambda: raw, file, rid), rid)
        spec = _validated(lambda: spec_from_raw(raw, file, request.params), rid)
        if precheck is not None:
            own = _validated(lambda: spec_from_raw(_read_pipeline(file), file, {}), rid) if request.params else spec
            precheck(spec, own)
        return Resolved(spec, file, _validated(lambda: _built(spec), rid))
    if "${env." in json.dumps(request.pipeline):
        raise BadRequest("bad_spec", "an inline spec may not read the daemon's environment (${env.*})", rid)
    declared = _declared_params(lambda: request.pipeline, "<inline>", rid)
    _check_params(request.params, declared, rid)
    spec = _validated(lambda: spec_from_raw(request.pipeline, "<inline>", request.params), rid)
    if precheck is not None:
        precheck(spec, None)
    return Resolved(spec, None, _validated(lambda: _built(spec), rid))


def _declared_params(read: Any, where: Any, rid: str) -> dict[str, Any]:
    try:
        raw = read()
    except (OSError, yaml.YAMLError) as exc:
        raise BadRequest("bad_spec", f"{where}: cannot read the pipeline: {exc}", rid) from None
    params = raw.get("params") if isinstance(raw, dict) else None
    return dict(params) if isinstance(params, dict) else {}


def _check_params(given: dict[str, Any], declared: dict[str, Any], rid: str) -> None:
    for key, value in given.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise BadRequest("bad_params", f"params.{key}: the pipeline declares no such parameter (known: {known})", rid)
        default = declared[key]
        if default is None or same_kind(value, default):
            continue
        expected = f"expected {type(default).__name__} like the pipeline's default {default!r}"
        raise BadRequest("bad_params", f"params.{key}: {expected}, got {type(value).__name__} {_short(value)}", rid)


def same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def _validated(load: Callable[[], T], rid: str) -> T:
    try:
        return load()
    except SpecError as exc:
        raise BadRequest("bad_spec", str(exc), rid) from None


def _built(spec: PipelineSpec) -> DAG:
    return build_dag(spec, f"<{spec.name}>")  # components exist, params validate, wiring holds


_CACHE: dict[Path, tuple[tuple[int, int], Any]] = {}


def _read_pipeline(file: Path) -> Any:
    """A named pipeline's YAML, parsed once per version of the file (a request stream repeats names)."""
    try:
        st = file.stat()
    except OSError as exc:
        raise SpecError(file, f"cannot read: {exc.strerror}") from None
    version = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(file)
    if hit is not None and hit[0] == version:
        return copy.deepcopy(hit[1])  # the checks below must not see another request's edits
    raw = read_yaml(file)
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[file] = (version, copy.deepcopy(raw))
    return raw


def _no_constant(name: str) -> Any:
    raise BadRequest("invalid", f"{name} is not a number a request may carry (only finite numbers)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest("invalid", f"{text} is out of range for a number (only finite numbers)")
    return value


def _depth(value: Any) -> int:
    """Nesting depth without recursion (the point is to refuse what would overflow the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                stack.extend((v, level + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _peek_id(head: bytes) -> str | None:
    """The request_id of an oversize request, if it shows near the start, so its sender hears back."""
    m = re.search(rb'"request_id"\s*:\s*"([A-Za-z0-9][A-Za-z0-9_.:-]{0,199})"', head)
    return m.group(1).decode() if m else None
