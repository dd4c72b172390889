"""``verify --level full`` in shares on the run's workers finds exactly what the in-engine scan finds.

Why: ``shares`` splits the every-row scan over worker processes (keyed: one share per source file;
AUTO_ID: the content first pass over source-file groups, shadow ``_row`` ranges and Milvus key ranges).
A share that skipped rows, double-counted a range or lost a finding in the merge would change the
answer only on the shares path, so the same divergences are verified three ways and compared: in the
engine (``shares_from_rows`` huge), in shares on the local backend and in shares on a Dask LocalCluster.
Each collection (keyed, AUTO_ID) is loaded once into the real Milvus and PostgreSQL servers, checked
clean on shares, then tampered with on every side at once: in Milvus and in the shadow a row missing,
an extra row, a duplicated row, a changed scalar and a vector moved beyond the tolerance; in a source
file a changed value. The collection is not reloaded, so AUTO_ID keys (Milvus ids) are the same in the
three runs. Keyed, two of these are the count checks' to see, not the scan's: the shadow's key is its
primary key (no duplicate there), and the 2.3 server's queries return a key stored twice once (count(*)
says twice), as they do an extra key no source file has.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dag_orchestrator import PipelineContext, RunServices
from dag_orchestrator.backends import LocalBackend
from task_components.verification import Verify, VerifyParams, VerifyResult, shares
from tests.integration.helpers import run_file, write_pipeline
from tests.integration.test_autoid_content import Sides
from tests.integration.test_autoid_content import pipeline as autoid_pipeline
from tests.integration.test_shadow import settings_with_pg
from tests.integration.test_shadow import spec as keyed_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROWS, PER_FILE = 3000, 500  # six source files: six keyed shares, several of each AUTO_ID side
KEYED, AUTO = "it_verify_shares", "autoid_it_verify_shares"
MODES: dict[str, tuple[int, dict[str, Any]]] = {  # shares_from_rows, RunServices
    "engine": (10**12, {}),
    "local": (0, {"backend": "local", "workers": 2}),
    "dask": (0, {"backend": "dask", "workers": 2}),  # no scheduler: a LocalCluster for the run
}
Finding = tuple[Any, str | None, str, str]


class ShareSides(Sides):
    """``Sides`` on this module's own collection, verified in a chosen mode."""

    def __init__(self, tmp_path: Path, result: Any, collection: str) -> None:
        super().__init__(tmp_path, result)
        self.collection = collection

    def verify_in(self, mode: str) -> tuple[VerifyResult, list[Any]]:
        """The result, and the backends the shares ran on (none in the engine)."""
        from_rows, services = MODES[mode]
        params = VerifyParams(level="full", fail_on_mismatch=False, search=0, shares_from_rows=from_rows)
        verify = Verify("verify", params, needs=["import", "shadow"])
        ctx = PipelineContext(run_dir=self.run_dir, services=RunServices(self.settings, **services))
        ctx.results.update({"import": self.imported, "shadow": self.shadow})
        with spying() as backends:
            return anyio.run(verify.run, ctx), backends

    def rows(self, n: int) -> list[dict[str, Any]]:
        return self.milvus.query(self.collection, filter="id >= 0", limit=n, output_fields=["*"], consistency_level="Strong")

    def insert(self, row: dict[str, Any]) -> int:
        return self.milvus.insert(self.collection, [{k: v for k, v in row.items() if k != "id"}])["ids"][0]

    def delete(self, key: int) -> None:
        self.milvus.delete(self.collection, ids=[key])

    def source_file(self, position: int) -> tuple[Path, int]:
        """The source file holding a stream position, and the row's place in it."""
        manifest = self.imported.manifest
        return manifest.file_path(manifest.files[position // PER_FILE]), position % PER_FILE


@contextmanager
def spying() -> Iterator[list[Any]]:
    """Records each backend ``shares`` opens: proof the shares path ran, and where."""
    made: list[Any] = []
    real = shares.scan_backend

    def spy(ctx: PipelineContext) -> Any:
        made.append(backend := real(ctx))
        return backend

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shares, "scan_backend", spy)
        yield made


@dataclass
class Runs:
    """One collection's verifications: clean on shares, then every mode after the injections."""

    clean: dict[str, VerifyResult] = field(default_factory=dict)
    diverged: dict[str, VerifyResult] = field(default_factory=dict)
    backends: dict[str, list[Any]] = field(default_factory=dict)
    expected: set[Finding] = field(default_factory=set)  # AUTO_ID rows Milvus lacks: key "hash"
    sides: set[str] = field(default_factory=set)  # the sides injected into
    counts: tuple[str, str] = ("", "")  # the count and shadow count checks' details once injected


def verify_all(s: ShareSides, inject: Callable[[], set[Finding]], milvus: int, postgres: int) -> Runs:
    """``milvus``/``postgres``: the stores' row counts once ``inject`` has run."""
    runs = Runs(counts=(f"milvus {milvus:,} rows, source {ROWS:,} rows", f"postgres {postgres:,} rows, source {ROWS:,} rows"))
    for mode in ("local", "dask"):
        runs.clean[mode] = s.verify_in(mode)[0]
    runs.expected = inject()
    runs.sides = {side for _, _, side, _ in runs.expected}
    for mode in MODES:
        runs.diverged[mode], runs.backends[mode] = s.verify_in(mode)
    return runs


def edit_source(s: ShareSides, position: int, column: str, change: Callable[[Any], Any]) -> None:
    path, i = s.source_file(position)
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[i] = change(values[i])
    index = table.schema.get_field_index(column)
    pq.write_table(table.set_column(index, table.schema.field(column), pa.array(values, table.schema.field(column).type)), path)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    tmp_path = tmp_path_factory.mktemp("keyed")
    spec = keyed_spec("simple", ROWS, KEYED)
    spec["tasks"]["import"]["with"].pop("insert_below_rows")  # 3,000 rows inserted: a bulk import costs ~40 s more
    del spec["tasks"]["verify"]  # verified below, in each mode
    result = run_file(write_pipeline(tmp_path / "p.yaml", spec), tmp_path / "r", settings_with_pg())
    assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
    s = ShareSides(tmp_path, result, KEYED)

    def inject() -> set[Finding]:
        """A key the scan finds in every file (500 each). The shadow's key is its primary key: no duplicate there."""
        (dup,) = s.milvus.query(KEYED, filter="id == 611", output_fields=["*"], consistency_level="Strong")
        (named,) = s.milvus.query(KEYED, filter="id == 1212", output_fields=["*"], consistency_level="Strong")
        (moved,) = s.milvus.query(KEYED, filter="id == 1813", output_fields=["*"], consistency_level="Strong")
        (extra,) = s.milvus.query(KEYED, filter="id == 2414", output_fields=["*"], consistency_level="Strong")
        s.milvus.delete(KEYED, filter="id == 10")
        s.milvus.insert(KEYED, [dup])  # the key twice: the 2.3 server's queries return it once, count(*) twice
        s.milvus.upsert(KEYED, [{**named, "name": "tampered"}])
        s.milvus.upsert(KEYED, [{**moved, "embedding": (np.asarray(moved["embedding"], np.float32) + np.float32(1e-3)).tolist()}])
        s.milvus.insert(KEYED, [{**extra, "id": 10**6}])  # a key no file has: the count says so, not the scan
        s.sql("DELETE FROM {t} WHERE id = 520")
        s.sql("UPDATE {t} SET name = 'tampered' WHERE id = 1021")
        s.sql("UPDATE {t} SET embedding[1] = embedding[1] + 0.001 WHERE id = 2922")
        cols = "name, description, price, in_stock, embedding"
        s.sql(f"INSERT INTO {{t}} (id, {cols}) SELECT 1000001, {cols} FROM {{t}} WHERE id = 2023")
        path, i = s.source_file(2005)
        source_key = pq.read_table(path).column("id")[i].as_py()
        edit_source(s, 2005, "name", lambda v: f"{v} edited")
        return {
            (10, None, "milvus", "row missing"),
            (1212, "name", "milvus", "value differs"),
            (1813, "embedding", "milvus", "value differs"),
            (520, None, "postgres", "row missing"),
            (1021, "name", "postgres", "value differs"),
            (2922, "embedding", "postgres", "value differs"),
            (source_key, "name", "source", "value differs"),
        }

    try:
        yield verify_all(s, inject, milvus=ROWS + 1, postgres=ROWS)
    finally:
        s.milvus.drop_collection(KEYED)
        s.sql("DROP TABLE IF EXISTS {t}")
        s.milvus.close()


def milvus_row(s: ShareSides, position: int) -> dict[str, Any]:
    """The Milvus row (with the id Milvus gave it) holding the shadow's row at a stream position."""
    (saved,) = s.sql("SELECT name, price, qty FROM {t} WHERE _row = $1", position)
    twins = s.milvus.query(AUTO, filter=f'name == "{saved["name"]}"', output_fields=["*"], consistency_level="Strong")
    (row,) = [r for r in twins if (r["price"], r["qty"]) == (saved["price"], saved["qty"])]
    return row


@pytest.fixture(scope="module")
def auto_id(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    tmp_path = tmp_path_factory.mktemp("auto")
    spec = copy.deepcopy(autoid_pipeline())
    schema = {**spec["tasks"]["generate"]["with"]["schema"], "collection_name": AUTO}
    spec["tasks"]["generate"]["with"].update(schema=schema, total_rows=ROWS)
    spec["tasks"]["collection"]["with"]["schema"] = schema
    spec["tasks"]["partition"]["with"]["rows_per_file"] = PER_FILE
    spec["tasks"]["import"]["with"].pop("insert_below_rows")  # inserted: what is verified is the same
    spec["tasks"]["shadow"]["with"]["table"] = f"shadow_{AUTO}"
    del spec["tasks"]["verify"]
    result = run_file(write_pipeline(tmp_path / "p.yaml", spec), tmp_path / "r", settings_with_pg())
    assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
    s = ShareSides(tmp_path, result, AUTO)

    def inject() -> set[Finding]:
        """Milvus rows by their shadow positions, so no two injections touch one row."""
        gone, twin, named, moved, novel = (milvus_row(s, p) for p in (20, 521, 1022, 1523, 2024))
        kept = {p: milvus_row(s, p)["id"] for p in (600, 1201, 1802, 2403, 1005)}
        s.delete(gone["id"])
        copy_id = s.insert(twin)
        s.delete(named["id"])
        named_id = s.insert({**named, "name": "tampered"})
        s.delete(moved["id"])
        vector = np.asarray(moved["embedding"], np.float32)
        vector[3] += np.float32(1e-3)
        moved_id = s.insert({**moved, "embedding": vector.tolist()})
        novel_id = s.insert({**novel, "name": "novel", "qty": (novel["qty"] + 7) % 500, "price": novel["price"] + 1})
        cols = "name, score, price, qty, active, meta, tags, ratios, embedding"
        s.sql("DELETE FROM {t} WHERE _row = 600")
        s.sql(f"INSERT INTO {{t}} (_row, {cols}) SELECT 100000, {cols} FROM {{t}} WHERE _row = 1201")
        s.sql("UPDATE {t} SET qty = qty + 1 WHERE _row = 1802")
        s.sql("UPDATE {t} SET embedding[5] = embedding[5] + 0.001 WHERE _row = 2403")
        novel_pg = "name, score, price + 1, (qty + 7) % 500, active, meta, tags, ratios, embedding"
        s.sql(f"INSERT INTO {{t}} (_row, {cols}) SELECT 100001, {novel_pg} FROM {{t}} WHERE _row = 2404")
        edit_source(s, 1005, "qty", lambda v: v + 1)
        return {
            ("hash", None, "milvus", "row missing"),
            (max(copy_id, twin["id"]), None, "milvus", "extra row"),  # either copy: the last in key order
            (named_id, "name", "milvus", "value differs"),
            (moved_id, "embedding", "milvus", "value differs"),
            (novel_id, None, "milvus", "extra row"),
            (kept[600], None, "postgres", "row missing"),
            (kept[1201], None, "postgres", "extra row"),
            (kept[1802], "qty", "postgres", "value differs"),
            (kept[2403], "embedding", "postgres", "value differs"),
            ("hash", None, "postgres", "extra row"),
            (kept[1005], "qty", "source", "value differs"),
        }

    try:
        yield verify_all(s, inject, milvus=ROWS + 1, postgres=ROWS + 1)
    finally:
        s.milvus.drop_collection(AUTO)
        s.sql("DROP TABLE IF EXISTS {t}")
        s.milvus.close()


KINDS = ["keyed", "auto_id"]


def runs_of(request: pytest.FixtureRequest, kind: str) -> Runs:
    runs: Runs = request.getfixturevalue(kind)
    return runs


def findings(report: VerifyResult) -> list[Finding]:
    """(key, field, side, problem), sorted (keys are ints, or "hash:..." for rows Milvus lacks)."""
    return sorted(((f["key"], f["field"], f["side"], f["problem"]) for f in report.findings), key=repr)


def by_side(report: VerifyResult) -> dict[str, int]:
    scan = {c.name: c for c in report.checks}["full scan"]
    return {side: int(n) for side, n in re.findall(r"(\w+) wrong in (\d+)", scan.detail)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["local", "dask"])
def test_the_clean_collection_passes_on_shares(request: pytest.FixtureRequest, kind: str, mode: str) -> None:
    report = runs_of(request, kind).clean[mode]
    assert report.passed and not report.findings, report.checks
    assert [c.name for c in report.checks] == ["count", "shadow count", "full scan"]
    assert f"{ROWS:,} rows x " in report.checks[-1].detail and " agree" in report.checks[-1].detail


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["local", "dask"])
def test_shares_pass_and_fail_the_same_checks_as_the_engine(request: pytest.FixtureRequest, kind: str, mode: str) -> None:
    runs = runs_of(request, kind)
    engine, share = runs.diverged["engine"], runs.diverged[mode]
    assert [(c.name, c.passed) for c in share.checks] == [(c.name, c.passed) for c in engine.checks]
    assert [c.detail for c in share.checks] == [c.detail for c in engine.checks]  # counts, by side, first findings
    assert share.passed is engine.passed is False


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["local", "dask"])
def test_shares_report_the_same_findings_as_the_engine(request: pytest.FixtureRequest, kind: str, mode: str) -> None:
    runs = runs_of(request, kind)
    assert findings(runs.diverged[mode]) == findings(runs.diverged["engine"])
    assert by_side(runs.diverged[mode]) == by_side(runs.diverged["engine"])


@pytest.mark.parametrize("kind", KINDS)
def test_every_injected_divergence_is_found_and_blamed(request: pytest.FixtureRequest, kind: str) -> None:
    """What the three runs agree on is the right answer, and a share run can fail: each injected side is blamed."""
    runs = runs_of(request, kind)
    for mode, report in runs.diverged.items():
        got = {(("hash" if str(k).startswith("hash:") else k), f, side, p) for k, f, side, p in findings(report)}
        assert got == runs.expected, mode
        assert len(report.findings) == len(runs.expected), mode  # nothing found twice
        assert (report.checks[0].detail, report.checks[1].detail) == runs.counts, mode
        counts = by_side(report)
        assert set(counts) == runs.sides and all(n > 0 for n in counts.values()), (mode, counts)


@pytest.mark.parametrize("kind", KINDS)
def test_the_shares_ran_on_the_run_backend(request: pytest.FixtureRequest, kind: str) -> None:
    runs = runs_of(request, kind)
    assert runs.backends["engine"] == []
    (local,) = runs.backends["local"]
    assert isinstance(local, LocalBackend) and local.workers == 2  # worker processes, not a thread here
    (dask,) = runs.backends["dask"]
    assert type(dask).__name__ == "DaskBackend" and dask.workers == 2
    assert sum(dask.placement.values()) >= 6, dict(dask.placement)  # every share came back from a Dask worker
