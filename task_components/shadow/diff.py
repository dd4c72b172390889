"""The pure half of comparing a collection with its shadow: rows in, differences out (no I/O here).

Every comparison (a query, the key sets, chosen entities, a whole collection) reduces to two steps that
need no services, so they are unit-tested alone:

- ``key_differences``: keys one side has and the other lacks. Which side is wrong comes from
  ``tracker.judge`` (the key tracker's last known state; Milvus, the system of record, when it knows
  nothing). ``kind`` describes the wrong side: ``missing`` = it lacks a row that should exist,
  ``extra`` = it holds a row that should not (also: a key Milvus stores more than once).
- ``row_differences``: field by field for keys both sides hold, through the field-type table's
  ``same_value`` (vectors within a tolerance, FLOAT at float32 precision, JSON by value); dense vectors
  of a batch are compared as one numpy matrix. A changed value cannot be attributed by the tracker
  (it records existence, not values), so it is charged to PostgreSQL, as ``judge`` does without a record.

A ``Comparison`` keeps every count but only the first ``max_kept`` differences, so a collection that
diverged completely still reports in bounded memory.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema, FieldSchema
from task_components.schema.types import same_value, spec, value_matrix
from task_components.shadow.tracker import KeyStateTracker, judge
from task_components.vectors import scores

__all__ = [
    "Comparison",
    "Difference",
    "Kind",
    "SearchComparison",
    "TopK",
    "dynamic_part",
    "key_differences",
    "recall",
    "row_differences",
    "sample_dims",
    "short",
]

Kind = Literal["missing", "extra", "changed"]


def short(value: Any, width: int = 60) -> str | None:
    """A value as a person reads it in one table cell (vectors are long)."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    text = value.hex() if isinstance(value, bytes | bytearray) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement: which key, which field (None: the whole row), what, and the side judged wrong."""

    key: Any
    field: str | None
    kind: Kind
    side: str  # "milvus" or "postgres"
    milvus: str | None = None  # short renderings of the two values, for people
    postgres: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        what = f"field {self.field!r}" if self.field else "row"
        text = f"key {self.key!r}: {what} {self.kind} in {self.side}"
        if self.kind == "changed":
            text += f" (milvus {self.milvus}, postgres {self.postgres})"
        return text + (f": {self.detail}" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "field": self.field,
            "kind": self.kind,
            "side": self.side,
            "milvus": self.milvus,
            "postgres": self.postgres,
            "detail": self.detail,
        }


@dataclass(slots=True)
class Comparison:
    """The result of one comparison: ``ok`` when nothing differs; counts by kind and side are exact."""

    what: str  # query, primary keys, entities, validate
    collection: str
    table: str = ""
    filter: str = ""
    compared: int = 0  # keys (or rows) looked at
    milvus_count: int | None = None
    postgres_count: int | None = None
    differences: list[Difference] = field(default_factory=list)  # the first ``max_kept``
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, side) -> number
    max_kept: int = 1000
    notes: list[str] = field(default_factory=list)  # what could not be compared, and why (not differences)

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, diffs: Iterable[Difference]) -> None:
        for d in diffs:
            self.counts[(d.kind, d.side)] += 1
            if len(self.differences) < self.max_kept:
                self.differences.append(d)

    def summary(self) -> str:
        counted = ""
        if self.milvus_count is not None or self.postgres_count is not None:
            counted = f" (milvus {self.milvus_count}, postgres {self.postgres_count} rows)"
        what = f"{self.what} {self.filter!r}" if self.filter else self.what
        head = f"{what}: {self.collection!r} vs {self.table!r}, {self.compared} compared{counted}"
        if self.ok:
            return head + ", no differences"
        parts = ", ".join(f"{n} {kind} in {side}" for (kind, side), n in sorted(self.counts.items()))
        return f"{head}, {self.total} differences: {parts}"

    def __str__(self) -> str:
        lines = [self.summary(), *(f"  note: {n}" for n in self.notes), *(f"  {d}" for d in self.differences[:20])]
        if self.total > 20:
            lines.append(f"  ... and {self.total - 20} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "collection": self.collection,
            "table": self.table,
            "filter": self.filter,
            "ok": self.ok,
            "compared": self.compared,
            "milvus_count": self.milvus_count,
            "postgres_count": self.postgres_count,
            "total": self.total,
            "counts": [{"kind": k, "side": s, "count": n} for (k, s), n in sorted(self.counts.items())],
            "differences": [d.to_dict() for d in self.differences],
            "notes": self.notes,
        }


def _sorted(keys: Iterable[Any]) -> list[Any]:
    return sorted(keys, key=lambda k: (isinstance(k, str), k))


def key_differences(
    milvus_keys: Sequence[Any] | np.ndarray,
    postgres_keys: Sequence[Any] | np.ndarray,
    tracker: KeyStateTracker | None = None,
    collection: str = "",
) -> list[Difference]:
    """Keys held by one side only (attributed by ``judge``), and keys a side holds more than once."""
    out: list[Difference] = []
    for side, keys in (("milvus", milvus_keys), ("postgres", postgres_keys)):
        for k, n in _duplicates(keys):
            out.append(Difference(k, None, "extra", side, detail=f"key stored {n} times"))
    only_m, only_p = _one_side_only(milvus_keys, postgres_keys)
    for k in only_p:
        wrong = judge(k, False, True, tracker, collection)
        out.append(Difference(k, None, "missing" if wrong == "milvus" else "extra", wrong))
    for k in only_m:
        wrong = judge(k, True, False, tracker, collection)
        out.append(Difference(k, None, "missing" if wrong == "postgres" else "extra", wrong))
    return out


def _one_side_only(a: Sequence[Any] | np.ndarray, b: Sequence[Any] | np.ndarray) -> tuple[list[Any], list[Any]]:
    """Keys only in ``a``, keys only in ``b``; int64 arrays stay in numpy (no Python set of every key)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return np.setdiff1d(a, b).tolist(), np.setdiff1d(b, a).tolist()
    sa, sb = set(a.tolist() if isinstance(a, np.ndarray) else a), set(b.tolist() if isinstance(b, np.ndarray) else b)
    return _sorted(sa - sb), _sorted(sb - sa)


def _duplicates(keys: Sequence[Any] | np.ndarray) -> list[tuple[Any, int]]:
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
        values, counts = np.unique(keys, return_counts=True)
        return [(int(v), int(c)) for v, c in zip(values[counts > 1], counts[counts > 1], strict=True)]
    return sorted(((k, n) for k, n in Counter(keys).items() if n > 1), key=lambda kn: (isinstance(kn[0], str), kn[0]))


def dynamic_part(row: Mapping[str, Any], schema: CollectionSchema, side: str) -> dict[str, Any]:
    """A row's dynamic fields: Milvus flattens them into the row; the shadow keeps them in ``$meta``."""
    if side == "postgres":
        raw = row.get(META_COLUMN)
        value = json.loads(raw) if isinstance(raw, str) else raw
        return dict(value or {})
    names = {f.name for f in schema.fields} | {META_COLUMN}
    return {k: v for k, v in row.items() if k not in names}


def sample_dims(fields: Iterable[FieldSchema], size: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """``size`` dimensions of each dense numeric vector field wider than that, drawn once (seeded):
    both sides of every row are compared on the same dimensions, and a rerun picks the same ones.
    Binary and half-precision vectors (compared as bytes) are not sampled."""
    if size is None:
        return {}
    if size < 1:
        raise ValueError(f"vector_sample must be at least 1, got {size}")
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for f in fields:
        if spec(f).storage == "vector" and f.dim and f.dim > size:
            out[f.name] = np.sort(rng.choice(f.dim, size, replace=False))
    return out


def _agree(f: FieldSchema, a: list[Any], b: list[Any], tolerance: float, dims: np.ndarray | None = None) -> np.ndarray:
    """Per-row agreement of one field; a dense-vector batch is one numpy comparison (on ``dims`` only, if given)."""
    storage = spec(f).storage
    if storage in ("vector", "bytes") and all(v is not None for v in a) and all(v is not None for v in b):
        try:
            x, y = value_matrix(a, f), value_matrix(b, f)
            same_shape = x.shape == y.shape
            if same_shape and dims is not None and x.ndim == 2 and x.shape[1] > int(dims.max(initial=0)):
                x, y = x[:, dims], y[:, dims]
        except ValueError:  # ragged rows: np.stack refuses; compare row by row below
            same_shape = False
        if same_shape:
            if storage == "bytes":
                return np.all(x == y, axis=1)
            return np.abs(x.astype(np.float64) - y).max(axis=1, initial=0) <= tolerance
    return np.array([same_value(f, u, v, tolerance) for u, v in zip(a, b, strict=True)], dtype=bool)


def _where_vectors_differ(f: FieldSchema, a: Any, b: Any, dims: np.ndarray | None = None) -> str:
    """For a dense vector, where it differs: the short renderings show only its first values."""
    if spec(f).storage not in ("vector", "bytes") or a is None or b is None:
        return ""
    try:
        x, y = value_matrix([a], f)[0], value_matrix([b], f)[0]
    except ValueError:
        return ""
    if x.shape != y.shape:
        return f"{len(x)} values in milvus, {len(y)} in postgres"
    gap = np.abs(x.astype(np.float64) - y)
    if dims is not None and len(gap) > int(dims.max(initial=0)):
        sampled = gap[dims]
        at = int(dims[int(np.argmax(sampled))])
        return f"largest difference {gap[at]:.6g} at index {at} (of {len(dims)} sampled dimensions)"
    at = int(np.argmax(gap))
    return f"largest difference {gap[at]:.6g} at index {at}"


def row_differences(
    schema: CollectionSchema,
    fields: list[FieldSchema],
    milvus: Mapping[Any, Mapping[str, Any]],
    postgres: Mapping[Any, Mapping[str, Any]],
    tolerance: float = 1e-6,
    dynamic: bool = False,
    samples: Mapping[str, np.ndarray] | None = None,
) -> list[Difference]:
    """Field differences of the keys both sides hold (``dynamic``: also the ``$meta`` fields).

    ``samples``: per vector field, the dimensions to compare (``sample_dims``); others compare whole.
    """
    keys = _sorted(k for k in milvus if k in postgres)
    out: list[Difference] = []
    for f in fields:
        dims = (samples or {}).get(f.name)
        a = [milvus[k].get(f.name) for k in keys]
        b = [postgres[k].get(f.name) for k in keys]
        for i in np.flatnonzero(~_agree(f, a, b, tolerance, dims)):
            detail = _where_vectors_differ(f, a[i], b[i], dims)
            out.append(Difference(keys[i], f.name, "changed", "postgres", short(a[i]), short(b[i]), detail))
    if dynamic:
        for k in keys:
            a_dyn, b_dyn = dynamic_part(milvus[k], schema, "milvus"), dynamic_part(postgres[k], schema, "postgres")
            if json.loads(json.dumps(a_dyn, default=str)) != b_dyn:
                out.append(Difference(k, META_COLUMN, "changed", "postgres", short(a_dyn), short(b_dyn)))
    return out


# -- search ---------------------------------------------------------------------------------------------
class TopK:
    """Exact top-k per query over vectors seen a batch at a time: memory is the queries plus one batch."""

    def __init__(self, queries: np.ndarray, k: int, metric: str) -> None:
        self.queries, self.k, self.metric = np.asarray(queries, np.float32), k, metric
        self.best_s = np.full((len(queries), k), -np.inf, dtype=np.float64)
        self.best_id = np.full((len(queries), k), None, dtype=object)

    def add(self, ids: Sequence[Any], vectors: np.ndarray) -> None:
        if not len(ids):
            return
        s = np.concatenate([self.best_s, scores(self.queries, np.asarray(vectors, np.float32), self.metric)], axis=1)
        keys = np.broadcast_to(np.asarray(ids, dtype=object), (len(self.queries), len(ids)))
        i = np.concatenate([self.best_id, keys], axis=1)
        top = np.argsort(-s, axis=1, kind="stable")[:, : self.k]
        self.best_s, self.best_id = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)

    def result(self) -> list[list[Any]]:
        """Each query's exact neighbours, best first (fewer than k when the table has fewer rows)."""
        rows = zip(self.best_id, self.best_s, strict=True)
        return [[k for k, s in zip(ids, sc, strict=True) if np.isfinite(s)] for ids, sc in rows]


def recall(got: Sequence[Any], exact: Sequence[Any]) -> float:
    """Share of the exact neighbours returned; 1.0 when there is nothing to find."""
    return len(set(got) & set(exact)) / len(exact) if exact else 1.0


@dataclass(slots=True)
class SearchComparison:
    """Milvus search vs exact search over the shadow's vectors: recall@k per query and their mean."""

    collection: str
    field: str  # named like dataclasses.field: the defaults below use dataclasses.field by its module
    metric: str
    limit: int
    recalls: list[float] = dataclasses.field(default_factory=list)
    min_recall: float = 1.0
    differences: list[Difference] = dataclasses.field(default_factory=list)  # exact neighbours Milvus did not return

    @property
    def compared(self) -> int:
        return len(self.recalls)

    @property
    def mean_recall(self) -> float:
        return float(np.mean(self.recalls)) if self.recalls else 1.0

    @property
    def ok(self) -> bool:
        return self.mean_recall >= self.min_recall

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"below {self.min_recall}"
        return (
            f"search {self.collection!r} field {self.field!r} ({self.metric}): recall@{self.limit} "
            f"{self.mean_recall:.4f} over {self.compared} queries, {verdict}"
        )

    def __str__(self) -> str:
        return "\n".join([self.summary(), *(f"  {d}" for d in self.differences[:20])])

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": "search",
            "collection": self.collection,
            "field": self.field,
            "metric": self.metric,
            "limit": self.limit,
            "ok": self.ok,
            "mean_recall": self.mean_recall,
            "recalls": self.recalls,
            "differences": [d.to_dict() for d in self.differences],
        }

    def add_query(self, query: int, got: Sequence[Any], exact: Sequence[Any]) -> None:
        self.recalls.append(recall(got, exact))
        returned = set(got)
        for k in exact:
            if k not in returned and len(self.differences) < 1000:
                detail = f"exact neighbour of query {query} not returned"
                self.differences.append(Difference(k, self.field, "missing", "milvus", detail=detail))
