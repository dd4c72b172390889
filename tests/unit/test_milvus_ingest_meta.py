"""meta.json interop with milvus-ingest: reading its directories, writing ours so its loader reads them.

The fixture under tests/fixtures/milvus_ingest was written by milvus-ingest 0.1.2 itself (see its README).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import pipeline.ingest_cli  # noqa: F401 - registers `to-milvus`
from pipeline.cli import app
from pipeline.ingest_cli import sample_size
from task_components.datafiles import DataFileError, json_rows, parquet_mismatches, read_table, rewrite_parquet
from task_components.interop import MetaError
from task_components.manifest import Manifest, sha256_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "milvus_ingest"


@pytest.mark.parametrize(("fmt", "rows"), [("parquet", 300), ("json", 150)])
def test_a_milvus_ingest_directory_loads_as_a_manifest_with_rows_and_checksums(fmt: str, rows: int) -> None:
    m = Manifest.load(FIXTURE / fmt)
    assert m.format == fmt and m.total_rows == rows and m.collection_schema.collection_name == "miload_products"
    (entry,) = m.files
    assert entry.rows == rows and entry.sha256 == sha256_file(m.file_path(entry))
    assert m.generation["source"] == "milvus-ingest" and m.generation["seed"] == 7
    table = read_table(m, entry)
    assert table.num_rows == rows and table.schema.field("embedding").type == pa.list_(pa.float32())
    assert isinstance(json.loads(table.column("attrs")[0].as_py()), dict)  # JSON objects become JSON text


def test_json_and_parquet_from_milvus_ingest_hold_the_same_first_rows() -> None:
    pq_m, js_m = Manifest.load(FIXTURE / "parquet"), Manifest.load(FIXTURE / "json")
    a = read_table(pq_m, pq_m.files[0]).slice(0, 150).column("id").to_pylist()
    b = read_table(js_m, js_m.files[0]).column("id").to_pylist()
    assert len(b) == 150 and a[:3] == b[:3]


def test_our_meta_json_carries_what_milvus_ingest_reads_and_round_trips(tmp_path: Path) -> None:
    m = Manifest.load(FIXTURE / "parquet")
    m.save(tmp_path)
    data = json.loads((tmp_path / "meta.json").read_text())
    info = data["generation_info"]
    assert info == {"total_rows": 300, "format": "parquet", "data_files": ["data.parquet"], "file_count": 1, "seed": 7}
    assert data["schema"]["collection_name"] == "miload_products"
    for field in data["schema"]["fields"]:  # milvus-ingest hands present keys to pymilvus: no nulls
        assert None not in field.values(), field
    assert data["files"][0]["sha256"] == m.files[0].sha256  # our checksums kept
    shutil.copy(FIXTURE / "parquet" / "data.parquet", tmp_path)
    again = Manifest.load(tmp_path)
    assert again.files == m.files and again.collection_schema == m.collection_schema


def _copy(tmp_path: Path, fmt: str = "parquet") -> Path:
    out = tmp_path / fmt
    shutil.copytree(FIXTURE / fmt, out)
    return out


def test_a_row_count_that_disagrees_with_the_files_is_refused_by_key(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    meta["generation_info"]["total_rows"] = 301
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(MetaError, match=r"generation_info.total_rows is 301 but the data files hold 300 rows"):
        Manifest.load(d)


def test_json_rows_reads_both_shapes_and_names_a_bad_value(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text('[{"a": 1}]')
    (tmp_path / "rows.json").write_text('{"rows": [{"a": 1}]}')
    assert json_rows(tmp_path / "list.json") == json_rows(tmp_path / "rows.json") == [{"a": 1}]
    d = _copy(tmp_path, "json")
    rows = json.loads((d / "data.json").read_text())
    rows[4]["stock"] = "many"
    (d / "data.json").write_text(json.dumps(rows))
    m = Manifest.load(d)
    with pytest.raises(DataFileError, match=r"data.json: field 'stock' row 4: value 'many' is not int32"):
        read_table(m, m.files[0])


def test_large_string_columns_are_found_and_rewritten_with_the_schema_types(tmp_path: Path) -> None:
    m = Manifest.load(FIXTURE / "parquet")
    assert "data.parquet: title is large_string, not string" in parquet_mismatches(m)
    copy = rewrite_parquet(m, tmp_path / "staged")
    assert parquet_mismatches(Manifest.load(tmp_path / "staged")) == []
    assert (
        pq.read_table(copy.file_path(copy.files[0])).column("title").to_pylist()
        == pq.read_table(m.file_path(m.files[0])).column("title").to_pylist()
    )


def test_sample_size_follows_milvus_ingest() -> None:
    assert [sample_size(n) for n in (300, 50_000, 5_000_000)] == [1000, 5000, 100_000]


BAD_DIM = {
    "schema": {
        "collection_name": "x",
        "fields": [{"name": "id", "type": "Int64", "is_primary": True}, {"name": "v", "type": "FloatVector", "dim": "eight"}],
    },
    "generation_info": {"format": "parquet"},
}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: (d / "meta.json").write_text("{nope"), "meta.json: not valid JSON"),
        (lambda d: (d / "data.parquet").unlink(), "generation_info.data_files lists 'data.parquet'"),
        (lambda d: (d / "meta.json").write_text(json.dumps(BAD_DIM)), "schema.fields.1.dim"),
    ],
)
@pytest.mark.parametrize("command", [["to-milvus", "insert"], ["to-milvus", "verify"], ["to-milvus", "import"]])
def test_bad_dataset_directories_exit_2_naming_file_and_key(
    edit: Callable[[Path], object], expected: str, command: list[str], tmp_path: Path
) -> None:
    d = _copy(tmp_path)
    edit(d)
    result = CliRunner().invoke(app, [*command, str(d), "--run-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()) and "Traceback" not in result.output


def test_s3_path_with_a_bucket_that_contradicts_bucket_is_refused(tmp_path: Path) -> None:
    args = ["to-milvus", "import", str(FIXTURE / "json"), "--s3-path", "s3://one/p", "--bucket", "two"]
    result = CliRunner().invoke(app, [*args, "--run-dir", str(tmp_path)])
    assert result.exit_code == 2 and "names bucket 'one' but --bucket is 'two'" in result.output


class _FakeMilvus:
    """Answers ``id in [...]`` like Milvus would for a collection that lost some keys and doubled one."""

    def __init__(self, lost: set[int], doubled: int) -> None:
        self.lost, self.doubled, self.filters = lost, doubled, []

    def query(self, collection: str, filter: str, output_fields: list[str], consistency_level: str) -> list[dict]:
        self.filters.append(filter)
        keys = [int(k) for k in filter.split("[", 1)[1].rstrip("]").split(", ")]
        return [{"id": k} for k in keys if k not in self.lost] + [{"id": k} for k in keys if k == self.doubled]

    def close(self) -> None:
        pass


def test_missing_keys_names_every_lost_and_doubled_key_batch_by_batch() -> None:
    from types import SimpleNamespace

    from task_components.verification.keys import missing_keys

    m = Manifest.load(FIXTURE / "parquet")
    ids = read_table(m, m.files[0]).column("id").to_pylist()
    fake = _FakeMilvus(lost={ids[5], ids[250]}, doubled=ids[7])
    info = SimpleNamespace(collection_schema=m.collection_schema, milvus=lambda: SimpleNamespace(client=lambda: fake))
    seen: list[int] = []
    check = missing_keys(SimpleNamespace(info=info, manifest=m, collection="c"), batch_rows=100, progress=seen.append)
    assert not check.passed and len(fake.filters) == 3 and seen == [100, 200, 300]
    assert f"2 of 300 source keys missing in Milvus: id={ids[5]}, id={ids[250]}" in check.detail
    assert f"1 keys stored more than once: id={ids[7]} x2" in check.detail


def test_data_files_that_do_not_fit_the_schema_exit_2_before_any_work(tmp_path: Path) -> None:
    d = _copy(tmp_path, "json")
    rows = json.loads((d / "data.json").read_text())
    rows[9]["price"] = "cheap"
    (d / "data.json").write_text(json.dumps(rows))
    result = CliRunner().invoke(app, ["to-milvus", "insert", str(d), "--run-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and not (tmp_path / "runs").exists()
    assert "data.json: field 'price' row 9: value 'cheap' is not float" in " ".join(result.output.split())
    p = _copy(tmp_path, "parquet")
    pq.write_table(pq.read_table(p / "data.parquet").drop_columns(["stock"]), p / "data.parquet")
    result = CliRunner().invoke(app, ["to-milvus", "verify", str(p), "--run-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "data.parquet: no column for schema field 'stock'" in result.output


def test_a_truncated_parquet_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    import shutil

    from task_components.datafiles import check_files

    shutil.copytree(FIXTURE / "parquet", tmp_path / "ds")
    m = Manifest.load(tmp_path / "ds")
    path = m.file_path(m.files[0])
    path.write_bytes(path.read_bytes()[:5000])  # cut short, as a failed copy leaves it
    with pytest.raises(DataFileError, match=r"data\.parquet: not a readable Parquet file"):
        check_files(m)
