"""``MilvusPGClient``: pymilvus-pg's client, on our drop-in shadowing client and comparison helpers.

Why: pymilvus-pg's users run checkers written against its class; they switch by changing one import
(``from task_components.shadow.pgclient import MilvusPGClient``) and keep their constructor keywords and
their synchronous calls with the same result shapes. Writes are ``ShadowMilvusClient``'s (one
PostgreSQL transaction around each Milvus write, the LMDB key tracker as the tiebreaker); the checker
methods run our async comparisons (``compare``, ``sides``) on the client's private event loop.

Honoured keywords: ``uri``, ``token``, ``user``, ``password``, ``db_name``, ``timeout`` (MilvusClient's),
``pg_conn_str``, ``ignore_vector``, ``sample_vector``, ``vector_sample_size``, ``vector_precision_decimals``
(vectors compared to that many decimals), ``enable_lmdb``, ``lmdb_path``, ``lmdb_map_size``. Refused by
name (TypeError), never swallowed: ``vector_comparison_significant_digits`` (DeepDiff's rounding; use
``vector_precision_decimals``) and ``use_high_performance_comparator=False`` (DeepDiff is not offered:
our comparator is always the fast one). Differences from pymilvus-pg: an unset ``lmdb_path`` is a tracker
per shadow database under the user's cache directory (not ``./.pymilvus_pg_lmdb``); the shadow table is
``shadow_<collection>``; ``count`` raises on a missing collection or table instead of reporting 0;
``query`` takes no Milvus-only keywords (limit, ids...): Milvus' own query is ``MilvusClient.query(client, ...)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pandas as pd  # type: ignore[import-untyped]  # pymilvus depends on it; no stubs installed
from pymilvus import MilvusClient

from task_components.shadow import compare
from task_components.shadow.diff import Comparison, Difference
from task_components.shadow.dropin import ShadowMilvusClient
from task_components.shadow.pgclient_compare import CompareOptions, entity_compare, log_comparison, primary_keys, three_way
from task_components.shadow.pgclient_compare import count as count_both
from task_components.shadow.pgclient_data import export_frame, milvus_filters, query_frames, sample_frame

__all__ = ["REFUSED", "MilvusPGClient", "QueryDifferences"]

log = logging.getLogger("task_components.shadow.pgclient")

REFUSED = {
    "vector_comparison_significant_digits": "it sets DeepDiff's rounding, which this client does not use: "
    "pass vector_precision_decimals=N to compare vectors to N decimals",
    "use_high_performance_comparator": "DeepDiff is not offered (use_high_performance_comparator=False); "
    "the comparison is always the fast one, so leave the keyword out",
}


class QueryDifferences(list[Difference]):
    """``query_result_compare``'s result: empty (falsy) when both sides agree, as pymilvus-pg's DeepDiff is;
    each item names a key, a field and the side judged wrong; ``comparison`` has the counts and notes."""

    comparison: Comparison


class _MilvusView:
    """MilvusClient's own methods on this client, for the comparison helpers: this class's ``query``
    returns pymilvus-pg's pair of DataFrames, the helpers need Milvus' rows."""

    def __init__(self, client: MilvusClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(MilvusClient, name, None)
        if callable(attr):
            return attr.__get__(self._client, MilvusClient)
        return getattr(self._client, name)


def _refuse(options: dict[str, Any]) -> None:
    bad = [k for k in options if k in REFUSED and not (k == "use_high_performance_comparator" and options[k] is True)]
    if bad:
        raise TypeError("MilvusPGClient does not honour " + "; ".join(f"{k}= ({REFUSED[k]})" for k in bad))


def _positive_int(name: str, value: Any, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
    return value


class MilvusPGClient(ShadowMilvusClient):
    """pymilvus-pg's ``MilvusPGClient`` (constructor keywords, sync checker methods, result shapes)."""

    def __init__(
        self,
        uri: str = "http://localhost:19530",
        user: str = "",
        password: str = "",
        db_name: str = "",
        token: str = "",
        timeout: float | None = None,
        *,
        pg_conn_str: str | None = None,
        ignore_vector: bool = False,
        sample_vector: bool = False,
        vector_sample_size: int = 8,
        vector_precision_decimals: int | None = None,
        enable_lmdb: bool = True,
        lmdb_path: str | None = None,
        lmdb_map_size: int = 10 * 1024**3,
        **kwargs: Any,
    ) -> None:
        _refuse(kwargs)
        kwargs.pop("use_high_performance_comparator", None)  # True: what this client always does
        for ours in ("pg_dsn", "tracker_path", "tracker_map_size"):
            if ours in kwargs:
                theirs = {"pg_dsn": "pg_conn_str", "tracker_path": "lmdb_path", "tracker_map_size": "lmdb_map_size"}[ours]
                raise TypeError(f"MilvusPGClient takes pymilvus-pg's {theirs}=, not {ours}= (ShadowMilvusClient's name for it)")
        if not isinstance(sample_vector, bool) or not isinstance(enable_lmdb, bool):
            raise TypeError(f"sample_vector and enable_lmdb must be True or False, got {sample_vector!r}, {enable_lmdb!r}")
        self.pg_conn_str = pg_conn_str or os.environ.get("PG_CONN") or None
        self.sample_vector = sample_vector
        self.vector_sample_size = _positive_int("vector_sample_size", vector_sample_size)
        self.vector_precision_decimals = vector_precision_decimals
        if vector_precision_decimals is not None:  # 0 is valid: vectors compared to whole numbers
            _positive_int("vector_precision_decimals", vector_precision_decimals, least=0)
        self.enable_lmdb, self.lmdb_path, self.lmdb_map_size = enable_lmdb, lmdb_path, lmdb_map_size
        self.last_comparison: Comparison | None = None
        super().__init__(
            uri=uri,
            user=user,
            password=password,
            db_name=db_name,
            token=token,
            timeout=timeout,
            pg_dsn=self.pg_conn_str,
            tracker_path=(lmdb_path or None) if enable_lmdb else "",
            ignore_vector=ignore_vector,
            tracker_map_size=lmdb_map_size,
            **kwargs,
        )
        self.uri, self.token = uri, token
        self._view = _MilvusView(self)

    # -- plumbing ----------------------------------------------------------------------------------
    def _run(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """``fn(milvus, pool, *args)`` on the client's private loop, with the shadow's pool."""

        async def go() -> Any:
            return await fn(self._view, await self.shadow.pool(), *args, **kwargs)

        return self._portal.call(go)

    def _options(self) -> CompareOptions:
        decimals = self.vector_precision_decimals
        tolerance = 0.5 * 10.0**-decimals if decimals is not None else 1e-6
        return CompareOptions(tolerance, self.vector_sample_size if self.sample_vector else None, self.tracker)

    @staticmethod
    def _filter(filter: str, filter_expression: str | None) -> str:
        if filter_expression is not None and filter and filter != filter_expression:
            raise ValueError(f"pass filter= or filter_expression=, not both (got {filter!r} and {filter_expression!r})")
        return filter_expression if filter_expression is not None else filter

    def __enter__(self) -> MilvusPGClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pymilvus-pg's methods -----------------------------------------------------------------------
    def create_collection(self, collection_name: str, schema: Any = None, **kwargs: Any) -> Any:
        """pymilvus-pg's ``create_collection(name, schema)``: the schema second (MilvusClient's ``dimension``
        there, an int, still creates a quick-setup collection), Strong consistency unless told otherwise."""
        kwargs.setdefault("consistency_level", "Strong")
        if isinstance(schema, int) and not isinstance(schema, bool):
            return super().create_collection(collection_name, schema, **kwargs)
        return super().create_collection(collection_name, schema=schema, **kwargs)

    def count(self, collection_name: str) -> dict[str, int]:
        """``{"milvus_count": ..., "pg_count": ...}``: Milvus' Strong count(*) and the shadow table's."""
        result: dict[str, int] = self._run(count_both, collection_name)
        return result

    def query(
        self,
        collection_name: str,
        filter: str = "",
        output_fields: list[str] | None = None,
        *,
        filter_expression: str | None = None,
        **kwargs: Any,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The rows the filter selects from Milvus and from the shadow: ``(milvus_df, pg_df)``, indexed by the
        primary key and sorted, on the columns both hold. ``filter_expression`` is ``filter``'s other name."""
        if kwargs:
            raise TypeError(
                f"MilvusPGClient.query compares both sides and takes no {', '.join(sorted(kwargs))}; "
                "for Milvus' own query call MilvusClient.query(client, ...)"
            )
        frames: tuple[pd.DataFrame, pd.DataFrame] = self._run(
            query_frames, collection_name, self._filter(filter, filter_expression), output_fields
        )
        return frames

    def query_result_compare(
        self,
        collection_name: str,
        filter: str = "",
        output_fields: list[str] | None = None,
        *,
        filter_expression: str | None = None,
    ) -> QueryDifferences:
        """The filter's rows compared on both sides: an empty (falsy) list when they agree, else the
        differences (logged too), each naming key, field and side."""
        options = self._options()
        result: Comparison = self._run(
            compare.compare_query,
            collection_name,
            self._filter(filter, filter_expression),
            output_fields=None if output_fields == ["*"] else output_fields,
            tolerance=options.tolerance,
            tracker=options.tracker,
            vector_sample=options.vector_sample,
        )
        self.last_comparison = result
        log_comparison(result)
        found = QueryDifferences(result.differences)
        found.comparison = result
        return found

    def export(self, collection_name: str) -> pd.DataFrame:
        """Every row of the shadow table, in key order (JSON parsed)."""
        frame: pd.DataFrame = self._run(export_frame, collection_name)
        return frame

    def sample_data(self, collection_name: str, num_samples: int = 100) -> pd.DataFrame:
        """``num_samples`` random rows of the shadow table."""
        frame: pd.DataFrame = self._run(sample_frame, collection_name, _positive_int("num_samples", num_samples))
        return frame

    def generate_milvus_filter(self, collection_name: str, num_samples: int = 100) -> list[str]:
        """Filter expressions built from ``num_samples`` sampled rows' scalar values, each one convertible
        for the shadow (so ``query_result_compare`` can run it)."""
        from task_components.schema.milvus import from_milvus

        sample = self.sample_data(collection_name, num_samples)
        return milvus_filters(sample, from_milvus(MilvusClient.describe_collection(self, collection_name)))

    def get_all_primary_keys_from_milvus(self, collection_name: str, batch_size: int = 1000) -> list[Any]:
        """Every key Milvus holds, in key order (the escaped key walk, fenced by a Strong count(*))."""
        from task_components.shadow import sides

        async def keys(milvus: Any, pool: Any) -> list[Any]:
            shadow = await sides.resolve(milvus, pool, collection_name)
            found, _ = await sides.milvus_keys(milvus, shadow, "", _positive_int("batch_size", batch_size))
            return [int(k) for k in found] if shadow.int_keys else list(found)

        result: list[Any] = self._run(keys)
        return result

    def compare_primary_keys(self, collection_name: str) -> dict[str, Any]:
        """pymilvus-pg's dict: milvus_count, pg_count, common_count, only_in_milvus, only_in_pg,
        has_differences; plus ``differences``, each one-sided key attributed to the side judged wrong."""
        result: dict[str, Any] = self._run(primary_keys, collection_name, self.tracker)
        return result

    def three_way_pk_validation(self, collection_name: str, sample_size: int | None = None, *, seed: int | None = None) -> dict[str, Any]:
        """Milvus, the shadow and the LMDB tracker vote on each key (``sample_size`` keys drawn, ``seed``able)."""
        if self.tracker is None:
            raise ValueError("LMDB is not enabled (enable_lmdb=False): three-way validation needs the key tracker")
        result: dict[str, Any] = self._run(three_way, collection_name, self.tracker, sample_size, seed)
        return result

    def entity_compare(
        self,
        collection_name: str,
        batch_size: int = 10000,
        *,
        retry: int = 5,
        retry_interval: float = 5.0,
        full_scan: bool = False,
        compare_pks_first: bool = True,
        sample_percentage: float = 100.0,
    ) -> bool:
        """True when the sides agree: keys (``compare_pks_first``), counts (``retry`` times, ``retry_interval``
        seconds apart), and with ``full_scan`` every field of every row (or ``sample_percentage`` percent of
        the keys). Differences are logged with key, field and side; ``last_comparison`` keeps them."""
        ok, result = self._run(
            entity_compare,
            collection_name,
            self._options(),
            batch_size=batch_size,
            retry=retry,
            retry_interval=retry_interval,
            full_scan=full_scan,
            compare_pks_first=compare_pks_first,
            sample_percentage=sample_percentage,
        )
        self.last_comparison = result
        log.info("entity_compare %r: %s", collection_name, "PASSED" if ok else "FAILED")
        return bool(ok)
