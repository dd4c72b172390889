"""The ``verify`` task: does Milvus hold exactly what the source files say?

Levels: ``count`` compares count(*) with the manifest (and the shadow's row count when there is one);
``sample`` also compares a spread of primary keys field by field, three ways when a shadow exists;
``scalar`` and ``full`` compare every row (scalar fields only, or every field) across source files,
Milvus and the PostgreSQL shadow, attributing each disagreement to the side that differs and
reporting keys Milvus stores more than once. AUTO_ID collections have no key the source knows, so
``scalar``/``full`` match their rows by content instead (``content``: multisets of row hashes), and
``sample`` stays a count for them: finding a sampled row by content means hashing every Milvus row,
which is the full scan's cost without its completeness. Above ``count``, search recall@k is checked
against exact top-k over the source vectors. Milvus is the current MILVUS__URI when set, else the
recorded one.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import anyio
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from dag_orchestrator.context import PipelineContext
from task_components import keyexpr
from task_components.base import Component
from task_components.clients import MilvusTarget, milvus_target, pg_connect
from task_components.connect import count_at, shadow_dsn
from task_components.contracts import ImportResult, ShadowResult
from task_components.errors import ShadowValidationError
from task_components.schema.postgres import quote
from task_components.verification.compare import same_value
from task_components.verification.content import compare_content
from task_components.verification.fullscan import scan
from task_components.verification.keys import missing_keys
from task_components.verification.rows import milvus_rows, sample_source_rows
from task_components.verification.search import search_recall
from task_components.verification.shares import ScanWork, content_first_pass, keyed_scan, shares_imported
from task_components.verification.task_types import Check
from task_components.verification.threeway import fetch_shadow, three_way


class VerifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["count", "sample", "scalar", "full"] = Field(
        "sample", description="sample: spread of keys; scalar/full: every row, three-way with the shadow"
    )
    sample: int = Field(1000, ge=1, le=100_000, description="primary keys compared field by field (level sample)")
    sample_threshold: float = Field(0.95, ge=0, le=1, description="share of sampled keys that must match fully")
    sample_fields: Literal["all", "scalar", "none"] = Field(
        "all", description="fields the sample compares (none: only that every sampled key is in Milvus once)"
    )
    tolerance: float = Field(1e-6, ge=0, description="absolute tolerance for float vectors")
    fail_on_mismatch: bool = Field(True, description="fail the task when a check fails")
    find_missing: bool = Field(False, description="on a failed count, look every source key up to name the rows")
    search: int = Field(1000, ge=0, description="search queries checked for recall (0: none; not at level count)")
    search_k: int = Field(10, ge=1, le=1000)
    recall_threshold: float = Field(0.8, ge=0, le=1)
    search_params: dict[str, Any] | None = Field(None, description="e.g. {nprobe: 16}: default is near-exhaustive")
    shares_from_rows: int = Field(
        200_000,
        ge=0,
        description="scalar/full: from this many source rows (0: always) the scan runs in shares on the run's workers; "
        "below, here (starting workers would cost more than they save). Milvus Lite or an embedded PostgreSQL: always here",
    )


class VerifyResult(BaseModel):
    passed: bool
    checks: list[Check]
    seconds: float
    findings: list[dict[str, Any]] = Field(default_factory=list, description="three-way disagreements by side")


AUTO_ID_SAMPLE = "skipped: auto_id rows have no source key to sample by (level scalar/full matches them by content)"


class VerificationFailed(ShadowValidationError):
    pass


def unreadable_note(keys: set[Any]) -> str:
    return f"; key {', '.join(map(str, sorted(keys)))}: {keyexpr.UNREADABLE}" if keys else ""


def compare_sample(
    result: ImportResult,
    tolerance: float,
    n: int,
    threshold: float = 1.0,
    which: str = "all",
    target: MilvusTarget | None = None,
) -> Check:
    """Sampled keys field by field; ``threshold`` forgives value mismatches, never a missing or repeated key."""
    schema = result.info.collection_schema
    pk = schema.primary
    if pk.auto_id:
        return Check(name="sample", passed=True, detail=AUTO_ID_SAMPLE)
    source = sample_source_rows(result.manifest, n)
    keys = source.column(pk.name).to_pylist()
    fields = [f for f in schema.data_fields() if not f.is_primary and which != "none"]
    if which == "scalar":
        fields = [f for f in fields if not f.type.is_vector]
    by_key = milvus_rows(result, keys, fields, target)
    absent_keys = {k for k in keys if k not in by_key and k not in by_key.unreadable}
    problems = [f"{pk.name}={k}: missing in Milvus" for k in keys if k in absent_keys]
    problems += [f"{pk.name}={k}: stored {n} times in Milvus" for k, n in by_key.duplicates.items()]
    bad_keys = absent_keys | set(by_key.duplicates)
    for f in fields:
        column = source.column(f.name).to_pylist()
        for key, value in zip(keys, column, strict=True):
            if key in by_key and not same_value(f, value, by_key[key].get(f.name), tolerance):
                got_value = _short(by_key[key].get(f.name))
                problems.append(f"{pk.name}={key} field {f.name!r}: source {_short(value)} != milvus {got_value}")
                bad_keys.add(key)
    share = 1 - len(bad_keys) / max(len(keys), 1)
    detail = f"{len(keys)} keys, {len(fields)} fields compared, {share:.1%} match fully"
    if problems:
        detail += ": " + "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
    detail += unreadable_note(by_key.unreadable)
    absent = bool(absent_keys) or bool(by_key.duplicates)
    return Check(name="sample", passed=share >= threshold and not absent, detail=detail)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def current_target(ctx: PipelineContext, imported: ImportResult) -> tuple[ImportResult, MilvusTarget]:
    """Verify against MILVUS__URI when it is set (and say so when it differs from the recorded one).

    The target comes with its token, read from the settings: the recorded result holds none.
    """
    settings = ctx.services.settings
    recorded = imported.info.target
    uri = settings.milvus.uri
    if not uri or uri == recorded["uri"]:
        ctx.log.info("verifying against the Milvus the import used", uri=recorded["uri"])
        return imported, imported.info.milvus(settings)
    target = milvus_target(settings, ctx.run_dir)
    ctx.log.warning("verifying against MILVUS__URI, not the Milvus the import recorded", uri=uri, recorded=recorded["uri"])
    info = imported.info.model_copy(update={"target": target.public()})
    return imported.model_copy(update={"info": info}), target


class Verify(Component[VerifyParams]):
    __slots__ = ()
    component = "verify"
    Result = VerifyResult
    needs_types = (ImportResult,)
    summary = "check source files, Milvus and the shadow agree: counts, sampled or every row, search recall"
    Params = VerifyParams
    default_kind = "milvus"

    def required_inputs(self) -> list[tuple[type, ...]]:
        extra = [(ShadowResult,)] if self.params.level in ("scalar", "full") else []
        return [*super().required_inputs(), *extra]

    async def run(self, ctx: PipelineContext) -> VerifyResult:
        p = self.params
        imported = self.upstream(ctx, ImportResult)
        if imported is None:
            raise ValueError("verify needs a milvus.bulk_import or milvus.insert task among its needs")
        imported, target = current_target(ctx, imported)
        started = time.perf_counter()

        def count() -> Check:
            n = count_at(target, imported.collection)  # loads it first if released
            expected = imported.manifest.total_rows
            return Check(name="count", passed=n == expected, detail=f"milvus {n:,} rows, source {expected:,} rows")

        checks = [await anyio.to_thread.run_sync(count)]
        if p.find_missing and not checks[0].passed and not imported.info.collection_schema.primary.auto_id:
            total = imported.manifest.total_rows
            ctx.log.info("count differs: looking every source key up in Milvus", keys=total)

            def report(n: int) -> None:  # from the worker thread: observers run on the event loop
                anyio.from_thread.run_sync(lambda: ctx.progress(done=n, total=total, unit="keys"))

            checks.append(await anyio.to_thread.run_sync(lambda: missing_keys(imported, progress=report, target=target)))
        findings: list[dict[str, Any]] = []
        shadow = self.upstream(ctx, ShadowResult)
        if p.level in ("scalar", "full") and shadow is None:
            raise ValueError(f"verify level {p.level} needs a shadow.sync task among its needs")
        dsn = ""
        if shadow is not None:
            pg_home = Path(shadow.embedded_dir) if shadow.embedded_dir else ctx.run_dir
            dsn = (await shadow_dsn(ctx.services.settings, pg_home))[0]
        if shadow is not None:
            checks.append(await self._shadow_count(dsn, shadow, imported.manifest.total_rows))
        if p.level == "sample":
            checks.append(
                await anyio.to_thread.run_sync(compare_sample, imported, p.tolerance, p.sample, p.sample_threshold, p.sample_fields, target)
            )
            if shadow is not None:
                three, findings = await self._three_way(dsn, imported, shadow, p, target)
                checks.append(three)
        elif p.level in ("scalar", "full") and shadow is not None:
            scan_check, findings = await self._scan(ctx, dsn, imported, shadow, p, target)
            checks.append(scan_check)
        if p.level != "count" and p.search:
            searched = await anyio.to_thread.run_sync(
                search_recall, imported, p.search, p.search_k, p.recall_threshold, p.search_params, target
            )
            if searched is not None:
                checks.append(searched)
        result = VerifyResult(
            passed=all(c.passed for c in checks),
            checks=checks,
            seconds=time.perf_counter() - started,
            findings=findings,
        )
        for c in checks:
            (ctx.log.info if c.passed else ctx.log.error)("verification check", check=c.name, passed=c.passed, detail=c.detail)
        if not result.passed and p.fail_on_mismatch:
            failed = [c for c in checks if not c.passed]
            raise VerificationFailed("; ".join(f"{c.name}: {c.detail}" for c in failed))
        return result

    async def _scan(
        self, ctx: PipelineContext, dsn: str, imported: ImportResult, shadow: ShadowResult, p: VerifyParams, target: MilvusTarget
    ) -> tuple[Check, list[dict[str, Any]]]:
        """Every row, in shares on the run's workers (``shares``); the engine adds up counts and findings."""
        schema = imported.info.collection_schema
        name = f"{p.level} scan"
        fields = [f for f in schema.data_fields() if not f.is_primary]
        if p.level == "scalar":
            fields = [f for f in fields if not f.type.is_vector]
        deployed = ctx.services.backend == "dask" and bool(ctx.services.scheduler)
        # Lite is one process's file and an embedded PostgreSQL lives in one run directory: those scan here
        shares = not target.lite and not shadow.embedded and (deployed or imported.manifest.total_rows >= p.shares_from_rows)
        if shares and deployed:  # a deployment's workers use their own POSTGRES__DSN and MILVUS__TOKEN
            work = ScanWork(shares_imported(imported), shadow, None, replace(target, token=None), fields, p.tolerance)
        else:
            work = ScanWork(shares_imported(imported), shadow, dsn, target, fields, p.tolerance)
        if schema.primary.auto_id:  # no key joins the sides: match rows by content
            first = content_first_pass(ctx, work, dsn, target) if shares else None
            report = await compare_content(imported, shadow, dsn, fields, p.tolerance, target=target, first_pass=first)
            agree = "agree by content"
        else:
            report = await keyed_scan(ctx, work) if shares else await scan(imported, shadow, dsn, fields, p.tolerance, target=target)
            agree = "agree"
        if not report.by_side:
            detail = f"{report.rows:,} rows x {len(fields)} fields {agree} on source, milvus, postgres"
            detail += unreadable_note(report.unreadable)
            return Check(name=name, passed=True, detail=detail), []
        blame = ", ".join(f"{side} wrong in {n}" for side, n in sorted(report.by_side.items()))
        first = "; ".join(f"{schema.primary.name}={f['key']} {f['field'] or ''} ({f['side']})" for f in report.findings[:3])
        return Check(name=name, passed=False, detail=f"{report.rows:,} rows: {blame}: {first}"), report.findings

    async def _shadow_count(self, dsn: str, shadow: ShadowResult, expected: int) -> Check:
        conn = await pg_connect(dsn)
        try:
            n = await conn.fetchval(f"SELECT count(*) FROM {quote(shadow.table)}")
        finally:
            await conn.close()
        return Check(name="shadow count", passed=n == expected, detail=f"postgres {n:,} rows, source {expected:,} rows")

    async def _three_way(
        self, dsn: str, imported: ImportResult, shadow: ShadowResult, p: VerifyParams, target: MilvusTarget
    ) -> tuple[Check, list[dict[str, Any]]]:
        schema = imported.info.collection_schema
        if schema.primary.auto_id:
            return Check(name="three-way", passed=True, detail=AUTO_ID_SAMPLE), []
        source = await anyio.to_thread.run_sync(sample_source_rows, imported.manifest, p.sample)
        fields = [f for f in schema.data_fields() if not f.is_primary]
        keys = source.column(schema.primary.name).to_pylist()
        milvus = await anyio.to_thread.run_sync(milvus_rows, imported, keys, fields, target)
        pg = await fetch_shadow(dsn, shadow, keys, fields)
        if milvus.unreadable:  # present in Milvus, but its fields cannot be read: not compared
            keep = [i for i, k in enumerate(keys) if k not in milvus.unreadable]
            source, keys = source.take(pa.array(keep, pa.int64())), [keys[i] for i in keep]
        findings = await anyio.to_thread.run_sync(lambda: three_way(source, keys, milvus, pg, fields, p.tolerance))
        if not findings:
            detail = f"{len(keys)} keys agree on source, milvus, postgres{unreadable_note(milvus.unreadable)}"
            return Check(name="three-way", passed=True, detail=detail), []
        sides: dict[str, int] = {}
        for f in findings:
            sides[f["side"]] = sides.get(f["side"], 0) + 1
        blame = ", ".join(f"{side} wrong in {n}" for side, n in sorted(sides.items()))
        first = "; ".join(f"{schema.primary.name}={f['key']} {f['field'] or ''} ({f['side']})" for f in findings[:3])
        return Check(name="three-way", passed=False, detail=f"{blame}: {first}"), findings

    def summarize(self, result: VerifyResult) -> dict[str, Any]:
        return {"result": "passed" if result.passed else "FAILED", **{c.name: c.detail for c in result.checks}}
