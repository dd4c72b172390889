"""``dataset.table`` and ``dataset.commit``: a dataset pack's tables as tasks of a pipeline.

A table task finds its foreign-key parents by the table they write, not by task name, and the graph is
refused before anything runs when a parent is missing from its needs (``needs_problem``), so a table can
never read a parent that is not complete. Generation is CPU work: it runs in a worker thread, so
independent tables of one pack overlap (numpy and Parquet writing release the GIL for the heavy parts).
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Mapping
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.task import Task
from task_components.base import Component
from task_components.contracts import DatasetTableResult
from task_components.datasets.output import publish_csv
from task_components.datasets.pack import (
    Pack,
    PackConfigError,
    PackRun,
    TableDef,
    check_state,
    commit,
    load_pack_config,
)
from task_components.datasets.pack import result_for as _result_for

__all__ = ["DatasetCommit", "DatasetTable", "get_pack", "packs"]


def packs() -> dict[str, Pack]:
    from task_components.datasets.retail import RETAIL

    return {RETAIL.name: RETAIL}


def get_pack(name: str) -> Pack:
    known = packs()
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known packs: {', '.join(sorted(known))}"
    raise PackConfigError(f"unknown dataset pack {name!r}{hint}")


class PackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pack: str = Field(description="dataset pack name, e.g. retail")
    config: str | dict[str, Any] | None = Field(None, description="pack config file (YAML) or inline mapping")
    overrides: dict[str, Any] = Field(default_factory=dict, description="settings overriding the config file")
    _config: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _load(self) -> PackParams:
        pack = get_pack(self.pack)
        # an empty value keeps the file's (or default) setting: a pipeline's `--set config=` / `out=` left unset
        source = self.config or None
        self._config = load_pack_config(pack, source, {k: v for k, v in self.overrides.items() if v not in ("", None)})
        check_state(pack, self._config)
        return self

    @property
    def pack_def(self) -> Pack:
        return get_pack(self.pack)

    @property
    def pack_config(self) -> Any:
        return self._config


class TableParams(PackParams):
    table: str = Field(description="the table (task) of the pack this task generates")

    @model_validator(mode="after")
    def _known_table(self) -> TableParams:
        tables = self.pack_def.tables
        if self.table not in tables:
            close = difflib.get_close_matches(self.table, tables, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; tables: {', '.join(tables)}"
            raise PackConfigError(f"pack {self.pack!r} has no table {self.table!r}{hint}")
        return self


def _tables_of(tasks: Mapping[str, Task], names: Any, pack: str) -> set[str]:
    out: set[str] = set()
    for n in names:
        t = tasks.get(n)
        if isinstance(t, DatasetTable) and t.params.pack == pack:
            out.add(t.params.table)
    return out


class DatasetTable(Component[TableParams]):
    __slots__ = ()
    component = "dataset.table"
    summary = "generate one table of a dataset pack (Parquet or CSV; facts per day); its foreign keys are its needs"
    Params = TableParams
    Result = DatasetTableResult
    default_kind = "cpu"

    def needs_problem(self, tasks: dict[str, Task]) -> str | None:
        p = self.params
        wanted = p.pack_def.tables[p.table].references
        missing = [t for t in wanted if t not in _tables_of(tasks, self.needs, p.pack)]
        if missing:
            return f"table {p.table!r} references {', '.join(missing)}: the task(s) generating them must be needs"
        return None

    async def run(self, ctx: PipelineContext) -> DatasetTableResult:
        p = self.params
        table = p.pack_def.tables[p.table]
        run = PackRun.open(p.pack_def, p.pack_config)
        started = time.perf_counter()
        rows = await anyio.to_thread.run_sync(_build, run, table)
        return _result_for(run, table, rows, time.perf_counter() - started)

    def summarize(self, result: DatasetTableResult) -> dict[str, Any]:
        rate = result.total_rows / result.seconds if result.seconds else 0.0
        return {**result.rows, "days": result.days, "rows/s": f"{rate:,.0f}"}


def _build(run: PackRun, table: TableDef) -> dict[str, int]:
    run.save_layout()
    rows = table.build(run)
    if run.csv:
        publish_csv(run, table)
    return rows


class DatasetCommit(Component[PackParams]):
    __slots__ = ()
    component = "dataset.commit"
    summary = "close a dataset pack run: keep carried state (inventory) and advance the next date"
    Params = PackParams
    Result = dict
    needs_types = (DatasetTableResult,)

    def needs_problem(self, tasks: dict[str, Task]) -> str | None:
        p = self.params
        missing = [t for t in p.pack_def.tables if t not in _tables_of(tasks, self.needs, p.pack)]
        if missing:
            return f"commits pack {p.pack!r} only after every table: missing needs for {', '.join(missing)}"
        return None

    async def run(self, ctx: PipelineContext) -> dict[str, Any]:
        p = self.params
        state = commit(p.pack_def, p.pack_config)
        return {"next_date": state.next_date.isoformat(), "runs": len(state.runs)}

    def summarize(self, result: dict[str, Any]) -> dict[str, Any]:
        return dict(result)
