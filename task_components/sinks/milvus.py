"""``sink.milvus``: upsert the records that carry a vector into a Milvus collection, by business key.

Upsert by primary key is idempotent, so a redelivered batch changes nothing: the same exactly-once
effect as the MongoDB sink, and after a SIGKILL and a restart (the uncommitted batches replayed in
order) every business key is in Milvus once, with its latest value. The collection is usually made by
``milvus.create_collection``; with ``dimension`` set, a missing collection is created here (string
primary key, float vector, every other field dynamic), which suits a stream whose schema is its records.
pymilvus is synchronous: each call runs in a worker thread.

Latest value, once: Milvus (2.3 seen) keeps *every* row of one upsert call that shares a primary key
(count(*) counts both) and shows the first, so the rows of a batch sharing a key are collapsed to the
last one first. Batches are written up to ``max_in_flight`` at once, so one writer's upserts go through
one gate in arrival order, and a record older than one already written for its key (same partition, a
lower offset: a batch retried after an outage while a later one got through) is not written again: it
would bring an old value back. Those newest positions are held for the last ``order_window`` keys.

A record without the vector field (or with a null one) is skipped by default (``missing_vector: skip``:
a feed can mix Milvus records and others); with ``missing_vector: dead_letter`` it is refused. A row
Milvus cannot take is that record's failure (dead-lettered through ``RecordsRefused``, rule ``row``, the
reason naming the field, the dimension expected and what came): a key that is not a string or number or
longer than the collection's VarChar (or ``max_key_bytes``), a vector that is not a list of numbers of
the collection's dimension (both read from the collection at open), or a batch Milvus refuses as data:
its rows are then upserted one at a time and the refused ones are dead-lettered (rule ``refused``; an
older row of the same key in the batch is then tried in its place). Only a refusal *of the data* is the
rows' (``data_refusal``: pymilvus' own checks of a row, ``ParamError``, ``DataNotMatchException``... and a
server answer of invalid parameter); anything else (pymilvus 3 raises a plain ``MilvusException`` code 2
or UNAVAILABLE when the server is gone, a timeout) is an outage: the batch is retried whole, nothing is
dead-lettered. Every call has a deadline (``call_timeout``), so a row-by-row pass never outlasts one
call's timeout on a server that stopped answering (the first row that times out ends the pass as an
outage).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from config.settings import Settings
from task_components.clients import MilvusTarget, milvus_target
from task_components.contracts import BatchSink, StreamRecord
from task_components.sinks.mongo import key_problem
from task_components.streaming.resilience import RecordsRefused, Refusal
from task_components.streaming.steps import StreamSink

__all__ = ["MilvusSink", "MilvusSinkComponent", "MilvusSinkParams"]


class MilvusSinkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    key: str = Field(description="the primary key field (the business key)")
    vector_field: str = "vector"
    dimension: int | None = Field(None, ge=1, description="create a missing collection with this vector dimension")
    missing_vector: Literal["skip", "dead_letter"] = Field(
        "skip", description="a record without the vector field (or a null one): skipped (a mixed feed) or dead-lettered"
    )
    fields: list[str] | None = Field(None, description="record fields to write besides key and vector (default: all)")
    uri: str | None = Field(None, description="Milvus server URI or Milvus Lite file; default: MILVUS__URI")
    max_key_bytes: int = Field(512, ge=1, description="a longer key is refused (the created collection's VarChar)")
    call_timeout: float = Field(30.0, gt=0, description="seconds one upsert may take before it counts as an outage")
    order_window: int = Field(100_000, ge=1, description="keys whose newest written position is kept (no older value rewritten)")


DATA_CODES = frozenset({5, 1100})  # the server's ILLEGAL_ARGUMENT (2.2) and ParameterInvalid (2.3+) answers
Position = tuple[str, int, int]  # topic, partition, offset
Group = list[tuple[StreamRecord, dict[str, Any]]]  # one key's rows of a batch, in arrival order


def data_refusal(exc: BaseException) -> bool:
    """Whether Milvus refused the rows themselves (retrying them cannot help), not failed to answer."""
    from pymilvus import exceptions as e

    rows = (
        e.ParamError,
        e.DataNotMatchException,
        e.DataTypeNotMatchException,
        e.DataTypeNotSupportException,
        e.PrimaryKeyException,
        e.FieldsTypeException,
        e.FieldTypeException,
        e.AutoIDException,
        e.PartitionKeyException,
    )
    if isinstance(exc, rows):
        return True
    return type(exc) is e.MilvusException and getattr(exc, "code", None) in DATA_CODES


def _shape(client: Any, p: MilvusSinkParams) -> tuple[int | None, int]:
    """(vector dimension, largest key in bytes) from the collection's schema; unknowns left to Milvus."""
    dim, key_bytes = None, p.max_key_bytes
    for f in client.describe_collection(p.collection).get("fields", []):
        params = f.get("params") or {}
        if f.get("name") == p.vector_field and "dim" in params:
            dim = int(params["dim"])
        if f.get("name") == p.key and "max_length" in params:
            key_bytes = min(key_bytes, int(params["max_length"]))
    return dim, key_bytes


def _finish_setup(client: Any, p: MilvusSinkParams) -> None:
    """A collection this sink creates may have been left without its index or not loaded (a SIGKILL between
    pymilvus' create, index and load calls): finish what ``create_collection(dimension=...)`` does."""
    from pymilvus.client.types import LoadState

    if not client.list_indexes(p.collection, field_name=p.vector_field):
        index = client.prepare_index_params()
        index.add_index(p.vector_field, index_type="AUTOINDEX", metric_type="COSINE")
        client.create_index(p.collection, index)
    if client.get_load_state(p.collection).get("state") == LoadState.NotLoad:
        client.load_collection(p.collection)


def _position(r: StreamRecord) -> Position:
    return r.topic, r.partition, r.offset


class MilvusWriter:
    __slots__ = ("client", "dim", "gate", "key_bytes", "newest", "params")

    def __init__(self, client: Any, params: MilvusSinkParams, dim: int | None = None, key_bytes: int = 512) -> None:
        self.client, self.params, self.dim, self.key_bytes = client, params, dim, key_bytes
        self.gate = anyio.Lock()  # FIFO: batches' upserts in arrival order
        self.newest: OrderedDict[Hashable, Position] = OrderedDict()

    def row(self, r: StreamRecord) -> dict[str, Any] | None:
        """The record's row, None when it carries no vector and those are skipped; ValueError names what
        Milvus could not take (the field, and the dimension expected against what came)."""
        p = self.params
        value = r.value or {}
        vector = value.get(p.vector_field)
        if vector is None and p.missing_vector == "skip":
            return None
        problem = key_problem(p.key, value.get(p.key), self.key_bytes)
        if problem:
            raise ValueError(problem)
        wanted = f"the collection's dimension is {self.dim}" if self.dim is not None else "a list of numbers is expected"
        if vector is None:
            raise ValueError(f"{p.vector_field} is {'null' if p.vector_field in value else 'missing'}, {wanted}")
        if not isinstance(vector, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector):
            raise ValueError(f"{p.vector_field} is not a list of numbers")
        if self.dim is not None and len(vector) != self.dim:
            raise ValueError(f"{p.vector_field} has {len(vector)} numbers, {wanted}")
        keep = value if p.fields is None else {k: value.get(k) for k in (*p.fields, p.key, p.vector_field)}
        return {k: v for k, v in keep.items() if v is not None}  # Milvus takes no null dynamic values

    async def write(self, records: Sequence[StreamRecord]) -> int:
        refusals: list[Refusal] = []
        groups: dict[Hashable, Group] = {}
        for r in records:
            try:
                row = self.row(r)
            except ValueError as exc:
                refusals.append(Refusal(r, "row", str(exc)))
                continue
            if row is not None:
                key = row[self.params.key]
                groups.setdefault((type(key).__name__, key), []).append((r, row))  # True and 1 are two keys
        async with self.gate:
            written = await self._upsert(groups, refusals)
        if refusals:
            raise RecordsRefused(written, refusals)
        return written

    def _stale(self, key: Hashable, r: StreamRecord) -> bool:
        """A later record of the same partition was already written for ``key``: ``r`` would undo it."""
        seen = self.newest.get(key)
        return seen is not None and seen[:2] == (r.topic, r.partition) and seen[2] > r.offset

    def _remember(self, key: Hashable, r: StreamRecord) -> None:
        self.newest[key] = _position(r)
        self.newest.move_to_end(key)
        if len(self.newest) > self.params.order_window:
            self.newest.popitem(last=False)

    async def _call(self, rows: list[dict[str, Any]]) -> None:
        collection, timeout = self.params.collection, self.params.call_timeout
        await anyio.to_thread.run_sync(lambda: self.client.upsert(collection, rows, timeout=timeout))

    async def _upsert(self, groups: dict[Hashable, Group], refusals: list[Refusal]) -> int:
        """Rows written or superseded (by a later row of their key, here or already in Milvus)."""
        live = {k: g for k, g in groups.items() if not self._stale(k, g[-1][0])}
        done = sum(len(g) for k, g in groups.items() if k not in live)
        if not live:
            return done
        try:
            await self._call([g[-1][1] for g in live.values()])
        except Exception as exc:
            if not data_refusal(exc):
                raise  # the server did not answer: an outage, the whole batch is retried
        else:
            for k, g in live.items():
                self._remember(k, g[-1][0])
            return done + sum(len(g) for g in live.values())
        for k, g in live.items():  # one refused row fails the whole call: find it (an outage on the way ends the pass)
            done += await self._newest_taken(k, g, refusals)
        return done

    async def _newest_taken(self, key: Hashable, group: Group, refusals: list[Refusal]) -> int:
        """Upsert the key's newest row Milvus takes (those after it refused, those before it superseded)."""
        for i in range(len(group) - 1, -1, -1):
            r, row = group[i]
            try:
                await self._call([row])
            except Exception as exc:
                if not data_refusal(exc):
                    raise
                refusals.append(Refusal(r, "refused", f"Milvus: {type(exc).__name__}: {str(exc)[:300]}"))
                continue
            self._remember(key, r)
            return i + 1
        return 0


@dataclass(frozen=True, slots=True)
class MilvusSink(BatchSink):
    params: MilvusSinkParams
    label = "milvus"

    def target(self, settings: Settings) -> MilvusTarget:
        """``clients.milvus_target``'s rule: MILVUS__TOKEN goes to MILVUS__URI only, never to another `uri`."""
        if not (self.params.uri or settings.milvus.uri):
            raise ValueError("MILVUS__URI is not set and sink.milvus has no `uri` (a server URI or a Lite .db file)")
        return milvus_target(settings, None, self.params.uri)

    @asynccontextmanager
    async def open(self, settings: Any) -> AsyncIterator[MilvusWriter]:
        p = self.params
        client = await anyio.to_thread.run_sync(self.target(settings).client)
        try:
            exists = await anyio.to_thread.run_sync(client.has_collection, p.collection)
            if not exists and p.dimension is None:
                raise LookupError(f"Milvus collection {p.collection!r} does not exist (create it, or set `dimension`)")
            if not exists:
                await anyio.to_thread.run_sync(
                    lambda: client.create_collection(
                        p.collection,
                        dimension=p.dimension,
                        primary_field_name=p.key,
                        id_type="string",
                        max_length=512,
                        vector_field_name=p.vector_field,
                        enable_dynamic_field=True,
                        consistency_level="Strong",
                    )
                )
            elif p.dimension is not None:
                await anyio.to_thread.run_sync(_finish_setup, client, p)
            dim, key_bytes = await anyio.to_thread.run_sync(_shape, client, p)
            yield MilvusWriter(client, p, dim, key_bytes)
        finally:
            await anyio.to_thread.run_sync(client.close)


class MilvusSinkComponent(StreamSink[MilvusSinkParams]):
    __slots__ = ()
    component = "sink.milvus"
    summary = "streaming sink: upsert records that carry a vector into Milvus (idempotent by primary key)"
    Params = MilvusSinkParams

    def sink(self) -> MilvusSink:
        return MilvusSink(self.params)

    def settings_problem(self, settings: Any) -> str | None:
        if self.params.uri or settings.milvus.uri:
            return None
        return "MILVUS__URI is not set and sink.milvus has no `uri` (a server URI or a Lite .db file)"
