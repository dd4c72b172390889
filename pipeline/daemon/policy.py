"""How far the daemon trusts a request: what a writer of the request topic may make it do.

The daemon often runs with broad rights (credentials, a writable disk, every topic), so a request is a
program from a stranger until a setting says otherwise. Checked in this order, each refusal a
``BadRequest`` of kind ``forbidden`` (dead-lettered with its reason, nothing recorded, nothing run):

1. the signature (``DAEMON__SIGNING_SECRET``): HMAC-SHA256 of the send time and the message bytes, before
   anything else reads them, compared in constant time; older than ``DAEMON__SIGNATURE_MAX_AGE_SECONDS``
   is refused (a captured request cannot be sent again later);
2. ``check_spec``, on the spec with the params filled in, *before* the DAG is built (building runs the
   components' validators, which open files: a schema, a pack config): an inline spec only if
   ``DAEMON__INLINE_SPECS`` is on, and then only components on ``DAEMON__INLINE_COMPONENTS``; every
   ``with`` value, inside mappings and lists too, classified by ``policy_fields``;
3. ``check_request``, on the built DAG's validated parameters (defaults included, nested models and a
   dataset pack's resolved config too): the same checks again, plus the topics a component falls back to
   when none is named.

The checks: a written path must resolve (symlinks and ``..`` followed, from the daemon's working
directory as the components open it) inside the run's directory or a ``DAEMON__PATH_ROOTS`` entry; a read
one may also be under ``DAEMON__READ_ROOTS`` or the pipelines directory; a topic, group or ``reply_topic``
must match a ``DAEMON__TOPIC_PREFIXES`` entry at a ``.``/``-``/``_`` boundary and is never the daemon's own
request, status or dead-letter topic or its group; a database, collection or table is the pipeline
file's own value or matches ``DAEMON__NAME_PREFIXES``; numbers stay within ``DAEMON__PARAM_BOUNDS``,
worker counts within the CPU count, durations and task timeouts within ``DAEMON__MAX_RUN_SECONDS``.
No refusal quotes anything but the request's own values.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pipeline.daemon.policy_fields import (
    EMPTY_IS_UNSET,
    NESTED_MAPPINGS,
    PLAIN_MAPPINGS,
    WORKER_FIELDS,
    Kind,
    default_topic,
    field_kind,
    nested_kind,
)
from pipeline.daemon.requests import BadRequest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from config.settings import DaemonSettings, Settings
    from dag_orchestrator.dag import DAG
    from pipeline.daemon.requests import RunRequest
    from pipeline.spec import PipelineSpec

__all__ = [
    "SIGNATURE_HEADER",
    "SIGNED_AT_HEADER",
    "Kind",
    "bound_key_problems",
    "check_request",
    "check_signature",
    "check_spec",
    "field_kind",
    "sign",
]

SIGNATURE_HEADER = "x-signature"  # value: "sha256=" + hex HMAC-SHA256(secret, signed_at + "." + message value)
SIGNED_AT_HEADER = "x-signed-at"  # value: the send time, Unix seconds (ASCII digits)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_BOUNDARY = ".-_"


# -- 1. signature ---------------------------------------------------------------------------------------------
def sign(secret: str, value: bytes, signed_at: int | None = None) -> list[tuple[str, bytes]]:
    """The headers a sender adds: the send time and the HMAC over it and the message bytes."""
    at = str(int(time.time()) if signed_at is None else signed_at).encode()
    mac = hmac.new(secret.encode(), at + b"." + value, hashlib.sha256).hexdigest().encode()
    return [(SIGNED_AT_HEADER, at), (SIGNATURE_HEADER, b"sha256=" + mac)]


def check_signature(value: bytes | None, headers: Any, secret: str | None, max_age: float = 300.0) -> None:
    """No secret: anyone may send. A secret: the headers must carry a fresh send time and the HMAC of it and
    the message (constant-time compare), so a topic writer is not a trusted sender and a copy expires."""
    if secret is None:
        return
    given = {k.lower(): bytes(v or b"") for k, v in (headers or ())}
    if SIGNATURE_HEADER not in given or SIGNED_AT_HEADER not in given:
        raise BadRequest(
            "forbidden",
            f"unsigned request: the daemon requires {SIGNED_AT_HEADER} and "
            f"{SIGNATURE_HEADER} headers (HMAC-SHA256, DAEMON__SIGNING_SECRET)",
        )
    at = given[SIGNED_AT_HEADER]
    expected = sign(secret, value or b"", int(at) if at.isdigit() and len(at) < 16 else 0)[1][1]
    if not at.isdigit() or not hmac.compare_digest(given[SIGNATURE_HEADER], expected):
        raise BadRequest("forbidden", f"bad signature: the {SIGNATURE_HEADER} header does not match the message")
    age = time.time() - int(at)
    if age > max_age or age < -60:  # (a minute of clock skew forward)
        raise BadRequest(
            "forbidden", f"expired signature: signed {age:.0f} s ago; the daemon accepts {max_age:g} s (DAEMON__SIGNATURE_MAX_AGE_SECONDS)"
        )


# -- 2. the spec, before anything is built ---------------------------------------------------------------------
def check_spec(request: RunRequest, spec: PipelineSpec, baseline: PipelineSpec | None, settings: Settings, run_path: Path) -> None:
    """Refuse what the settings do not allow, looking only at the request's values (no file is opened)."""
    from pipeline.registry import components

    rid, d = request.request_id, settings.daemon
    reply = request.reply_topic
    if reply is not None:
        problem = _Checker(request, settings, run_path).topic(reply)
        if problem:
            raise BadRequest("forbidden", f"field 'reply_topic': {problem}", rid)
    inline = not isinstance(request.pipeline, str)
    if inline and not d.inline_specs:
        raise BadRequest(
            "forbidden",
            "inline pipeline specs are not accepted by this daemon "
            "(DAEMON__INLINE_SPECS=false): name a pipeline of its pipelines directory",
            rid,
        )
    checker = _Checker(request, settings, run_path)
    registry = components()
    for name, task in spec.tasks.items():
        where = f"task {name!r} ({task.uses})"
        cls = registry.get(task.uses)
        if cls is None:
            continue  # building names it (unknown component: bad_spec), and nothing of it can run
        if inline and task.uses not in d.inline_components:
            allowed = ", ".join(d.inline_components) or "none"
            raise BadRequest("forbidden", f"{where}: component not allowed in inline specs (DAEMON__INLINE_COMPONENTS: {allowed})", rid)
        for field, seconds in (("timeout", task.timeout), ("retry_delay", task.retry_delay)):
            if seconds is not None and not (math.isfinite(seconds) and seconds <= d.max_run_seconds):
                raise BadRequest(
                    "forbidden",
                    f"{where} field {field!r}: {seconds:g} s exceeds the daemon's "
                    f"maximum run time {d.max_run_seconds:g} s (DAEMON__MAX_RUN_SECONDS)",
                    rid,
                )
        fields = {}
        for fname, info in cls.Params.model_fields.items():
            fields[fname] = (fname, info.annotation)
            if isinstance(info.alias, str):
                fields[info.alias] = (fname, info.annotation)
        base_task = baseline.tasks.get(name) if baseline is not None else None
        for key, value in task.with_.items():
            fname, annotation = fields.get(key, (key, Any))
            kind = field_kind(task.uses, fname, annotation)
            if kind is Kind.NAME:
                own = base_task.with_.get(key) if base_task is not None and base_task.uses == task.uses else None
                problem = checker.name(value, own)
                problem = f"{key!r}: {problem}" if problem else None
            else:
                problem = checker.raw(task.uses, fname, kind, value)
            if problem:
                raise BadRequest("forbidden", f"{where} field {problem}", rid)


# -- 3. the built DAG's validated parameters -------------------------------------------------------------------
def check_request(request: RunRequest, dag: DAG, settings: Settings, run_path: Path) -> None:
    """Raise BadRequest("forbidden") for the first validated parameter the daemon's settings do not allow."""
    rid, d = request.request_id, settings.daemon
    inline = not isinstance(request.pipeline, str)
    checker = _Checker(request, settings, run_path)
    for task in dag:
        component = getattr(task, "component", None)
        params = getattr(task, "params", None)
        if component is None or not isinstance(params, BaseModel):
            continue
        where = f"task {task.name!r} ({component})"
        if inline and component not in d.inline_components:
            raise BadRequest("forbidden", f"{where}: component not allowed in inline specs (DAEMON__INLINE_COMPONENTS)", rid)
        timeout = getattr(task, "timeout", None)
        if timeout is not None and not (math.isfinite(timeout) and timeout <= d.max_run_seconds):
            raise BadRequest(
                "forbidden",
                f"{where} field 'timeout': {timeout:g} s exceeds the daemon's maximum run "
                f"time {d.max_run_seconds:g} s (DAEMON__MAX_RUN_SECONDS)",
                rid,
            )
        problem = checker.model(component, params, "")
        config = getattr(params, "pack_config", None)  # a dataset pack's config as loaded (its file's out too)
        if problem is None and isinstance(config, BaseModel):
            problem = checker.model("", config, "config (resolved).")
        if problem:
            raise BadRequest("forbidden", f"{where} field {problem}", rid)


def bound_key_problems(d: DaemonSettings) -> list[str]:
    """DAEMON__PARAM_BOUNDS keys naming no numeric field of a registered component (a typo bounds nothing)."""
    from pipeline.registry import components

    registry, bad = components(), []
    for key in d.param_bounds:
        component, _, name = key.rpartition(".")
        cls = registry.get(component)
        if cls is None or name not in cls.Params.model_fields:
            bad.append(key)
    return bad


class _Checker:
    """The checks of one request's values; the roots are resolved on first use (most requests name no path)."""

    def __init__(self, request: RunRequest, settings: Settings, run_path: Path) -> None:
        self.settings, self.d = settings, settings.daemon
        self._write: list[Path] = [run_path, *self.d.path_roots]
        self._read: list[Path] = [*self._write, *self.d.read_roots, self.d.pipelines_dir]
        self._resolved: dict[bool, list[Path]] = {}
        k = settings.kafka
        self.own = {k.request_topic, k.status_topic, self.d.dead_letter_topic, self.d.consumer_group}

    def roots(self, write: bool) -> Iterator[Path]:
        if write not in self._resolved:
            self._resolved[write] = [Path(r).resolve() for r in (self._write if write else self._read)]
        return iter(self._resolved[write])

    # the spec's raw values: strings are checked as what their field names; mappings and lists are walked
    def raw(self, component: str, name: str, kind: Kind | None, value: Any, path: str = "") -> str | None:
        label = f"{path}{name}"
        problem = self.number(component, name, value)
        if problem:
            return f"{label!r}: {problem}"
        if isinstance(value, dict):
            if (component, name) in PLAIN_MAPPINGS:
                return None
            if (component, name) in EMPTY_IS_UNSET:
                value = {k: v for k, v in value.items() if v not in ("", None)}  # as the component drops them
            for k, v in value.items():
                problem = self.raw("", str(k), nested_kind(str(k)), v, f"{label}.")
                if problem:
                    return problem
            return None
        if isinstance(value, list | tuple):
            for v in value:
                problem = self.raw(component, name, kind, v, path) if not isinstance(v, dict) else self.raw("", name, None, v, path)
                if problem:
                    return problem
            return None
        problem = self.value(component, name, kind, value)
        return f"{label!r}: {problem}" if problem else None

    # the validated model: every field, nested models and settings mappings included
    def model(self, component: str, params: BaseModel, path: str) -> str | None:
        for name, info in type(params).model_fields.items():
            value = getattr(params, name)
            kind = field_kind(component, name, info.annotation)
            if value is None and kind is Kind.TOPIC:
                value = default_topic(component, name, self.settings)  # what the component will use
            problem = self.walk(component, name, kind, value, path)
            if problem:
                return problem
        return None

    def walk(self, component: str, name: str, kind: Kind | None, value: Any, path: str) -> str | None:
        label = f"{path}{name}"
        if isinstance(value, BaseModel):
            return self.model(component, value, f"{label}.")
        if isinstance(value, dict):
            if (component, name) not in NESTED_MAPPINGS:
                return None  # reviewed: record field names or server options (PLAIN_MAPPINGS)
            return self.raw(component, name, kind, value, path)
        if isinstance(value, list | tuple):
            for v in value:
                problem = self.walk(component, name, kind, v, path)
                if problem:
                    return problem
            return None
        if kind is Kind.NAME:
            return None  # checked on the spec, where the pipeline file's own value is known
        problem = self.number(component, name, value) or self.value(component, name, kind, value)
        return f"{label!r}: {problem}" if problem else None

    def number(self, component: str, name: str, value: Any) -> str | None:
        number = _as_number(value)
        if number is None:
            return None
        bound = self.d.param_bounds.get(f"{component}.{name}")
        if bound is not None and not (math.isfinite(number) and number <= bound):
            return f"{value!r} exceeds the daemon's bound {bound:g} (DAEMON__PARAM_BOUNDS)"
        if (component, name) in WORKER_FIELDS:
            cpus = os.cpu_count() or 1
            if not 1 <= number <= cpus:
                return f"{value!r}: worker processes must be 1 to {cpus} (the daemon's CPU count)"
        return None

    def value(self, component: str, name: str, kind: Kind | None, value: Any) -> str | None:
        if kind is Kind.PROCESS:
            return f"{value!r}: would take the daemon's own SIGINT/SIGTERM away from it" if value else None
        if kind in (None, Kind.VALUE, Kind.NAME) or value is None or (value == "" and (component, name) in EMPTY_IS_UNSET):
            return None
        if kind is Kind.DURATION:
            seconds = _as_number(value)
            if seconds is not None and name.endswith("_ms"):
                seconds /= 1000
            if seconds is not None and not (math.isfinite(seconds) and seconds <= self.d.max_run_seconds):
                return f"{value!r} s exceeds the daemon's maximum run time {self.d.max_run_seconds:g} s (DAEMON__MAX_RUN_SECONDS)"
            return None
        if not isinstance(value, str | Path):
            return None
        text = str(value)
        if kind is Kind.CODE:
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", text):
                return None
            return f"{text!r}: a request may name only a built-in one (a module or file would be imported: code the daemon would run)"
        if kind is Kind.TOPIC:
            return self.topic(text)
        if kind is Kind.KEY:
            if text.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", text):
                return f"{text!r}: an object-key prefix may not be absolute or contain '..'"
            return None
        if kind is Kind.URI and _URL.match(text):
            milvus_uri = self.settings.milvus.uri
            return None if text == milvus_uri else f"{text!r}: only the configured server (MILVUS__URI) may be named"
        if kind is Kind.REF and _library_name(text):
            return None
        write = kind in (Kind.PATH, Kind.URI)
        if not _inside(text, self.roots(write)):
            where = ", ".join(str(r) for r in self.roots(write))
            what = "DAEMON__PATH_ROOTS" if write else "DAEMON__PATH_ROOTS, DAEMON__READ_ROOTS, the pipelines dir"
            return f"{text!r} resolves outside the run directory and {what} (allowed: {where})"
        return None

    def topic(self, topic: str) -> str | None:
        if topic in self.own:
            return f"{topic!r} is the daemon's own request, status or dead-letter topic or its consumer group"
        if any(_prefixed(topic, p) for p in self.d.topic_prefixes if p):
            return None
        if not self.d.topic_prefixes:
            return f"{topic!r}: this daemon lets requests use no topic (DAEMON__TOPIC_PREFIXES is empty)"
        allowed = ", ".join(self.d.topic_prefixes)
        return f"{topic!r} does not match an allowed prefix (DAEMON__TOPIC_PREFIXES: {allowed})"

    def name(self, value: Any, own: Any) -> str | None:
        """A database/collection/table: the pipeline file's own value (a request's params did not change it),
        unset (the daemon's settings), or one matching DAEMON__NAME_PREFIXES."""
        if value is None or (own is not None and value == own):
            return None
        if isinstance(value, str) and any(_prefixed(value, p) for p in self.d.name_prefixes if p):
            return None
        allowed = ", ".join(self.d.name_prefixes) or "none"
        return (
            f"{_short(value)}: a request may not choose a database, collection or table other than its "
            f"pipeline file's (DAEMON__NAME_PREFIXES: {allowed})"
        )


def _prefixed(text: str, prefix: str) -> bool:
    """Exact, or the prefix then a separator: ``records`` does not admit ``records-dlq``; ``team-a.`` admits
    ``team-a.x``."""
    if text == prefix:
        return True
    if not text.startswith(prefix):
        return False
    return prefix[-1] in _BOUNDARY or text[len(prefix)] in _BOUNDARY


def _library_name(text: str) -> bool:
    """A built-in or user-library schema name (what ``resolve_schema`` looks up before the working directory)."""
    from task_components.schema.library import builtin_names, user_names

    return "/" not in text and "\\" not in text and text in {*builtin_names(), *user_names()}


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if not isinstance(value, int) or abs(value) < 1 << 1000 else math.inf
    if isinstance(value, str) and len(value) < 64:
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _inside(text: str, roots: Iterator[Path]) -> bool:
    path = Path(text).expanduser() if text.startswith("~") else Path(text)
    if not path.is_absolute():
        path = Path(os.getcwd()) / path  # the components open relative paths from the working directory
    real = path.resolve()  # symlinks and ".." followed, as the open would
    return any(real == r or real.is_relative_to(r) for r in roots)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
