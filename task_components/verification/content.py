"""AUTO_ID collections, every row three ways, matched by content: source files vs Milvus vs the shadow.

Milvus assigns AUTO_ID keys, so no key joins the three sides (the shadow's ``_row`` is a stream
position, Milvus' id its own): rows are matched by their canonical content hash (``canonical``), and
the three multisets of hashes are compared. Two passes keep memory bounded by buckets, not rows:

1. Every side is streamed in batches (Parquet batches; a PostgreSQL cursor; Milvus pages of
   ``pk > last`` with a limit, the keyset walk pymilvus' query_iterator does and relying on the same
   thing, that a limited query returns the smallest keys, but as Strong queries: on the 2.3 server
   the iterator's client-side session timestamp misses rows written in the last second or so).
   Each row's hash lands in one of 2**b buckets by its top b bits (b = 8..18, about 4+ rows per
   bucket), and each side keeps per bucket the row count, the sum of the hashes and the sum of a
   remix of them, mod 2**64. Equal multisets give equal triples; unequal ones almost never do.
2. Only if a bucket differs, every side is streamed again, and the rows in differing buckets are kept
   (content and where each copy is), up to ``budget`` rows; further differing buckets are attributed
   from their counts alone.

Per hash, the side whose count disagrees with the other two is wrong (majority; with no two agreeing,
each store is judged against the source). A missing row and an extra row on the same side that differ
in exactly one field are one changed row, and that field is named; when the field is a vector within
``tolerance`` the pair is no disagreement at all (the hash compares exact float32 bytes).

Cost: a clean run reads every side once and computes one BLAKE2b per row (plus one canonical bytes
object per value of the batch in flight); memory is one batch per side plus 9 * 2**b uint64 (under
20 MB). A divergent run reads every side a second time and holds the rows of the expanded buckets,
at most ``budget`` of them over the three sides (each distinct row's content once, a few KB with a
large vector).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np

from task_components.clients import MilvusTarget
from task_components.contracts import ImportResult, ShadowResult
from task_components.schema.models import FieldSchema
from task_components.schema.types import spec
from task_components.verification.canonical import vector_values
from task_components.verification.content_sides import (
    Batch,
    each_batch,
    milvus_batches,
    shadow_batches,
    source_batches,
)
from task_components.verification.fullscan import ScanReport

__all__ = [
    "SIDES",
    "Buckets",
    "FirstPass",
    "attribute_counts",
    "attribute_rows",
    "compare_content",
    "pair_changes",
    "split_buckets",
]

SIDES = ("source", "milvus", "postgres")


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _remix(h: np.ndarray) -> np.ndarray:
    """A second, independent-looking function of the hash (splitmix64's finaliser)."""
    with np.errstate(over="ignore"):
        x = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31)) ^ _MIX


@dataclass(slots=True)
class Buckets:
    """Per bucket of hash prefixes: row count, sum of hashes, sum of remixed hashes (mod 2**64)."""

    bits: int
    sums: np.ndarray = field(init=False)  # (3, 2**bits) uint64

    def __post_init__(self) -> None:
        self.sums = np.zeros((3, 1 << self.bits), np.uint64)

    def of(self, hashes: np.ndarray) -> np.ndarray:
        return (hashes >> np.uint64(64 - self.bits)).astype(np.int64)

    def add(self, hashes: np.ndarray) -> None:
        b = self.of(hashes)
        np.add.at(self.sums[0], b, np.uint64(1))
        np.add.at(self.sums[1], b, hashes)
        np.add.at(self.sums[2], b, _remix(hashes))

    @staticmethod
    def bits_for(rows: int) -> int:
        return int(min(18, max(8, np.ceil(np.log2(max(rows, 1) / 4)))))


def attribute_counts(counts: dict[str, int], same: dict[str, bool] | None = None) -> list[tuple[str, int]]:
    """The wrong side(s) and by how many rows (its count minus the majority's: < 0 missing, > 0 extra).

    ``same`` (bucket level) says whether a side's whole triple equals the source's, for a bucket whose
    counts agree but whose contents do not.
    """
    s, m, p = (counts[x] for x in SIDES)
    eq = same or {"milvus": m == s, "postgres": p == s, "mp": m == p}
    if eq["milvus"] and eq["postgres"]:
        return []
    if eq["mp"]:
        return [("source", s - m)]
    if eq["postgres"]:
        return [("milvus", m - s)]
    if eq["milvus"]:
        return [("postgres", p - s)]
    return [("milvus", m - s), ("postgres", p - s)]  # no two agree: the source is the reference


def split_buckets(sums: list[np.ndarray], budget: int) -> tuple[np.ndarray, dict[str, int]]:
    """The differing buckets to expand row by row (their rows fit ``budget``), and blame for the rest.

    ``sums`` are the sides' (3, buckets) triples in ``SIDES`` order. A bucket beyond the budget is
    blamed from its triples alone: the odd side, by its count difference (at least 1 when only the
    sums differ, i.e. rows changed in place).
    """
    src, mil, pg = sums
    differing = np.flatnonzero(np.any((src != mil) | (src != pg), axis=0))
    sizes = np.cumsum(src[0][differing] + mil[0][differing] + pg[0][differing])
    blamed: dict[str, int] = {}
    for b in differing[sizes > budget]:
        n = {s: int(x[0][b]) for s, x in zip(SIDES, sums, strict=True)}
        same = {
            "milvus": bool(np.all(mil[:, b] == src[:, b])),
            "postgres": bool(np.all(pg[:, b] == src[:, b])),
            "mp": bool(np.all(mil[:, b] == pg[:, b])),
        }
        for side, delta in attribute_counts(n, same):
            blamed[side] = blamed.get(side, 0) + max(abs(delta), 1)
    return differing[sizes <= budget], blamed


def pair_changes(
    missing: list[int],
    extra: list[int],
    content: dict[int, list[bytes]],
    fields: list[FieldSchema],
    tolerance: float,
) -> tuple[list[tuple[int, int, str | None]], list[int], list[int]]:
    """Pair missing and extra rows that differ in exactly one field: (missing, extra, field or None).

    The field is None when the only difference is a vector within ``tolerance`` (no disagreement).
    Returns the pairs and the rows left unpaired. Cost: one small digest per row and field.
    """

    def others(h: int, j: int) -> bytes:
        d = hashlib.blake2b(j.to_bytes(4, "little"), digest_size=16)
        for k, b in enumerate(content[h]):
            if k != j:
                d.update(len(b).to_bytes(4, "little") + b)
        return d.digest()

    index: dict[bytes, list[int]] = defaultdict(list)  # digest of all fields but j -> missing positions
    for i, h in enumerate(missing):
        for j in range(len(fields)):
            index[others(h, j)].append(i)
    used: set[int] = set()
    pairs: list[tuple[int, int, str | None]] = []
    left_extra: list[int] = []
    for h in extra:
        match = None
        for j in range(len(fields)):
            candidates = [i for i in index.get(others(h, j), []) if i not in used]
            if candidates:
                match = (candidates[0], j)
                break
        if match is None:
            left_extra.append(h)
            continue
        i, j = match
        used.add(i)
        f = fields[j]
        changed: str | None = f.name
        if spec(f).storage == "vector":
            a, b = vector_values(f, content[missing[i]][j]), vector_values(f, content[h][j])
            if a is not None and b is not None and a.shape == b.shape and np.all(np.abs(a - b) <= tolerance):
                changed = None
        pairs.append((missing[i], h, changed))
    return pairs, [h for i, h in enumerate(missing) if i not in used], left_extra


# -- the comparison ---------------------------------------------------------------------------------------
FirstPass = Callable[[int], Awaitable[tuple[dict[str, "Buckets"], dict[str, int]]]]  # bits -> buckets and rows per side


async def compare_content(
    imported: ImportResult,
    shadow: ShadowResult,
    dsn: str,
    fields: list[FieldSchema],
    tolerance: float,
    batch_rows: int = 2000,
    budget: int = 20_000,
    target: MilvusTarget | None = None,
    first_pass: FirstPass | None = None,
) -> ScanReport:
    """Findings {key, field, side, problem, hash, and the row's place on each side that holds it}.

    ``first_pass`` computes the sides' bucket sums and row counts elsewhere (``shares``: on workers, each
    reading a share of each side); the second pass, only for differing buckets, runs here."""
    readers: dict[str, Callable[[], Any]] = {
        "source": lambda: source_batches(imported, fields, batch_rows),
        "milvus": lambda: milvus_batches(imported, fields, batch_rows, target or imported.info.milvus()),
        "postgres": lambda: shadow_batches(dsn, shadow, fields, batch_rows),
    }
    bits = Buckets.bits_for(imported.manifest.total_rows)
    if first_pass is not None:
        buckets, counts = await first_pass(bits)
    else:
        buckets = {s: Buckets(bits) for s in SIDES}
        counts = {}

        async def first(side: str) -> None:
            counts[side] = await each_batch(side, readers[side], lambda b: buckets[side].add(b.hashes))

        async with anyio.create_task_group() as tg:
            for side in SIDES:
                tg.start_soon(first, side)
    report = ScanReport(rows=counts["source"])
    expand, by_counts = split_buckets([buckets[s].sums for s in SIDES], budget)
    for side, n in by_counts.items():
        report.by_side[side] = report.by_side.get(side, 0) + n
        report.findings.append(
            {
                "key": None,
                "field": None,
                "side": side,
                "problem": f"about {n} rows differ in buckets beyond the detail budget (blamed from bucket counts)",
            }
        )
    if not len(expand):
        return report
    wanted = np.zeros(1 << buckets["source"].bits, bool)
    wanted[expand] = True
    content: dict[int, list[bytes]] = {}
    where: dict[str, dict[int, list[Any]]] = {s: defaultdict(list) for s in SIDES}

    def keep(side: str, batch: Batch) -> None:
        for i in np.flatnonzero(wanted[buckets[side].of(batch.hashes)]):
            h = int(batch.hashes[i])
            content.setdefault(h, [c[i] for c in batch.columns])
            where[side][h].append(batch.locate(int(i)))

    async def second(side: str) -> None:
        await each_batch(side, readers[side], lambda b: keep(side, b))

    async with anyio.create_task_group() as tg:
        for side in SIDES:
            tg.start_soon(second, side)
    attribute_rows(report, content, where, fields, tolerance)
    return report


def attribute_rows(
    report: ScanReport,
    content: dict[int, list[bytes]],
    where: dict[str, dict[int, list[Any]]],
    fields: list[FieldSchema],
    tolerance: float,
) -> None:
    """Findings into ``report`` from the kept rows: ``content`` by hash, ``where[side][hash]`` its places."""
    missing: dict[str, list[int]] = defaultdict(list)
    extra: dict[str, list[int]] = defaultdict(list)
    for h in content:
        for side, delta in attribute_counts({s: len(where[s].get(h, ())) for s in SIDES}):
            (missing if delta < 0 else extra)[side].extend([h] * abs(delta))

    def add(versions: list[int], side: str, fname: str | None, problem: str) -> None:
        """One finding; ``versions`` are the row's hashes (the right one, then the wrong side's).

        It says where the row is on each side holding it; when the blamed side holds several copies
        (which one is the extra is arbitrary) ``copies`` lists them (up to 10).
        """
        places: dict[str, Any] = {
            ("milvus_id" if s == "milvus" else f"{s}_row"): where[s][h][-1] for h in versions for s in SIDES if where[s].get(h)
        }
        if len(held := where.get(side, {}).get(versions[-1], [])) > 1:
            places["copies"] = held[:10]
        key = places.get("milvus_id", f"hash:{versions[0]:016x}")
        report.add(key, fname, side, problem, hash=f"{versions[-1]:016x}", **places)

    for side in SIDES:
        pairs, lost, added = pair_changes(missing[side], extra[side], content, fields, tolerance)
        for was, now, fname in pairs:
            if fname is not None:  # None: a vector within the tolerance, no disagreement
                add([was, now], side, fname, "value differs")
        for h in lost:
            add([h], side, None, "row not in the source files" if side == "source" else "row missing")
        for h in added:  # on the source side: a source row neither store holds
            add([h], "both" if side == "source" else side, None, "row missing" if side == "source" else "extra row")
