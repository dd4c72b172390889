"""Dataset packs: a consistent set of related tables where each table is a task and each foreign key an edge.

A pack declares its tables (``TableDef``): which tables each one references (its foreign-key parents,
which become its ``needs``), which tables it writes, and a synchronous ``build`` run in a worker thread.
Because the references are DAG edges, the executor generates independent tables at the same time
(receipts beside online orders) and a table starts only once every table it references is complete on
disk. ``pack_tasks`` turns a pack into the ``tasks`` of a pipeline file, so a YAML file and the CLI
describe the same graph; ``dataset.table`` checks at build time that a task's needs cover its parents.

Generation state lives in the output directory (``state/``): the next date to generate, the config
fingerprint it was made with, and whatever a table carries from one day to the next (inventory
balances). Tables write their carried state to ``state/pending/``; the pack's last task (``dataset.commit``)
moves it into place and advances the date only when every table succeeded, so a failed run is simply
generated again from the same state (same seed, same days: the same bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from task_components.contracts import DatasetTableResult

__all__ = [
    "GenerationState",
    "Pack",
    "PackConfigError",
    "PackRun",
    "TableDef",
    "load_pack_config",
    "pack_tasks",
]

STATE_FILE = "generation_state.json"
STATE_VERSION = 1


class PackConfigError(ValueError):
    """An unusable pack configuration; ``str()`` is one line naming the file and the field."""


@dataclass(frozen=True, slots=True)
class TableDef:
    name: str
    references: tuple[str, ...]  # parent tables (foreign keys): they become the task's needs
    writes: tuple[str, ...]  # tables this task writes, e.g. receipts and receipt_lines together
    fact: bool  # facts are written per day, dimensions once per run (deterministically)
    build: Callable[[PackRun], dict[str, int]]  # rows written per table


@dataclass(frozen=True, slots=True)
class Pack:
    name: str
    summary: str
    config_model: type[BaseModel]
    tables: Mapping[str, TableDef]
    fingerprint_exclude: frozenset[str] = frozenset({"out", "days", "start_date"})

    def fingerprint(self, config: BaseModel) -> str:
        """What must not change between incremental runs into one directory (seed and volumes)."""
        kept = config.model_dump(mode="json", exclude=set(self.fingerprint_exclude))
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def load_pack_config(pack: Pack, source: str | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> BaseModel:
    """A pack's configuration from a YAML file (or an inline mapping) plus overrides, validated."""
    where = "inline config"
    raw: Any = {}
    if isinstance(source, str):
        where = source
        try:
            raw = yaml.safe_load(Path(source).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise PackConfigError(f"{source}: no such pack config file (relative paths are from {Path.cwd()})") from None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise PackConfigError(f"{source}: not a readable UTF-8 YAML pack config file ({why})") from None
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            at = f" at line {line + 1}" if line is not None else ""
            raise PackConfigError(f"{source}: YAML syntax error{at}") from None
        if not isinstance(raw, dict):
            raise PackConfigError(f"{source}: a pack config file holds a mapping of settings")
    elif source is not None:
        raw = dict(source)
    try:
        return pack.config_model.model_validate({**raw, **overrides})
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "(root)"
        msg = "unknown setting (check its spelling)" if first["type"] == "extra_forbidden" else first["msg"]
        got = "" if isinstance(first.get("input"), dict) else f" (got {first.get('input')!r})"  # a cross-field check
        raise PackConfigError(f"{where}: field {name!r}: {msg.removeprefix('Value error, ')}{got}") from None


@dataclass(slots=True)
class GenerationState:
    pack: str
    fingerprint: str
    next_date: date
    runs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, out: Path) -> GenerationState | None:
        path = out / "state" / STATE_FILE
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(raw["pack"], raw["fingerprint"], date.fromisoformat(raw["next_date"]), raw.get("runs", []))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PackConfigError(
                f"{path}: the saved generation state is damaged ({type(exc).__name__}: {exc}); restore it or start a new out"
            ) from None

    def save(self, out: Path) -> None:
        path = out / "state" / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        body = {
            "version": STATE_VERSION,
            "pack": self.pack,
            "fingerprint": self.fingerprint,
            "next_date": self.next_date.isoformat(),
            "runs": self.runs,
        }
        tmp.write_text(json.dumps(body, indent=2))
        os.replace(tmp, path)


def check_state(pack: Pack, config: Any) -> GenerationState | None:
    """The saved state of ``config.out``, refused if it was made by another pack or configuration."""
    out = Path(config.out)
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise PackConfigError(f"out {out}: {blocker} is a file, not a directory")
    state = GenerationState.load(out)
    if state is None:
        return None
    if state.pack != pack.name:
        raise PackConfigError(f"{out} holds a {state.pack!r} dataset, not {pack.name!r}: choose another out")
    if state.fingerprint != pack.fingerprint(config):
        raise PackConfigError(
            f"{out} was generated with another seed or volume settings (fingerprint {state.fingerprint}): "
            "incremental runs must keep them; choose another out to start afresh"
        )
    return state


@dataclass(frozen=True, slots=True)
class PackRun:
    """One run of one table: the configuration, where to write, and which days this run covers."""

    pack: Pack
    config: Any
    out: Path
    start: date
    days: int
    first_run: bool
    origin: date  # the first day of the first run: what dimensions may date from, identical in every run

    @classmethod
    def open(cls, pack: Pack, config: Any) -> PackRun:
        state = check_state(pack, config)
        start = state.next_date if state else config.start_date
        origin = date.fromisoformat(state.runs[0]["start"]) if state and state.runs else config.start_date
        return cls(pack, config, Path(config.out), start, config.days, state is None, origin)

    def dates(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    def dim_path(self, table: str) -> Path:
        return self.out / "dims" / f"{table}.parquet"

    def fact_path(self, table: str, day: date) -> Path:
        return self.out / "facts" / table / f"dt={day.isoformat()}" / "part-0.parquet"

    def carried(self, name: str) -> Path:
        """Where the committed state a table carries over to the next run lives."""
        return self.out / "state" / name

    def pending(self, name: str) -> Path:
        """Where a table leaves state for the commit task to move into place."""
        return self.out / "state" / "pending" / name


def commit(pack: Pack, config: Any) -> GenerationState:
    """Move pending carried state into place and advance the next date (the run's last step)."""
    run = PackRun.open(pack, config)
    pending = run.out / "state" / "pending"
    if pending.exists():
        for item in sorted(pending.iterdir()):
            os.replace(item, run.carried(item.name))
    state = GenerationState.load(run.out) or GenerationState(pack.name, pack.fingerprint(config), run.start)
    state.next_date = run.start + timedelta(days=run.days)
    state.runs.append({"start": run.start.isoformat(), "days": run.days})
    state.save(run.out)
    return state


def pack_tasks(pack: Pack, config: str | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict:
    """The ``tasks`` of a pipeline file generating the pack: one task per table, foreign keys as needs."""

    def params(**more: Any) -> dict[str, Any]:
        with_: dict[str, Any] = {"pack": pack.name, **more, "config": config}
        if overrides:
            with_["overrides"] = dict(overrides)
        return with_

    tasks: dict[str, Any] = {}
    for t in pack.tables.values():
        tasks[t.name] = {"uses": "dataset.table", "needs": list(t.references), "with": params(table=t.name)}
    tasks["commit"] = {"uses": "dataset.commit", "needs": list(pack.tables), "with": params()}
    return tasks


def result_for(run: PackRun, table: TableDef, rows: dict[str, int], seconds: float) -> DatasetTableResult:
    return DatasetTableResult(run.pack.name, table.name, str(run.out), rows, run.days if table.fact else 0, seconds)


def rng_for(seed: int, table: str, day: date | None = None) -> Any:
    """The generator of one table's one day: keyed by (seed, table, day), never by run or worker, so a
    day's rows are the same whether it is generated in one run or in the second of two."""
    import zlib

    import numpy as np

    return np.random.default_rng([seed, zlib.crc32(table.encode()), day.toordinal() if day else 0])


def write_parquet(table: Any, path: Path) -> int:
    """Write atomically (temp file, then rename): a reader never sees half a partition."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return int(table.num_rows)
