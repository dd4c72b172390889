"""Retail pack parity with the seed tool: CSV output beside Parquet (same layout, same bytes per seed),
its config.json accepted as is (unknown keys named, exit 2), curated name dictionaries, the master-data
mode, and the generation state's fields."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from task_components.datasets import PackConfigError, get_pack, load_pack_config, pack_tasks
from tests.unit.datasets_helpers import SMALL, run_pack

# the seed tool's documented config.json (its CLAUDE.md "Key config.json sections", comments removed)
SEED_CONFIG = {
    "seed": 42,
    "volume": {"stores": 86, "dcs": 20, "total_customers": 403000, "customers_per_day": 427},
    "paths": {"dict": "data/dictionaries", "master": "data/master", "facts": "data/facts"},
    "historical": {"start_date": "2024-01-01"},
    "realtime": {"emit_interval_ms": 500, "burst": 100, "azure_connection_string": ""},
}


def _run_tasks(name: str, tasks: dict[str, Any], run_dir: Path) -> None:
    import anyio

    from config.settings import Settings
    from pipeline.runner import RunOptions, execute, prepare_spec
    from pipeline.spec import PipelineSpec

    options = RunOptions(run_dir=run_dir)
    prepared = prepare_spec(PipelineSpec.model_validate({"name": name, "tasks": tasks}), f"<{name}>", {}, options)
    result = anyio.run(lambda: execute(prepared, Settings(), options, handle_signals=False))
    assert result.ok, {n: t.get("error") for n, t in result.to_dict()["tasks"].items()}


def _csv_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.csv"))}


def test_csv_has_the_parquet_layout_and_the_same_bytes_for_a_seed(tmp_path: Path) -> None:
    config = {**SMALL, "start_date": "2024-03-02", "days": 2}  # a Saturday and a Sunday (weekly snapshots)
    run_pack("retail", {**config, "out": str(tmp_path / "a"), "format": "csv"}, tmp_path / "runs")
    run_pack("retail", {**config, "out": str(tmp_path / "b"), "format": "csv"}, tmp_path / "runs")
    run_pack("retail", {**config, "out": str(tmp_path / "p")}, tmp_path / "runs")
    a, b = _csv_digests(tmp_path / "a"), _csv_digests(tmp_path / "b")
    assert a == b and len(a) > 20, "two runs of one seed wrote different CSV bytes"
    parquet = {str(p.relative_to(tmp_path / "p")) for p in (tmp_path / "p").rglob("*.parquet") if "state" not in p.parts}
    assert set(a) == {p.removesuffix(".parquet") + ".csv" for p in parquet}, "CSV and Parquet layouts differ"
    assert not [p for p in (tmp_path / "a" / "facts").rglob("*") if p.suffix == ".parquet"]
    assert not (tmp_path / "a" / "state" / "work" / "facts").exists(), "the working Parquet outlived the commit"
    for table in ("receipts", "store_inventory_txn", "store_inventory_snapshot"):
        part = f"facts/{table}/dt=2024-03-03/part-0"
        from_csv = pl.read_csv(tmp_path / "a" / f"{part}.csv", try_parse_dates=True)
        from_parquet = pl.read_parquet(tmp_path / "p" / f"{part}.parquet")
        assert from_csv.height == from_parquet.height > 0
        assert from_csv.cast(from_parquet.schema).equals(from_parquet), table
    dcs = pl.read_csv(tmp_path / "a" / "dims" / "distribution_centers.csv")
    assert "|" in dcs["served_states"][0]  # a list column, joined


def test_the_seed_tools_documented_config_translates_to_our_settings(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SEED_CONFIG))
    cfg: Any = load_pack_config(get_pack("retail"), str(path), {})
    assert (cfg.seed, cfg.stores, cfg.dcs, cfg.customers, cfg.receipts_per_store_day) == (42, 86, 20, 403000, 427)
    assert (cfg.out, cfg.dims_dir, cfg.facts_dir, cfg.dictionary_dir) == ("data", "data/master", "data/facts", "data/dictionaries")
    assert str(cfg.start_date) == "2024-01-01" and cfg.format == "csv"
    assert (cfg.realtime.emit_interval_ms, cfg.realtime.burst) == (500, 100)
    ours = load_pack_config(get_pack("retail"), {"stores": 3, "realtime": {"burst": 7}}, {})
    assert ours.model_dump()["realtime"]["burst"] == 7  # our own file shape passes through


def test_unknown_seed_config_keys_are_all_named_and_exit_2(tmp_path: Path) -> None:
    bad = {**SEED_CONFIG, "volume": {**SEED_CONFIG["volume"], "total_custmers": 5}, "colour": "red"}
    bad["realtime"] = {**SEED_CONFIG["realtime"], "max_batch": 3}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(PackConfigError) as err:
        load_pack_config(get_pack("retail"), str(path), {})
    text = str(err.value)
    assert "volume.total_custmers (did you mean 'total_customers'?)" in text and "colour" in text and "realtime.max_batch" in text
    pipeline = tmp_path / "p.yaml"
    tasks = pack_tasks(get_pack("retail"), str(path), mode="master")
    pipeline.write_text(yaml.safe_dump({"name": "seed", "tasks": tasks}))
    result = CliRunner().invoke(app, ["validate", str(pipeline)])
    assert result.exit_code == 2 and "volume.total_custmers" in result.output, result.output


def test_master_mode_writes_dimensions_only_and_curated_names_are_used(tmp_path: Path) -> None:
    words = tmp_path / "dictionaries"
    words.mkdir()
    (words / "first_names.csv").write_text("FirstName\nAda\nGrace\n")
    (words / "last_names.csv").write_text("LastName\nQuill\nMarsh\n")
    (words / "product_brands.csv").write_text("Brand,Company,Category\nFresh Select,Food\nHarvest Gold,Food\n")
    out = tmp_path / "d"
    config = {**SMALL, "out": str(out), "dictionary_dir": str(words), "format": "csv"}
    tasks = pack_tasks(get_pack("retail"), config, mode="master")
    assert "commit" not in tasks and "receipts" not in tasks and "customers" in tasks
    _run_tasks("master", tasks, tmp_path / "runs")
    customers = pl.read_csv(out / "dims" / "customers.csv")
    assert set(customers["first_name"]) == {"Ada", "Grace"} and set(customers["last_name"]) == {"Quill", "Marsh"}
    assert set(pl.read_csv(out / "dims" / "products.csv")["brand"]) == {"Fresh Select", "Harvest Gold"}
    assert not (out / "facts").exists() and not (out / "state" / "generation_state.json").exists()


def test_the_state_file_has_the_seed_tools_fields(tmp_path: Path) -> None:
    run_pack("retail", {**SMALL, "out": str(tmp_path / "d"), "days": 1}, tmp_path / "runs")
    state = json.loads((tmp_path / "d" / "state" / "generation_state.json").read_text())
    assert state["has_historical_data"] is True and state["last_realtime_run"] is None
    assert state["last_historical_run"] and state["last_generated_timestamp"] == "2024-01-02T00:00:00"


def test_the_mode_pipeline_files_are_the_pack_graph() -> None:
    from pipeline.spec import load_spec

    root = Path(__file__).resolve().parents[2] / "pipelines"
    modes = {"retail_master.yaml": ("master", {"out": "${params.out}"})}
    modes["retail_historical.yaml"] = ("historical", {"out": "${params.out}", "days": "${params.days}"})
    for file, (mode, overrides) in modes.items():
        raw = yaml.safe_load((root / file).read_text())
        expected = pack_tasks(get_pack("retail"), "${params.config}", overrides, mode=mode)
        assert raw["tasks"] == expected, file
    stream = load_spec(root / "retail_realtime.yaml", {"config": "c.json"}).tasks["stream"]
    assert stream.uses == "dataset.realtime" and stream.with_["config_file"] == "c.json" and stream.with_["max_events"] == 0


def test_the_seed_tools_transport_keys_are_ignored_with_a_warning_and_bad_json_is_one_line(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**SEED_CONFIG, "stream": {"hub": "x"}}))
    with capture_logs() as logs:
        load_pack_config(get_pack("retail"), str(path), {})
    ignored = {entry["key"] for entry in logs if entry["event"] == "seed_config_key_ignored"}
    assert ignored == {"realtime.azure_connection_string", "stream"}
    path.write_text('{"seed": 42, // the documentation\'s comment\n}')
    with pytest.raises(PackConfigError, match=r"config.json: JSON syntax error at line 1"):
        load_pack_config(get_pack("retail"), str(path), {})
