"""Dataset packs as pipelines: same seed same bytes, incremental runs continue, bad input exits 2."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.registry import build_dag
from pipeline.spec import TaskSpec, load_spec
from task_components.datasets import get_pack, pack_tasks
from task_components.datasets.retail.tables import FACT_TABLES, WEEKLY_TABLES
from tests.unit.datasets_helpers import SMALL, fact, file_digests, run_pack

ROOT = Path(__file__).resolve().parents[2]
START = date(2024, 3, 1)


def _config(out: Path, **more: Any) -> dict[str, Any]:
    return {**SMALL, "out": str(out), "start_date": START, **more}


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    run_pack("retail", _config(tmp_path / "a", days=4), tmp_path / "runs")
    run_pack("retail", _config(tmp_path / "b", days=4), tmp_path / "runs")
    run_pack("retail", _config(tmp_path / "c", days=4, seed=12), tmp_path / "runs")
    a, b, c = (file_digests(tmp_path / x) for x in "abc")
    # six dimensions, eleven daily fact tables x four days, two weekly snapshots on Sunday 2024-03-03
    assert len(a) == 6 + 4 * len(FACT_TABLES) + len(WEEKLY_TABLES) == 52
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if "receipt" in k or "dims" in k)


def test_incremental_runs_continue_dates_keys_and_inventory(tmp_path: Path) -> None:
    """Two runs of 3 days give exactly the bytes of one run of 6: dates continue, no key repeats, and
    the second run starts from the inventory the first one left."""
    run_pack("retail", _config(tmp_path / "once", days=6), tmp_path / "runs")
    run_pack("retail", _config(tmp_path / "twice", days=3), tmp_path / "runs")
    first = file_digests(tmp_path / "twice")
    state = json.loads((tmp_path / "twice" / "state" / "generation_state.json").read_text())
    assert state["next_date"] == "2024-03-04" and len(state["runs"]) == 1
    run_pack("retail", _config(tmp_path / "twice", days=3, start_date=date(2030, 1, 1)), tmp_path / "runs")
    second = file_digests(tmp_path / "twice")
    assert {k: v for k, v in second.items() if k.startswith("dims")} == {k: v for k, v in first.items() if k.startswith("dims")}
    assert second == file_digests(tmp_path / "once")  # start_date of a later run is ignored: state wins
    state = json.loads((tmp_path / "twice" / "state" / "generation_state.json").read_text())
    assert state["next_date"] == "2024-03-07" and [r["start"] for r in state["runs"]] == ["2024-03-01", "2024-03-04"]
    receipts = fact(tmp_path / "twice", "receipts")
    assert receipts["receipt_id"].is_unique().all()
    assert sorted(receipts["dt"].unique()) == [date(2024, 3, d) for d in range(1, 7)]
    initial = fact(tmp_path / "twice", "store_inventory_txn").filter(pl.col("txn_type") == "INITIAL")
    assert set(initial["dt"].unique()) == {START}, "the second run continues balances, it does not restock"


def test_a_failed_run_leaves_the_state_untouched(tmp_path: Path) -> None:
    """Without the commit task (as when a table fails), the next date does not move: the days are
    generated again from the same state."""
    from pipeline.runner import RunOptions, execute, prepare_spec
    from pipeline.spec import PipelineSpec

    run_pack("retail", _config(tmp_path / "d", days=2), tmp_path / "runs")
    tasks = pack_tasks(get_pack("retail"), _config(tmp_path / "d", days=2))
    del tasks["commit"]
    spec = PipelineSpec.model_validate({"name": "partial", "tasks": tasks})
    options = RunOptions(run_dir=tmp_path / "runs")
    import anyio

    from config.settings import Settings

    prepared = prepare_spec(spec, "<partial>", {}, options)
    assert anyio.run(lambda: execute(prepared, Settings(), options, handle_signals=False)).ok
    state = json.loads((tmp_path / "d" / "state" / "generation_state.json").read_text())
    assert state["next_date"] == "2024-03-03" and len(state["runs"]) == 1
    assert (tmp_path / "d" / "state" / "pending" / "store_inventory.npy").exists()


def test_the_retail_pipeline_file_is_the_pack_graph() -> None:
    spec = load_spec(ROOT / "pipelines" / "retail.yaml", {})
    config = str(ROOT.resolve() / "pipelines" / "packs" / "retail.yaml")
    expected = pack_tasks(get_pack("retail"), config, {"out": "retail_data", "days": 7})
    assert spec.tasks == {n: TaskSpec.model_validate(t) for n, t in expected.items()}
    dag = build_dag(spec, "pipelines/retail.yaml")
    deps = {t.name: set(t.needs) for t in dag}
    assert deps["receipts"] == {"stores", "customers", "products"}
    assert deps["online_orders"] == {"customers", "products"}


def _invalid(tmp_path: Path, tasks: dict[str, Any], config: dict[str, Any] | str | None = None) -> str:
    if isinstance(config, dict):
        (tmp_path / "pack.yaml").write_text(yaml.safe_dump(config))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "bad", "tasks": tasks}))
    result = CliRunner().invoke(app, ["validate", str(pipeline)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and "Traceback" not in result.output
    return text


def _geo(config: Any, pack: str = "retail", table: str = "geographies") -> dict[str, Any]:
    return {"geo": {"uses": "dataset.table", "with": {"pack": pack, "table": table, "config": config}}}


def test_bad_packs_configs_and_graphs_exit_2_with_one_line(tmp_path: Path) -> None:
    cfg = str(tmp_path / "pack.yaml")
    text = _invalid(tmp_path, _geo(cfg, pack="retial"), {})
    assert "task 'geo'" in text and "unknown dataset pack 'retial'; did you mean 'retail'?" in text
    text = _invalid(tmp_path, _geo(cfg, table="storez"), {})
    assert "pack 'retail' has no table 'storez'; did you mean 'stores'?" in text
    text = _invalid(tmp_path, _geo(cfg), {"storez": 5})
    assert "pack.yaml: field 'storez': unknown setting" in text
    text = _invalid(tmp_path, _geo(cfg), {"stores": "many"})
    assert "pack.yaml: field 'stores'" in text and "'many'" in text
    text = _invalid(tmp_path, _geo(str(tmp_path / "nowhere.yaml")))
    assert "nowhere.yaml: no such pack config file" in text
    (tmp_path / "pack.yaml").write_text("seed: [1,\n")
    text = _invalid(tmp_path, _geo(cfg))
    assert "YAML syntax error" in text
    stores_alone = {"stores": {"uses": "dataset.table", "with": {"pack": "retail", "table": "stores", "config": {}}}}
    text = _invalid(tmp_path, stores_alone)
    assert "task 'stores'" in text and "references geographies, distribution_centers" in text
    commit_early = {**_geo({}), "commit": {"uses": "dataset.commit", "needs": ["geo"], "with": {"pack": "retail"}}}
    text = _invalid(tmp_path, commit_early)
    assert "task 'commit'" in text and "missing needs for distribution_centers" in text


def test_continuing_with_another_seed_is_refused_before_anything_runs(tmp_path: Path) -> None:
    run_pack("retail", _config(tmp_path / "e", days=1), tmp_path / "runs")
    text = _invalid(tmp_path, _geo({**_config(tmp_path / "e"), "seed": 99, "start_date": "2024-03-01"}))
    assert "generated with another seed or volume settings" in text


def test_settings_generation_cannot_hold_are_refused_before_running(tmp_path: Path) -> None:
    """Values that would overflow int32 ids, exhaust memory or leave the calendar: exit 2, one line."""
    cfg = str(tmp_path / "pack.yaml")
    cases = [
        ({"truck_capacity": 10**12}, "'truck_capacity'"),
        ({"customers": 10**10}, "'customers'"),
        ({"receipts_per_store_day": float("inf")}, "finite number"),
        ({"seed": -1}, "'seed'"),
        ({"stores": 20_000, "products": 200_000}, "store-product balances"),
        ({"start_date": date(9999, 12, 30)}, "runs past the calendar"),
        ({"out": ""}, "'out'"),
    ]
    for settings, expected in cases:
        text = _invalid(tmp_path, _geo(cfg), settings)
        assert expected in text and "(got {" not in text, (settings, text)
    (tmp_path / "dir.yaml").mkdir()
    assert "not a readable UTF-8 YAML pack config file" in _invalid(tmp_path, _geo(str(tmp_path / "dir.yaml")))
    (tmp_path / "bin.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert "bin.yaml: not a readable UTF-8" in _invalid(tmp_path, _geo(str(tmp_path / "bin.yaml")))
    (tmp_path / "outfile").write_text("x")
    text = _invalid(tmp_path, _geo(cfg), {"out": str(tmp_path / "outfile")})
    assert "is a file, not a directory" in text
    state = tmp_path / "data" / "state"
    state.mkdir(parents=True)
    (state / "generation_state.json").write_text("{broken")
    text = _invalid(tmp_path, _geo(cfg), {"out": str(tmp_path / "data")})
    assert "generation_state.json: the saved generation state is damaged" in text


def test_the_retail_pipeline_finds_its_pack_config_from_any_working_directory(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)  # no pipelines/ here: a cwd-relative config path would not be found
    result = CliRunner().invoke(app, ["validate", str(ROOT / "pipelines" / "retail.yaml")])
    assert result.exit_code == 0, result.output
    (tmp_path / "p.yaml").write_text("name: p\ntasks:\n  a: {uses: demo.sleep, with: {seconds: '${pipeline.home}'}}\n")
    bad = CliRunner().invoke(app, ["validate", str(tmp_path / "p.yaml")])
    assert bad.exit_code == 2 and "unknown reference ${pipeline.home}" in bad.output
