"""The field-type table itself: the type names (``FieldType``) and one ``TypeSpec`` record per type.

Why here, at the bottom of the schema package: every per-type fact (Arrow/numpy layout, generator,
PostgreSQL type and binary COPY encoder, canonical bytes, value range, default rule, Milvus type and
fixed index, help text) is read from this table by the consumers (generation, shadow, verification,
models, the Milvus mapping, ``schemas help``), so the table must import none of them. The functions a
record holds are written against the ``Field`` protocol (what they read of a field), not against
``FieldSchema``, which lives above in ``models`` and validates fields by asking this table.

``register_type`` adds (or replaces) a record and ``unregister_type`` undoes it (the replaced record
comes back; a plugin's type name goes with its record): there is no other table to teach.
"""

from __future__ import annotations

import enum
import io
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import pyarrow as pa

__all__ = [
    "TYPES",
    "BinaryEncoder",
    "Canonical",
    "Convert",
    "DefaultCheck",
    "Distinct",
    "Equal",
    "Family",
    "Field",
    "FieldType",
    "Generate",
    "Storage",
    "TypeSpec",
    "register_type",
    "spec",
    "unregister_type",
]

# A type's family: what schema rules apply (range, default, dim, max_length) and how it is grouped.
Family = Literal["bool", "integer", "float", "text", "json", "array", "vector", "sparse", "other"]
# How a type's values are compared and carried: plain scalars; JSON text (JSON, sparse vectors);
# dense numeric vectors (compared with a tolerance); dense vectors kept as exact bytes.
Storage = Literal["scalar", "json", "vector", "bytes"]


class FieldType(enum.StrEnum):
    BOOL = "Bool"
    INT8 = "Int8"
    INT16 = "Int16"
    INT32 = "Int32"
    INT64 = "Int64"
    FLOAT = "Float"
    DOUBLE = "Double"
    VARCHAR = "VarChar"
    JSON = "JSON"
    ARRAY = "Array"
    FLOAT_VECTOR = "FloatVector"
    BINARY_VECTOR = "BinaryVector"
    FLOAT16_VECTOR = "Float16Vector"
    BFLOAT16_VECTOR = "BFloat16Vector"
    SPARSE_FLOAT_VECTOR = "SparseFloatVector"
    INT8_VECTOR = "Int8Vector"

    @classmethod
    def parse(cls, raw: Any) -> FieldType:
        """Loose names (``FloatVector``, ``FLOAT_VECTOR``, ``float_vector``): users copy them from everywhere."""
        if isinstance(raw, FieldType):
            return raw
        key = re.sub(r"[^a-z0-9]", "", str(raw).lower())
        if key == "string":
            return cls.VARCHAR
        for member in cls:
            if re.sub(r"[^a-z0-9]", "", member.value.lower()) == key:
                return member
        names = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown type {raw!r}; use one of: {names}")

    @classmethod
    def extend(cls, value: str) -> FieldType:
        """A new member (for a plugin's type in the field-type table); the same object on every call."""
        if value in cls._value2member_map_:
            return cls(value)
        member = str.__new__(cls, value)
        member._name_ = re.sub(r"(?<!^)(?=[A-Z])", "_", value).upper()
        member._value_ = value
        cls._value2member_map_[value] = member
        cls._member_map_[member._name_] = member
        cls._member_names_.append(member._name_)
        return member

    def _family(self) -> Family:
        s = TYPES.get(self)
        return s.family if s is not None else "other"

    @property
    def is_vector(self) -> bool:
        return self._family() in ("vector", "sparse")

    @property
    def is_integer(self) -> bool:
        return self._family() == "integer"

    @property
    def is_float(self) -> bool:
        return self._family() == "float"

    @property
    def is_numeric(self) -> bool:
        return self._family() in ("integer", "float")


_BUILTIN_NAMES = frozenset(FieldType.__members__)


class Field(Protocol):
    """What the table's functions read of a field; ``models.FieldSchema`` is one."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> FieldType: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def max_length(self) -> int | None: ...
    @property
    def min_length(self) -> int | None: ...
    @property
    def pattern(self) -> str | None: ...
    @property
    def dim(self) -> int | None: ...
    @property
    def nnz(self) -> int | None: ...
    @property
    def normalize(self) -> bool: ...
    @property
    def distribution(self) -> str: ...
    @property
    def element_type(self) -> FieldType | None: ...
    @property
    def max_capacity(self) -> int | None: ...


# Arrow column -> per-row values for a store (pymilvus insert, asyncpg record COPY)
Convert = Callable[[pa.Array, Field], list[Any]]
# (field, source value, a store's value, vector tolerance) -> equal?
Equal = Callable[[Field, Any, Any, float], bool]


class Distinct(NamedTuple):
    """A field with a cardinality setting: each row's value id (``0 <= id < count``); equal ids, equal values."""

    ids: np.ndarray
    cardinality: int


# (field, its random stream, rows, the rows' value ids or None) -> the column; vectorized, no per-row Python
Generate = Callable[[Field, np.random.Generator, int, Distinct | None], pa.Array]
# Arrow column -> binary COPY field bytes (``pgbinary.Part``s); the field is None for internal columns
BinaryEncoder = Callable[[pa.Array, Any], list[Any]]
# (field, a column's non-null values, JSON given as text?) -> each value's canonical bytes, tag included
Canonical = Callable[[Field, list[Any], bool], list[bytes]]
# (field, its default_value) -> None, or ValueError saying why Milvus would refuse it
DefaultCheck = Callable[[Field, Any], None]


def same_width(dim: int) -> int:
    return dim


def eight_bytes(f: Field) -> int:
    return 8


def pylist(col: pa.Array, f: Field) -> list[Any]:
    return col.to_pylist()


def eq_plain(f: Field, a: Any, b: Any, tol: float) -> bool:
    return bool(a == b)


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """One row of the table: everything any module needs to know about one field type.

    ``width`` maps a field's ``dim`` to list values per row (dense vectors). A function left None means
    the feature is not available for the type, and its consumer says so by name (generation, content
    matching) or takes its generic path (binary COPY falls back to the record path).
    """

    type: FieldType
    arrow: pa.DataType  # column type in Arrow batches and Parquet (ARRAY: from its element type)
    pg: str  # shadow-table column type (ARRAY: the element's, plus [])
    milvus: str  # pymilvus DataType member name: pymilvus is imported only where a client is made
    storage: Storage = "scalar"
    numpy: Any = None  # element dtype of the dense view (vectors) or of the Arrow values (scalars)
    view: Any = None  # dtype pymilvus wants rows viewed as, when not the Arrow element dtype
    width: Callable[[int], int] = same_width
    to_milvus: Convert = pylist
    to_copy: Convert = pylist
    row_bytes: Callable[[Field], int] = eight_bytes
    equal: Equal = eq_plain
    family: Family = "other"
    value_range: tuple[float, float] | None = None  # what the type can hold (min/max/default checks)
    generate: Generate | None = None
    copy: BinaryEncoder | None = None  # binary COPY encoder for the ``pg`` column type
    canonical: Canonical | None = None  # content-hash bytes (AUTO_ID matching), same from every store
    default: DefaultCheck | None = None  # None: Milvus refuses a default_value on this type
    index: Mapping[str, Any] | None = None  # the only sensible index, whatever the target
    key: bool = False  # may be a primary or partition key
    array_element: bool = False  # may be an Array's element_type
    dim_multiple: int = 1  # dense vectors: dim must be a multiple of this
    example: str = ""  # ``schemas help``: a field of this type

    @property
    def is_dense(self) -> bool:
        return self.storage in ("vector", "bytes")

    @property
    def has_values(self) -> bool:
        """Scalar values a field can enumerate or repeat (enum_values, cardinality)."""
        return self.family not in ("json", "array", "vector", "sparse")


TYPES: dict[FieldType, TypeSpec] = {}
_BUILTIN_ROWS: dict[FieldType, TypeSpec] = {}  # Milvus's own rows as ``builtin`` made them (``seal_builtin_rows``)
_REPLACED: dict[FieldType, list[TypeSpec]] = {}  # the rows a register_type replaced, latest last


def register_type(s: TypeSpec) -> TypeSpec:
    """Add (or replace) a row of the table: every store, generator and check learns the type from it.

    A replaced row is kept: ``unregister_type`` puts it back, so overriding a builtin type for a while
    (a test, a plugin that is unloaded) leaves the table as it found it.
    """
    previous = TYPES.get(s.type)
    if previous is not None:
        _REPLACED.setdefault(s.type, []).append(previous)
    TYPES[s.type] = s
    return s


def unregister_type(t: FieldType) -> None:
    """Undo the latest ``register_type`` of ``t``: the row it replaced comes back; with none, the row goes
    (and a plugin's type name with it, so it no longer parses; builtin names stay)."""
    stack = _REPLACED.get(t)
    if stack:
        TYPES[t] = stack.pop()  # an existing key keeps its place: the table's order is the help's
        if not stack:
            del _REPLACED[t]
        return
    TYPES.pop(t, None)
    if t.name in _BUILTIN_NAMES:
        return
    FieldType._value2member_map_.pop(t.value, None)
    if FieldType._member_map_.pop(t.name, None) is not None:
        FieldType._member_names_.remove(t.name)


def seal_builtin_rows() -> None:
    """Remember the builtin rows (``builtin`` calls this once it has registered them): a row that differs
    from its builtin one, like a plugin's, must travel to worker processes (``pack_plugins``)."""
    _BUILTIN_ROWS.update((t, s) for t, s in TYPES.items() if t.name in _BUILTIN_NAMES)
    for t, s in _BUILTIN_ROWS.items():
        for name in s.__dataclass_fields__:
            part = getattr(s, name)
            if callable(part) and not isinstance(part, type):
                _BUILTIN_PARTS.setdefault(id(part), (t.value, name))


# id of a builtin row's function -> (type, field): a row made with ``dataclasses.replace`` from a builtin
# one keeps its closures (``pgbinary.scalar(">i8")``), which pickle cannot carry; every process has them
_BUILTIN_PARTS: dict[int, tuple[str, str]] = {}


class _RowPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> tuple[str, str] | None:
        return _BUILTIN_PARTS.get(id(obj)) if callable(obj) and not isinstance(obj, type) else None


class _RowUnpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        t, name = pid
        return getattr(_BUILTIN_ROWS[FieldType(t)], name)


def spec(f: Field | FieldType) -> TypeSpec:
    t = f if isinstance(f, FieldType) else f.type
    try:
        return TYPES[t]
    except KeyError:
        raise KeyError(f"field type {t} has no entry in the field-type table (register_type)") from None


def _differs(a: TypeSpec | None, b: TypeSpec | None) -> bool:
    return a is not b and a != b  # the same object: no field-by-field comparison (asked once per job)


def plugin_types() -> list[TypeSpec]:
    """The rows a fresh process would not have: a plugin's (or a test's) type, and a builtin type's row
    replaced by ``register_type`` (its generator would otherwise differ between the parent and a worker)."""
    return [s for t, s in TYPES.items() if _differs(_BUILTIN_ROWS.get(t), s)]


def pack_plugins() -> tuple[tuple[str, ...], bytes]:
    """The rows a worker needs (``plugin_types``) as (their type names, pickled rows), possibly none.

    Why: worker processes start from a forkserver that imported the table before any plugin registered;
    a job that carries this installs the rows there (``install_plugins``). It is sent even when empty: a
    worker kept from an earlier job may still hold that job's override of a builtin row. The rows'
    functions travel by reference (module and name, or the builtin row they come from), so a new function
    must be a module-level one, not a lambda or a closure.
    """
    rows = plugin_types()
    try:
        buffer = io.BytesIO()
        _RowPickler(buffer).dump(rows)
        return tuple(s.type.value for s in rows), buffer.getvalue()
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        names = ", ".join(s.type.value for s in rows)
        raise TypeError(
            f"field type(s) {names} cannot be sent to worker processes ({exc}); define the TypeSpec's functions "
            "at module level (not lambdas or closures), or generate with workers: 0"
        ) from exc


def install_plugins(names: tuple[str, ...], rows: bytes) -> None:
    """Make this process's table the sender's: rows packed by ``pack_plugins`` in, and a builtin row an
    earlier job replaced back to the builtin one (the names first: unpickling a row needs its type name)."""
    for name in names:
        FieldType.extend(name)
    shipped = {s.type: s for s in _RowUnpickler(io.BytesIO(rows)).load()}  # our own job payload, from the parent
    for t, builtin in _BUILTIN_ROWS.items():
        if t not in shipped and _differs(TYPES.get(t), builtin):
            TYPES[t] = builtin
            _REPLACED.pop(t, None)
    for t, s in shipped.items():
        if _differs(TYPES.get(t), s):
            register_type(s)
