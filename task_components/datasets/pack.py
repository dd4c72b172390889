"""Dataset packs: a consistent set of related tables where each table is a task and each foreign key an edge.

A pack declares its tables (``TableDef``): which tables each one references (its foreign-key parents,
which become its ``needs``), which tables it writes, and a synchronous ``build`` run in a worker thread.
Because the references are DAG edges, the executor generates independent tables at the same time
(receipts beside online orders) and a table starts only once every table it references is complete on
disk. ``pack_tasks`` turns a pack into the ``tasks`` of a pipeline file, so a YAML file and the CLI
describe the same graph; ``dataset.table`` checks at build time that a task's needs cover its parents.

Generation state lives in the output directory (``state/``): the next date to generate, the config
fingerprint it was made with, whether history exists and when the last historical and realtime runs
were (the retail seed tool's ``generation_state.json`` fields), and whatever a table carries from one day
to the next (inventory balances). Tables write their carried state to ``state/pending/``; the pack's last task (``dataset.commit``)
moves it into place and advances the date only when every table succeeded, so a failed run is simply
generated again from the same state (same seed, same days: the same bytes).

Output format: Parquet, or CSV with the same layout (``dims/<table>.csv``,
``facts/<table>/dt=YYYY-MM-DD/part-0.csv``). Tables always hand each other Parquet (typed, fast to read
back); in CSV mode that working copy lives in ``state/work/`` and each table task publishes its CSV as
soon as it is written. The commit drops the working facts (the dimensions stay: realtime runs read
them). ``state/layout.json`` says where a directory's facts are and in which format, for readers that
only know ``out`` (``dataset.events``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
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
LAYOUT_FILE = "layout.json"
STATE_VERSION = 2


class PackConfigError(ValueError):
    """An unusable pack configuration; ``str()`` is one line naming the file and the field."""


@dataclass(frozen=True, slots=True)
class TableDef:
    name: str
    references: tuple[str, ...]  # parent tables (foreign keys): they become the task's needs
    writes: tuple[str, ...]  # tables this task writes, e.g. receipts and receipt_lines together
    fact: bool  # facts are written per day, dimensions once per run (deterministically)
    build: Callable[[PackRun], dict[str, int]]  # rows written per table


Adapter = Callable[[dict[str, Any], str], dict[str, Any]]  # another tool's config file -> this pack's settings


@dataclass(frozen=True, slots=True)
class Pack:
    name: str
    summary: str
    config_model: type[BaseModel]
    tables: Mapping[str, TableDef]
    # where and how output is written, and the realtime pacing, do not change the data
    fingerprint_exclude: frozenset[str] = frozenset(
        {"out", "days", "start_date", "format", "dims_dir", "facts_dir", "dictionary_dir", "realtime"}
    )
    adapt: Adapter | None = None  # accepts another tool's config file as is (retail: the seed's config.json)

    def fingerprint(self, config: BaseModel) -> str:
        """What must not change between incremental runs into one directory (seed and volumes)."""
        kept = config.model_dump(mode="json", exclude=set(self.fingerprint_exclude) & set(type(config).model_fields))
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def load_pack_config(pack: Pack, source: str | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> BaseModel:
    """A pack's configuration from a YAML file (or an inline mapping) plus overrides, validated."""
    where = "inline config"
    raw: Any = {}
    if isinstance(source, str):
        where = source
        try:
            text = Path(source).read_text(encoding="utf-8")
            raw = json.loads(text) if source.endswith(".json") else (yaml.safe_load(text) or {})
        except json.JSONDecodeError as exc:
            raise PackConfigError(f"{source}: JSON syntax error at line {exc.lineno}: {exc.msg}") from None
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
    if pack.adapt is not None:
        raw = pack.adapt(raw, where)
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
    has_historical_data: bool = False
    last_historical_run: str | None = None  # wall-clock time (UTC, ISO) of the last committed historical run
    last_realtime_run: str | None = None  # wall-clock time the last realtime run stopped
    last_generated_timestamp: str | None = None  # event time the data reaches (midnight after the last day)
    realtime: dict[str, Any] = field(default_factory=dict)  # what a realtime run hands the next (sequence, pending)

    @classmethod
    def load(cls, out: Path) -> GenerationState | None:
        path = out / "state" / STATE_FILE
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            runs = raw.get("runs", [])
            return cls(
                raw["pack"],
                raw["fingerprint"],
                date.fromisoformat(raw["next_date"]),
                runs,
                bool(raw.get("has_historical_data", bool(runs))),
                raw.get("last_historical_run"),
                raw.get("last_realtime_run"),
                raw.get("last_generated_timestamp"),
                dict(raw.get("realtime") or {}),
            )
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
            "has_historical_data": self.has_historical_data,
            "last_historical_run": self.last_historical_run,
            "last_realtime_run": self.last_realtime_run,
            "last_generated_timestamp": self.last_generated_timestamp,
            "runs": self.runs,
            "realtime": self.realtime,
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

    @property
    def csv(self) -> bool:
        return getattr(self.config, "format", "parquet") == "csv"

    @property
    def dims_root(self) -> Path:
        return Path(getattr(self.config, "dims_dir", None) or self.out / "dims")

    @property
    def facts_root(self) -> Path:
        return Path(getattr(self.config, "facts_dir", None) or self.out / "facts")

    @property
    def work(self) -> Path:
        """Where tables hand each other Parquet in CSV mode (not published)."""
        return self.out / "state" / "work"

    def dim_path(self, table: str) -> Path:
        """The Parquet a dimension is written to and read back from by the tables referencing it."""
        return (self.work / "dims" if self.csv else self.dims_root) / f"{table}.parquet"

    def fact_path(self, table: str, day: date) -> Path:
        """The Parquet a fact day is written to and read back from (in CSV mode: the working copy)."""
        root = self.work / "facts" if self.csv else self.facts_root
        return root / table / f"dt={day.isoformat()}" / "part-0.parquet"

    def csv_path(self, table: str, day: date | None) -> Path:
        if day is None:
            return self.dims_root / f"{table}.csv"
        return self.facts_root / table / f"dt={day.isoformat()}" / "part-0.csv"

    def carried(self, name: str) -> Path:
        """Where the committed state a table carries over to the next run lives."""
        return self.out / "state" / name

    def pending(self, name: str) -> Path:
        """Where a table leaves state for the commit task to move into place."""
        return self.out / "state" / "pending" / name

    def save_layout(self) -> None:
        """Record where the facts are and their format (idempotent: every table task writes the same)."""
        body = json.dumps({"format": "csv" if self.csv else "parquet", "facts": str(self.facts_root), "dims": str(self.dims_root)})
        path = self.out / "state" / LAYOUT_FILE
        if path.exists() and path.read_text(encoding="utf-8") == body:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{LAYOUT_FILE}.{os.getpid()}.{id(self)}.tmp")
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, path)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    state.has_historical_data = True
    state.last_historical_run = now_iso()
    state.last_generated_timestamp = datetime.combine(state.next_date, datetime.min.time()).isoformat()
    state.save(run.out)
    if run.csv:
        shutil.rmtree(run.work / "facts", ignore_errors=True)  # published as CSV; the next run starts afresh
    return state


def pack_tasks(pack: Pack, config: str | Mapping[str, Any], overrides: Mapping[str, Any] | None = None, mode: str = "historical") -> dict:
    """The ``tasks`` of a pipeline file generating the pack: one task per table, foreign keys as needs.

    ``mode: master`` is the dimensions only, without a commit (they are rebuilt from the seed on every
    run, so a later historical run reads the same ones); ``historical`` adds the facts and the commit."""
    if mode not in ("master", "historical"):
        raise PackConfigError(f"mode {mode!r}: pack_tasks builds 'master' or 'historical' (realtime is dataset.realtime)")

    def params(**more: Any) -> dict[str, Any]:
        with_: dict[str, Any] = {"pack": pack.name, **more, "config": config}
        if overrides:
            with_["overrides"] = dict(overrides)
        return with_

    tasks: dict[str, Any] = {}
    for t in pack.tables.values():
        if mode == "historical" or not t.fact:
            tasks[t.name] = {"uses": "dataset.table", "needs": list(t.references), "with": params(table=t.name)}
    if mode == "master":
        return tasks
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
