"""How far the daemon trusts a request: what a writer of the request topic may make it do.

The daemon often runs with broad rights (credentials, a writable disk, every topic), so a request is a
program from a stranger until a setting says otherwise. Checked in this order, each refusal a
``BadRequest`` of kind ``forbidden`` (dead-lettered with its reason, nothing recorded, nothing run):

1. the signature (``DAEMON__SIGNING_SECRET``): HMAC-SHA256 of the message bytes, before anything else
   reads them, compared in constant time;
2. an inline spec only if ``DAEMON__INLINE_SPECS`` is on, and then only components on
   ``DAEMON__INLINE_COMPONENTS``;
3. every task's validated parameters, named pipeline or inline: each field is classified by
   ``field_kind`` (its annotation and name, plus a table for the fields whose name does not say it);
   a path must resolve (symlinks and ``..`` followed, relative to the daemon's working directory as the
   components read it) inside the run's directory or a ``DAEMON__PATH_ROOTS`` entry; a topic or consumer
   group must start with a ``DAEMON__TOPIC_PREFIXES`` entry, and so must ``reply_topic``; numbers stay
   within ``DAEMON__PARAM_BOUNDS`` and no duration-like field or task timeout exceeds
   ``DAEMON__MAX_RUN_SECONDS``.

The checks look at values after ``${params.*}`` substitution (the validated model), so a parameter cannot
smuggle a path past them. A field nobody classified is not a place: the unit test walks every registered
component so a new path or topic field cannot slip past unclassified.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import typing
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pipeline.daemon.requests import BadRequest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from config.settings import DaemonSettings, Settings
    from dag_orchestrator.dag import DAG
    from pipeline.daemon.requests import RunRequest

__all__ = ["SIGNATURE_HEADER", "Kind", "check_request", "check_signature", "field_kind", "sign"]

SIGNATURE_HEADER = "x-signature"  # value: "sha256=" + hex HMAC-SHA256(secret, message value)


class Kind(StrEnum):
    PATH = "path"  # a file or directory on the daemon's host
    TOPIC = "topic"  # a Kafka topic or consumer group the run reads, writes or joins
    REF = "ref"  # a built-in name, or (with a "/" or a file suffix) a path
    URI = "uri"  # a server URI (must be the configured one) or a local file (a path)
    KEY = "key"  # an object-key prefix joined under a store root: no "..", not absolute
    DURATION = "duration"  # seconds: bounded by the daemon's maximum run time
    VALUE = "value"  # reviewed: a plain value although its name sounds like a place (e.g. file_size)


# Fields whose name does not say what they are (component, field) -> kind.
TABLE: dict[tuple[str, str], Kind] = {
    ("generate", "schema_ref"): Kind.REF,
    ("milvus.create_collection", "schema_ref"): Kind.REF,
    ("dataset.commit", "config"): Kind.PATH,
    ("dataset.table", "config"): Kind.PATH,
    ("run.result", "run"): Kind.PATH,
    ("sink.milvus", "uri"): Kind.URI,
    ("storage.upload", "prefix"): Kind.KEY,
    ("source.kafka", "group"): Kind.TOPIC,
    ("milvus.bulk_import", "poll_interval"): Kind.DURATION,
    ("partition", "file_size"): Kind.VALUE,
    ("partition", "file_count"): Kind.VALUE,
}
_PATH_NAMES = {"out", "path", "dir", "root", "local_root", "file", "folder"}
_PATH_SUFFIXES = ("_dir", "_path", "_root", "_file", "_folder")
_DURATION = re.compile(r"(^|_)(seconds|timeout|delay|interval)($|_)")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def field_kind(component: str, name: str, annotation: Any) -> Kind | None:
    """What a parameter field names, or None if it is not a place, a topic or a duration."""
    if (component, name) in TABLE:
        return TABLE[(component, name)]
    if _mentions(annotation, Path) or name in _PATH_NAMES or name.endswith(_PATH_SUFFIXES):
        return Kind.PATH
    if name == "topic" or name.endswith("_topic"):
        return Kind.TOPIC
    if _DURATION.search(name) and (_mentions(annotation, float) or _mentions(annotation, int)):
        return Kind.DURATION
    return None


def _mentions(annotation: Any, kind: type) -> bool:
    if annotation is kind or (isinstance(annotation, type) and issubclass(annotation, kind)):
        return True
    return any(_mentions(a, kind) for a in typing.get_args(annotation))


# -- 1. signature ---------------------------------------------------------------------------------------------
def sign(secret: str, value: bytes) -> bytes:
    return b"sha256=" + hmac.new(secret.encode(), value, hashlib.sha256).hexdigest().encode()


def check_signature(value: bytes | None, headers: Any, secret: str | None) -> None:
    """No secret: anyone may send. A secret: the header must carry the message's HMAC (constant-time compare)."""
    if secret is None:
        return
    given = [v for k, v in (headers or ()) if k.lower() == SIGNATURE_HEADER]
    if not given:
        raise BadRequest("forbidden", f"unsigned request: the daemon requires a {SIGNATURE_HEADER} header "
                                      "(HMAC-SHA256 of the message with DAEMON__SIGNING_SECRET)")  # fmt: skip
    if not hmac.compare_digest(bytes(given[-1] or b""), sign(secret, value or b"")):
        raise BadRequest("forbidden", f"bad signature: the {SIGNATURE_HEADER} header does not match the message")


# -- 2 and 3. the request's spec and parameters ----------------------------------------------------------------
def check_request(request: RunRequest, dag: DAG, settings: Settings, run_path: Path) -> None:
    """Raise BadRequest("forbidden") for the first thing the daemon's settings do not allow."""
    rid, d, milvus_uri = request.request_id, settings.daemon, settings.milvus.uri
    reply = request.reply_topic
    if reply is not None and reply in (settings.kafka.request_topic, d.dead_letter_topic):  # would feed itself
        raise BadRequest("forbidden", f"field 'reply_topic': {reply!r} is the daemon's own request or dead-letter "
                                      "topic", rid)  # fmt: skip
    if reply is not None and not _topic_ok(reply, d):
        raise BadRequest("forbidden", f"field 'reply_topic': {reply!r} {_prefix_rule(d)}", rid)
    inline = not isinstance(request.pipeline, str)
    if inline and not d.inline_specs:
        raise BadRequest("forbidden", "inline pipeline specs are not accepted by this daemon "
                                      "(DAEMON__INLINE_SPECS=false): name a pipeline of its pipelines directory",
                         rid)  # fmt: skip
    roots = _Roots(run_path, d.path_roots)
    for task in dag:
        component = getattr(task, "component", None)
        params = getattr(task, "params", None)
        if component is None or not isinstance(params, BaseModel):
            continue
        where = f"task {task.name!r} ({component})"
        if inline and component not in d.inline_components:
            allowed = ", ".join(d.inline_components) or "none"
            raise BadRequest("forbidden", f"{where}: component not allowed in inline specs "
                                          f"(DAEMON__INLINE_COMPONENTS: {allowed})", rid)  # fmt: skip
        timeout = getattr(task, "timeout", None)
        if timeout is not None and timeout > d.max_run_seconds:
            raise BadRequest("forbidden", f"{where} field 'timeout': {timeout:g} s exceeds the daemon's maximum run "
                                          f"time {d.max_run_seconds:g} s (DAEMON__MAX_RUN_SECONDS)", rid)  # fmt: skip
        for name, info in type(params).model_fields.items():
            problem = _field_problem(component, name, info.annotation, getattr(params, name), d, roots, milvus_uri)
            if problem:
                raise BadRequest("forbidden", f"{where} field {name!r}: {problem}", rid)


class _Roots:
    """Where paths may point, resolved on first use (most requests name no path: no filesystem calls)."""

    def __init__(self, run_path: Path, extra: list[Path]) -> None:
        self._given: list[Path] = [run_path, *extra]
        self._resolved: list[Path] | None = None

    def __iter__(self) -> Iterator[Path]:
        if self._resolved is None:
            self._resolved = [Path(r).resolve() for r in self._given]
        return iter(self._resolved)


def _field_problem(component: str, name: str, annotation: Any, value: Any, d: DaemonSettings, roots: _Roots,
                   milvus_uri: str | None) -> str | None:  # fmt: skip
    bound = d.param_bounds.get(f"{component}.{name}")
    if bound is not None and _number(value) and value > bound:
        return f"{value!r} exceeds the daemon's bound {bound:g} (DAEMON__PARAM_BOUNDS)"
    kind = field_kind(component, name, annotation)
    if kind in (None, Kind.VALUE) or value is None:
        return None
    if kind is Kind.DURATION:
        seconds = value / 1000 if _number(value) and name.endswith("_ms") else value
        if _number(seconds) and seconds > d.max_run_seconds:
            return (f"{value!r} s exceeds the daemon's maximum run time {d.max_run_seconds:g} s "
                    "(DAEMON__MAX_RUN_SECONDS)")  # fmt: skip
        return None
    values = value if isinstance(value, list | tuple) else [value]
    for v in values:
        if not isinstance(v, str | Path):
            continue  # an inline mapping (schema, config), not a place
        text = str(v)
        if kind is Kind.TOPIC:
            if not _topic_ok(text, d):
                return f"{text!r} {_prefix_rule(d)}"
        elif kind is Kind.KEY:
            if text.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", text):
                return f"{text!r}: an object-key prefix may not be absolute or contain '..'"
        elif kind is Kind.URI and _URL.match(text):
            if text != milvus_uri:
                return f"{text!r}: only the configured server (MILVUS__URI) may be named"
        elif kind is Kind.REF and "/" not in text and "\\" not in text and not Path(text).suffix:
            continue  # a built-in name
        elif not _inside(text, roots):
            where = ", ".join(str(r) for r in roots)
            return f"{text!r} resolves outside the run directory and DAEMON__PATH_ROOTS (allowed: {where})"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _inside(text: str, roots: _Roots) -> bool:
    path = Path(text)
    if not path.is_absolute():
        path = Path(os.getcwd()) / path  # the components open relative paths from the working directory
    real = path.resolve()  # symlinks and ".." followed, as the open would
    return any(real == r or real.is_relative_to(r) for r in roots)


def _topic_ok(topic: str, d: DaemonSettings) -> bool:
    return any(topic.startswith(p) for p in d.topic_prefixes if p)


def _prefix_rule(d: DaemonSettings) -> str:
    if not d.topic_prefixes:
        return "names a topic, and this daemon lets requests name none (DAEMON__TOPIC_PREFIXES is empty)"
    return f"does not start with an allowed prefix (DAEMON__TOPIC_PREFIXES: {', '.join(d.topic_prefixes)})"
