"""Document packs without a server: references read from the models, generators, distributions, wiring."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.registry import build_dag
from pipeline.spec import load_spec
from task_components.datasets.mongo import Batch, get_doc_pack
from task_components.datasets.mongo.ecommerce import ORIGIN, Order
from task_components.datasets.mongo.model import doc_ids, ref_paths, ref_values, time_ordered, weighted

ROOT = Path(__file__).resolve().parents[2]
PACK = get_doc_pack("ecommerce")


def _generate(name: str, first: int, count: int, total: int, parents: dict[str, Any]) -> list[dict[str, Any]]:
    rng = np.random.default_rng([1, first])
    return PACK.collections[name].documents(Batch(name, rng, first, count, total, parents, ORIGIN))


def _parents() -> dict[str, Any]:
    users = doc_ids("users", 0, 50, ORIGIN)
    products = doc_ids("products", 0, 20, ORIGIN)
    return {"users": users, "products": products, "products.price_cents": [100 + i for i in range(20)]}


def test_references_come_from_the_models_nested_ones_too() -> None:
    refs = {c.name: set(ref_paths(c.model)) for c in PACK.collections.values()}
    assert refs["orders"] == {(("user_id",), "users"), (("items", "product_id"), "products")}
    assert refs["page_views"] == {(("meta", "user_id"), "users")}
    assert refs["users"] == set() and refs["products"] == set()
    doc = {"items": [{"product_id": 1}, {"product_id": 2}], "user_id": 3}
    assert list(ref_values(doc, ("items", "product_id"))) == [1, 2] and list(ref_values(doc, ("user_id",))) == [3]


def test_every_generated_document_satisfies_its_model_and_references_only_given_parents() -> None:
    parents = _parents()
    for coll in PACK.collections.values():
        docs = _generate(coll.name, 0, 300, 300, parents)
        assert len(docs) == 300 and len({d["_id"] for d in docs}) == 300
        for d in docs:
            coll.model.model_validate(d)
            for path, parent in ref_paths(coll.model):
                assert set(ref_values(d, path)) <= set(parents[parent])


def test_computed_total_is_checked_by_the_model() -> None:
    order = _generate("orders", 0, 1, 1, _parents())[0]
    Order.model_validate(order)
    with pytest.raises(ValidationError, match="sum of the items"):
        Order.model_validate({**order, "total_cents": order["total_cents"] + 1})
    bad_line = {**order["items"][0], "line_total_cents": 1}
    with pytest.raises(ValidationError, match="qty x unit_price"):
        Order.model_validate({**order, "items": [bad_line]})


def test_batches_are_deterministic_and_time_ordered_across_batches() -> None:
    parents = _parents()
    a = _generate("orders", 0, 100, 300, parents) + _generate("orders", 100, 200, 300, parents)
    b = _generate("orders", 0, 100, 300, parents) + _generate("orders", 100, 200, 300, parents)
    assert a == b
    times = [d["created_at"] for d in a]
    assert times == sorted(times) and times[0] >= ORIGIN
    rng = np.random.default_rng(0)
    t = time_ordered(datetime(2024, 1, 1), timedelta(days=10), 0, 1000, 1000, rng)
    assert t == sorted(t) and t[-1] < datetime(2024, 1, 11)
    assert doc_ids("users", 0, 3, ORIGIN) == doc_ids("users", 0, 3, ORIGIN)
    assert not set(doc_ids("users", 0, 100, ORIGIN)) & set(doc_ids("orders", 0, 100, ORIGIN))


def test_weighted_choices_follow_their_weights() -> None:
    picks = weighted(np.random.default_rng(0), ["a", "b", "c"], [0.7, 0.2, 0.1], 100_000)
    shares = {k: picks.count(k) / len(picks) for k in "abc"}
    assert abs(shares["a"] - 0.7) < 0.01 and abs(shares["b"] - 0.2) < 0.01 and abs(shares["c"] - 0.1) < 0.01


def test_pipeline_file_seeds_in_reference_order() -> None:
    path = ROOT / "pipelines" / "mongo_ecommerce.yaml"
    dag = build_dag(load_spec(path, {}), path)
    needs = {t.name: set(t.needs) for t in dag}
    for coll in PACK.collections.values():
        assert set(coll.references) <= needs[coll.name]
    assert needs["validate"] == set(PACK.collections)


def _validate(tmp_path: Path, tasks: dict[str, Any]) -> str:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "bad", "tasks": tasks}))
    result = CliRunner().invoke(app, ["validate", str(pipeline)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def test_bad_document_pack_wiring_exits_2(tmp_path: Path) -> None:
    text = _validate(tmp_path, {"u": {"uses": "mongo.seed", "with": {"pack": "ecomerce", "collection": "users"}}})
    assert "unknown document pack 'ecomerce'; did you mean 'ecommerce'?" in text
    text = _validate(tmp_path, {"u": {"uses": "mongo.seed", "with": {"pack": "ecommerce", "collection": "user"}}})
    assert "has no collection 'user'; did you mean 'users'?" in text
    text = _validate(tmp_path, {"u": {"uses": "mongo.seed", "with": {"pack": "ecommerce", "collection": "users", "batch_size": 0}}})
    assert "field 'with.batch_size'" in text
    orphaned = {
        "users": {"uses": "mongo.seed", "with": {"pack": "ecommerce", "collection": "users"}},
        "orders": {"uses": "mongo.seed", "needs": ["users"], "with": {"pack": "ecommerce", "collection": "orders"}},
    }
    text = _validate(tmp_path, orphaned)
    assert "task 'orders'" in text and "references products: the task(s) seeding them must be needs" in text
