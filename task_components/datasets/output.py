"""Where a pack's output is and in which format: the CSV publication beside Parquet, and the reader of
fact days for consumers that only know the output directory (``dataset.events``).

See pack.py's docstring for the layout: tables always exchange Parquet; in CSV mode each table task
publishes its CSV as soon as its Parquet is written, with the same partitions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from task_components.datasets.pack import LAYOUT_FILE, PackRun, TableDef

__all__ = ["Layout", "publish_csv", "write_csv"]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a pack directory's facts are and in which format (``state/layout.json``; Parquet in out/facts if absent)."""

    format: str
    facts: Path
    work: Path

    @classmethod
    def of(cls, out: Path) -> Layout:
        path = out / "state" / LAYOUT_FILE
        if not path.exists():
            return cls("parquet", out / "facts", out / "state" / "work")
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(raw["format"], Path(raw["facts"]), out / "state" / "work")

    def days(self, table: str) -> list[str]:
        return sorted(d.name.removeprefix("dt=") for d in (self.facts / table).glob("dt=*"))

    def read(self, table: str, day: str) -> Any:
        """A fact day as an Arrow table: the Parquet (or, in CSV mode, its working copy while it exists)."""
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        part = Path(table) / f"dt={day}"
        if self.format == "parquet":
            files = sorted((self.facts / part).glob("*.parquet"))
        else:
            files = sorted((self.work / "facts" / part).glob("*.parquet"))
            if not files:  # committed: the working copy is gone, the CSV is what is left
                csvs = sorted((self.facts / part).glob("*.csv"))
                return pa.concat_tables(pcsv.read_csv(f) for f in csvs) if csvs else None
        return pa.concat_tables(pq.read_table(f) for f in files) if files else None


def publish_csv(run: PackRun, table: TableDef) -> None:
    """CSV mode: write the CSV of every table (and fact day) a task just wrote as Parquet.

    Same bytes for the same Parquet (pyarrow's writer: quoted strings, ISO timestamps to the
    millisecond); list columns (a DC's served states) are joined with ``|``; written atomically."""
    import pyarrow.parquet as pq

    for name in table.writes:
        days: list[date | None] = list(run.dates()) if table.fact else [None]
        for day in days:
            src = run.dim_path(name) if day is None else run.fact_path(name, day)
            if src.exists():  # weekly snapshots exist on Sundays only
                write_csv(pq.read_table(src), run.csv_path(name, day))


def write_csv(table: Any, path: Path) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            table = table.set_column(i, f.name, pc.binary_join(table[f.name], "|"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pcsv.write_csv(table, tmp)
    os.replace(tmp, path)
    return int(table.num_rows)
