"""``verify --level scalar|full`` split into shares that workers read and compare on their own.

Why: the comparison reads every row of three stores; in the engine process that is one core and every
byte through one process. Each share here is a pure function of its arguments run by the backend
(Dask workers with ``--backend dask``, worker processes on the local backend) that opens its own
Milvus and PostgreSQL connections and returns only counts and findings, never rows.

- Keyed collections: one share per source file. The worker reads the file, fetches the same keys from
  Milvus and PostgreSQL and compares (``fullscan.scan``); the engine adds the reports up in file order,
  so findings come out as the single-process scan lists them.
- AUTO_ID collections (matched by content, ``content``): the first pass is split: source files in groups,
  the shadow by ``_row`` ranges, Milvus by primary-key ranges between its smallest and largest id;
  each share returns its side's bucket sums (additive), which the engine adds and compares. Only when
  a bucket differs does the second pass (the differing rows, bounded by the budget) run in the engine.

``verify`` uses shares from ``shares_from_rows`` source rows (or always on a Dask deployment); below
that, starting workers costs more than it saves and it scans in the engine as before. Against Milvus
Lite (a second process cannot open its file) or an embedded PostgreSQL (it lives in one run directory)
it always scans in the engine. Every share only reads: a share Dask runs again after losing a worker
returns the same answer.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from dag_orchestrator.backends import make_backend
from dag_orchestrator.context import PipelineContext
from task_components.clients import MilvusTarget, milvus_client, milvus_token, pg_connect
from task_components.connect import count_at
from task_components.contracts import ImportResult, ShadowResult
from task_components.manifest import FileEntry
from task_components.schema.models import FieldSchema
from task_components.schema.postgres import quote
from task_components.verification.content import SIDES, Buckets
from task_components.verification.content_sides import LOWEST_KEY, MilvusWalkError, milvus_batches, shadow_batches, source_batches
from task_components.verification.fullscan import ScanReport, scan

FINDINGS = 100  # what ScanReport keeps


@dataclass(frozen=True, slots=True)
class ScanWork:
    """What every share of one verification shares. ``dsn`` None: the worker's own ``POSTGRES__DSN``;
    a target without a token on a deployment: the worker's own ``MILVUS__TOKEN`` (for that URI only)."""

    imported: ImportResult  # its manifest's files emptied: each share carries its own
    shadow: ShadowResult
    dsn: str | None
    target: MilvusTarget
    fields: list[FieldSchema]
    tolerance: float
    batch_rows: int = 4000

    def with_files(self, files: list[FileEntry]) -> ImportResult:
        manifest = self.imported.manifest.model_copy(update={"files": files})
        manifest.root = self.imported.manifest.root
        return self.imported.model_copy(update={"manifest": manifest})

    def readable(self, files: list[FileEntry]) -> ImportResult:
        """``with_files``, refusing by name a file this worker cannot see (a worker on another host
        without the run directory on a shared filesystem)."""
        imported = self.with_files(files)
        for entry in files:
            path = imported.manifest.file_path(entry)
            if not path.exists():
                raise FileNotFoundError(
                    f"{path}: verify's shares read the source files from the run directory; on a Dask deployment put "
                    "the run directory (PIPELINE__RUN_DIR) on a filesystem the workers share (docs/scaling.md)"
                )
        return imported

    def milvus(self) -> MilvusTarget:
        t = self.target
        return t if t.token is not None or t.lite else replace(t, token=milvus_token(t.uri))

    def pg(self) -> str:
        if self.dsn is not None:
            return self.dsn
        from config.settings import Settings

        dsn = Settings().postgres.dsn
        if dsn is None:
            raise ValueError("this worker has no POSTGRES__DSN: a Dask deployment's workers need the shadow's DSN")
        return dsn.get_secret_value()


def keyed_share(work: ScanWork, entry: FileEntry) -> ScanReport:
    """Runs on a worker: one source file's rows against Milvus and the shadow."""
    imported = work.readable([entry])
    return anyio.run(lambda: scan(imported, work.shadow, work.pg(), work.fields, work.tolerance, work.batch_rows, work.milvus()))


def content_share(work: ScanWork, bits: int, side: str, share: Any) -> tuple[str, int, np.ndarray]:
    """Runs on a worker: one share of one side as (side, rows, bucket sums). ``share``: the source's
    files, the shadow's ``_row`` range, or Milvus' primary-key range (lo, hi]."""
    buckets = Buckets(bits)
    rows = 0
    if side == "source":
        for batch in source_batches(work.readable(share), work.fields, work.batch_rows):
            buckets.add(batch.hashes)
            rows += len(batch.hashes)
    elif side == "milvus":
        for batch in milvus_batches(work.imported, work.fields, work.batch_rows, work.milvus(), keys=share):
            buckets.add(batch.hashes)
            rows += len(batch.hashes)
    else:

        async def walk() -> int:
            n = 0
            async for batch in shadow_batches(work.pg(), work.shadow, work.fields, work.batch_rows, rows=share):
                buckets.add(batch.hashes)
                n += len(batch.hashes)
            return n

        rows = anyio.run(walk)
    return side, rows, buckets.sums


def merge(reports: Iterable[ScanReport]) -> ScanReport:
    out = ScanReport()
    for r in reports:
        out.rows += r.rows
        for side, n in r.by_side.items():
            out.by_side[side] = out.by_side.get(side, 0) + n
        out.findings.extend(r.findings[: FINDINGS - len(out.findings)])
        out.unreadable |= r.unreadable
    return out


def key_bounds(target: MilvusTarget, collection: str, pk: str) -> tuple[int, int] | None:
    """About the smallest and largest primary key in Milvus (None: none seen), the largest by bisection of
    ``pk > x`` with ``limit 1``: about 64 tiny queries instead of reading every key. The smallest is asked
    Strong (once); the bisection at Bounded consistency (a Strong query waits for the server's time tick,
    ~0.2 s each on 2.3): the bounds only balance the shares, whose outer ones are open-ended, so a row
    newer than they saw is still read."""
    client = milvus_client(target)
    try:

        def above(x: int, level: str = "Bounded") -> list[dict[str, Any]]:
            return list(client.query(collection, filter=f"{pk} > {x}", limit=1, output_fields=[pk], consistency_level=level))

        first = above(LOWEST_KEY, "Strong")
        if not first:
            return None
        lowest = int(first[0][pk])
        lo, hi = lowest, 2**63 - 1  # the largest key is in [lo, hi]: some key >= lo, none > hi
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if above(mid - 1):
                lo = mid
            else:
                hi = mid - 1
        return lowest, lo
    finally:
        client.close()


def ranges(lo: int, hi: int, parts: int, floor: int, ceiling: int) -> list[tuple[int, int]]:
    """(a, b] intervals in ``parts`` near-equal pieces of [lo, hi], the first from ``floor`` and the last
    to ``ceiling``: together they cover every value, whatever bounds were found."""
    edges = [lo - 1 + (hi - lo + 1) * i // parts for i in range(parts + 1)]
    edges[0], edges[-1] = floor, ceiling
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def split(items: list[Any], parts: int) -> list[list[Any]]:
    size = -(-len(items) // max(parts, 1)) or 1
    return [items[i : i + size] for i in range(0, len(items), size)]


def scan_backend(ctx: PipelineContext) -> Any:
    return make_backend(ctx.services.backend, ctx.services.workers, ctx.services.scheduler, group=1)


def shares_imported(imported: ImportResult) -> ImportResult:
    """The import result as shares need it: the dataset directory absolute (a worker's working directory
    is not the engine's)."""
    manifest = imported.manifest.model_copy()
    manifest.root = str(Path(imported.manifest.root).resolve()) if imported.manifest.root else None
    return imported.model_copy(update={"manifest": manifest})


async def keyed_scan(ctx: PipelineContext, work: ScanWork) -> ScanReport:
    reports: list[ScanReport] = []
    files = work.imported.manifest.files
    slim = replace(work, imported=work.with_files([]))
    async with scan_backend(ctx) as backend:
        async for report in backend.map_ordered(keyed_share, ((slim, e) for e in files)):
            reports.append(report)
            ctx.progress(done=sum(r.rows for r in reports), total=work.imported.manifest.total_rows, unit="rows")
    return merge(reports)


def content_first_pass(ctx: PipelineContext, work: ScanWork, dsn: str, target: MilvusTarget) -> Any:
    """The ``first_pass`` of ``compare_content``, on the workers (see the module docstring). ``dsn`` and
    ``target`` are the engine's own (the bounds and the count are asked here), ``work``'s may be the workers'."""

    async def first_pass(bits: int) -> tuple[dict[str, Buckets], dict[str, int]]:
        manifest = work.imported.manifest
        pk = work.imported.info.collection_schema.primary.name
        bounds = await anyio.to_thread.run_sync(key_bounds, target, work.imported.collection, pk)
        row_bounds = await _row_bounds(dsn, work.shadow)
        buckets = {s: Buckets(bits) for s in SIDES}
        counts = dict.fromkeys(SIDES, 0)
        slim = replace(work, imported=work.with_files([]))
        async with scan_backend(ctx) as backend:
            parts = 2 * max(_slots(backend), 1)
            shares: list[tuple[str, Any]] = [("source", files) for files in split(manifest.files, parts)]
            if row_bounds is not None:  # (a, b] as a + 1 <= _row < b + 1; the outer ones open-ended (bigint's whole range)
                shares += [("postgres", (a + 1, b + 1)) for a, b in ranges(*row_bounds, parts, -(2**63) - 1, 2**63 - 1)]
            lo, hi = bounds if bounds is not None else (LOWEST_KEY + 1, LOWEST_KEY + 1)  # none seen: one open share
            shares += [("milvus", r) for r in ranges(lo, hi, parts, LOWEST_KEY, 2**63 - 1)]
            async for side, n, sums in _shares(backend, slim, bits, shares):
                buckets[side].sums += sums
                counts[side] += n
        expected = await anyio.to_thread.run_sync(count_at, target, work.imported.collection)
        if counts["milvus"] != expected:
            raise MilvusWalkError(
                f"Milvus {work.imported.collection!r}: the walk by primary-key ranges read {counts['milvus']:,} rows but count(*) "
                f"is {expected:,}: the collection changed during verification"
            )
        return buckets, counts

    return first_pass


def _slots(backend: Any) -> int:
    """Worker threads of the backend: a Dask cluster's, else the local worker processes."""
    return int(getattr(backend, "_slots", 0) or getattr(backend, "workers", 0) or 1)


async def _shares(backend: Any, work: ScanWork, bits: int, shares: list[tuple[str, Any]]) -> AsyncIterator[tuple[str, int, np.ndarray]]:
    async for result in backend.map_ordered(content_share, ((work, bits, side, share) for side, share in shares)):
        yield result


async def _row_bounds(dsn: str, shadow: ShadowResult) -> tuple[int, int] | None:
    """The shadow's smallest and largest ``_row`` (its primary key: two index probes)."""
    key, table = quote(shadow.key), quote(shadow.table)
    conn = await pg_connect(dsn)
    try:
        row = await conn.fetchrow(f"SELECT min({key}) AS lo, max({key}) AS hi FROM {table}")
    finally:
        await conn.close()
    return None if row is None or row["lo"] is None else (int(row["lo"]), int(row["hi"]))
