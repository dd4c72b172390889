"""A streaming stage's configuration read from a watched file, and reloaded between two batches.

What is guaranteed: every batch is processed by exactly one configuration, once. A stage processes its
batches one at a time in arrival order (steps.py); before each batch it looks at its ``config_file``
(one ``stat``, in the batch's own thread, so the event loop never waits on the disk) and, when the file
changed and its new content is valid, processes that batch and the following ones with the new
configuration. The ledger, the offsets and the batches in flight are not touched, so a reload can
neither lose a record nor process one again; a batch the stage already finished stays as it was.

A new file that cannot be used (YAML or JSON syntax, a wrong or unknown key, an unknown rule type or
standardization, an empty file: a write in progress, a missing file) is refused: the stage keeps the
configuration it has and logs ``stage_config_refused`` once per version of the file, naming the file
and the fault. An accepted one is logged as ``stage_config_reloaded`` with the batch it applies from
and what changed: settings added, removed and changed, by path (``rules.amount_range.max: 10000.0 ->
500.0``; a list of named entries, such as the rules, is compared by name).

The file holds some of the stage's own settings (what its ``with:`` holds); those in ``with:`` stay
fixed, and a key set in both places is refused (no silent precedence). Relative paths are read from
the working directory. ``run-pipeline validate`` reads the file as a run would, so a new version can be
checked before it replaces the watched one; write it elsewhere and ``mv`` it over (an atomic rename),
so the stage never reads half a file (one that changes while it is read is read again at the next
batch; an in-place writer pausing half-way can still be read as it stands).

Why a watched file and not SIGHUP: in a run SIGHUP means the terminal hung up, and stops the run
(pipeline/run_signals.py); giving it a second meaning would let a closed terminal leave a run going, or
a reload request stop one. Why looked at per batch and not by a timer: the new configuration can only
apply at a batch boundary anyway, and with no batches there is nothing it could change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, model_validator

from task_components.contracts import BatchStage, StreamBatch

__all__ = ["ConfigRefused", "ReloadableParams", "Reloading", "describe_changes", "read_config"]

OWN_KEYS = ("config_file", "reload")
Signature = tuple[int, int, int]  # inode, size, mtime in ns: a rename, a rewrite or a touch changes it


class ConfigRefused(ValueError):
    """A configuration file that cannot be used, with the file and the fault in the message."""

    def __init__(self, file: str, fault: str) -> None:
        super().__init__(f"config_file {file}: {fault}")
        self.file = file
        self.fault = fault


class BeingWritten(ConfigRefused):
    """The file changed while it was read: read again at the next batch, nothing refused yet."""


def signature(path: str) -> Signature:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read_config(path: str) -> tuple[dict[str, Any], Signature]:
    """The mapping in a YAML or JSON file (JSON by its ``.json`` suffix) and the file's signature as read."""
    try:
        before = signature(path)
        text = Path(path).read_text(encoding="utf-8")
        if signature(path) != before:
            raise BeingWritten(path, "the file changed while it was read (written in place: mv a new version over it)")
    except FileNotFoundError:
        raise ConfigRefused(path, "no such file") from None
    except OSError as exc:
        raise ConfigRefused(path, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigRefused(path, f"not a UTF-8 text file (byte at offset {exc.start})") from None
    if not text.strip():
        raise ConfigRefused(path, "the file is empty (a write in progress? write elsewhere and mv it over)")
    if path.endswith(".json"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigRefused(path, f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    else:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigRefused(path, f"YAML syntax error{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise ConfigRefused(path, f"expected a mapping of the stage's settings, got {type(raw).__name__}")
    own = [k for k in OWN_KEYS if k in raw]
    if own:
        raise ConfigRefused(path, f"{own[0]!r} belongs in the pipeline file (with:), not in the file it names")
    return raw, before


def _fault(err: ValidationError) -> str:
    """pydantic's errors as one line: where (``rules.2``) and what; at most three."""
    parts = []
    for e in err.errors()[:3]:
        where = ".".join(str(p) for p in e["loc"])
        msg = "unknown key (check its spelling)" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{where}: {msg}" if where else msg)
    more = len(err.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


@dataclass(frozen=True, slots=True)
class Loaded:
    params: Any  # the effective parameters: ``with:`` and the file merged
    signature: Signature


class ReloadableParams(BaseModel):
    """The settings every reloadable stage adds to its own (its parameter model derives from this)."""

    config_file: str | None = Field(
        None,
        description="YAML or JSON file with more of this stage's settings (a key may not also be in with:); "
        "read at start and, with reload, again when it changes: applied from the next batch on",
    )
    reload: bool = Field(True, description="watch config_file while the stream runs (false: read once at start)")
    _loaded: Loaded | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _read_config_file(self) -> Self:
        """The file is read and checked with the rest (``validate`` and the start of a run refuse it: exit 2)."""
        if self.config_file is not None:
            self._loaded = self.load()
        return self

    def inline(self) -> dict[str, Any]:
        """The settings given in ``with:`` (what a new version of the file is merged with)."""
        return self.model_dump(include=self.model_fields_set - set(OWN_KEYS))

    def load(self) -> Loaded:
        """Read ``config_file`` now and merge it with ``with:``; ConfigRefused naming the file and fault."""
        assert self.config_file is not None
        raw, sig = read_config(self.config_file)
        inline = self.inline()
        both = sorted(set(raw) & set(inline))
        if both:
            raise ConfigRefused(self.config_file, f"{both[0]!r} is set both in the pipeline (with:) and in this file")
        try:
            merged = type(self).model_validate({**inline, **raw})
        except ValidationError as err:
            raise ConfigRefused(self.config_file, _fault(err)) from None
        return Loaded(merged, sig)

    def effective(self) -> Self:
        """The parameters a run starts with: ``with:`` merged with the file as validated."""
        return self if self._loaded is None else self._loaded.params


def describe_changes(old: Any, new: Any, path: str = "") -> dict[str, list[str]]:
    """What differs between two dumped configurations, by path: added, removed and changed settings.

    Lists whose entries all have a ``name`` (the rules) are compared entry by entry under their names, so
    a changed rule names its changed settings; a new order of the same names is a change of its own
    (the first failing rule is the one a dead letter names)."""
    out: dict[str, list[str]] = {"added": [], "removed": [], "changed": []}

    def walk(a: Any, b: Any, at: str) -> None:
        if _named(a) and _named(b) and (a or b):
            kept_a = [e["name"] for e in a if any(e["name"] == f["name"] for f in b)]
            kept_b = [e["name"] for e in b if any(e["name"] == f["name"] for f in a)]
            if kept_a != kept_b:
                out["changed"].append(f"{at} order: {_short(kept_a)} -> {_short(kept_b)}")
            a, b = {e["name"]: e for e in a}, {e["name"]: e for e in b}
        if isinstance(a, dict) and isinstance(b, dict):
            for key in a.keys() | b.keys():
                sub = f"{at}.{key}" if at else str(key)
                if key not in b:
                    out["removed"].append(sub)
                elif key not in a:
                    out["added"].append(sub)
                else:
                    walk(a[key], b[key], sub)
        elif a != b:
            out["changed"].append(f"{at}: {_short(a)} -> {_short(b)}")

    walk(old, new, path)
    return {k: sorted(v) for k, v in out.items()}


def _named(value: Any) -> bool:
    """A list of entries with unique names (an empty list too: the other side decides)."""
    if not isinstance(value, list) or not all(isinstance(e, dict) and "name" in e for e in value):
        return False
    return len({e["name"] for e in value}) == len(value)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Reloading:
    """A stage's processor that looks at the stage's ``config_file`` before each batch (see the module's
    docstring). Called in the batch's thread; ``build`` makes the stage of new parameters.

    A new processor may take over its predecessor's run state (``take_over(previous) -> note``: the
    duplicate check keeps its window of recent keys); the note is logged with the reload."""

    __slots__ = ("build", "current", "file", "log", "params", "process", "refused", "seen", "task")

    def __init__(self, task: str, params: ReloadableParams, build: Callable[[Any], BatchStage], log: Any) -> None:
        assert params.config_file is not None and params._loaded is not None
        self.task, self.params, self.build, self.log = task, params, build, log
        self.file = params.config_file
        self.current = params._loaded  # the version in use (the task's own parameters are never changed)
        self.seen: Signature | None = self.current.signature  # the version in use or the last refused
        self.refused = False
        self.process = build(self.current.params).processor()

    def __call__(self, batch: StreamBatch) -> None:
        self.check(batch)
        self.process(batch)

    def check(self, batch: StreamBatch) -> None:
        seq = batch.seq
        try:
            now: Signature | None = signature(self.file)
        except OSError:
            now = None
        if now == self.seen:
            return
        try:
            loaded = self.params.load()
        except BeingWritten:
            return  # ``seen`` unchanged: the next batch reads it again, once the writer is done
        except ConfigRefused as exc:
            self.seen = now
            self.refused = True
            self.log.error(
                "stage_config_refused", task=self.task, file=self.file, fault=exc.fault, kept="the configuration in use", batch=seq
            )
            return
        self.seen = loaded.signature
        old, new = self.current.params, loaded.params
        changes = describe_changes(old.model_dump(exclude=set(OWN_KEYS)), new.model_dump(exclude=set(OWN_KEYS)))
        if not any(changes.values()):
            if self.refused:  # back to the version in use after a refused one: say so, nothing changes
                self.log.info("stage_config_unchanged", task=self.task, file=self.file, batch=seq)
            self.refused = False
            return
        process = self.build(new).processor()
        take_over = getattr(process, "take_over", None)
        note = take_over(self.process) if take_over is not None else None
        self.current, self.process, self.refused = loaded, process, False
        first = batch.records[0] if batch.records else None
        where = {"from_record": f"{first.topic}:{first.partition}@{first.offset}"} if first is not None else {}
        self.log.info(
            "stage_config_reloaded", task=self.task, file=self.file, from_batch=seq, **where, **changes, **({"note": note} if note else {})
        )
