"""A stage's watched ``config_file``: a change applies from the next batch, a bad file is refused and the
configuration in use kept, what changed is logged by path, the duplicate window survives a reload.

The broker-side guarantee (every record once, across a reload and a refusal) is
tests/integration/test_stream_reload.py; these check the rules of the reload itself (no services).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from pipeline.registry import build_dag
from pipeline.spec import SpecError, load_spec
from task_components.contracts import StreamBatch, StreamRecord
from task_components.quality import QualityParams, QualityStage
from task_components.standardization import StandardizeParams, StandardizeStage
from task_components.streaming import reload
from task_components.streaming.reload import Reloading, describe_changes

SHIPPED = Path(__file__).resolve().parents[2] / "pipelines" / "streaming.yaml"
RULE = {"name": "small_x", "type": "range", "field": "x", "max": 5}


class Log:
    """The events a reload logs, as (event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    error = info

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kw for e, kw in self.events if e == event]


def replace(path: Path, text: str) -> None:
    """Write beside the watched file and rename over it (a rename always changes the signature)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def batch(seq: int, *values: dict[str, Any]) -> StreamBatch:
    return StreamBatch(seq, [StreamRecord("t", 0, i, b"", v, f"c{i}") for i, v in enumerate(values)])


def rejected(b: StreamBatch) -> list[str | None]:
    return [r.rejection and r.rejection.rule for r in b.records]


def quality(tmp_path: Path, content: dict[str, Any], suffix: str = ".yaml", **inline: Any) -> tuple[Path, Reloading, Log]:
    path = tmp_path / f"quality{suffix}"
    replace(path, json.dumps(content) if suffix == ".json" else yaml.safe_dump(content))
    log = Log()
    params = QualityParams.model_validate({"config_file": str(path), **inline})
    return path, Reloading("quality", params, QualityStage, log), log


def test_a_changed_rule_file_applies_from_the_next_batch_and_logs_what_changed(tmp_path: Path) -> None:
    path, process, log = quality(tmp_path, {"rules": [RULE, {"name": "has_y", "type": "not_null", "field": "y"}]})
    first = batch(0, {"x": 4, "y": 1}, {"x": 9, "y": 1})
    process(first)
    assert rejected(first) == [None, "small_x"]
    replace(path, yaml.safe_dump({"rules": [{**RULE, "max": 3}, {"name": "x_int", "type": "type", "field": "x", "expected": "int"}]}))
    assert rejected(first) == [None, "small_x"], "a finished batch is never processed again"
    second = batch(1, {"x": 4}, {"x": 2.5}, {"x": 2})
    process(second)
    assert rejected(second) == ["small_x", "x_int", None]
    [event] = log.named("stage_config_reloaded")
    assert event["from_batch"] == 1 and event["from_record"] == "t:0@0" and event["file"] == str(path)
    assert event["changed"] == ["rules.small_x.max: 5.0 -> 3.0"]
    assert event["added"] == ["rules.x_int"] and event["removed"] == ["rules.has_y"]


def test_standardize_reloads_its_fields_and_mapping(tmp_path: Path) -> None:
    path = tmp_path / "standardize.json"
    replace(path, '{"fields": {"name": ["trim"]}}')
    log = Log()
    params = StandardizeParams.model_validate({"config_file": str(path), "mapping": {"full_name": "name"}})
    process = Reloading("standardize", params, StandardizeStage, log)
    first = batch(0, {"full_name": " ada "})
    process(first)
    replace(path, '{"fields": {"name": ["trim", "upper"]}, "types": {"age": "int"}}')
    second = batch(1, {"full_name": " ada ", "age": "7"})
    process(second)
    assert [r.value for r in first.records + second.records] == [{"name": "ada"}, {"name": "ADA", "age": 7}]
    [event] = log.named("stage_config_reloaded")
    assert event["changed"] == ["fields.name: ['trim'] -> ['trim', 'upper']"] and event["added"] == ["types.age"]


@pytest.mark.parametrize(
    ("suffix", "text", "fault"),
    [
        (".yaml", "rules: [\n", "YAML syntax error at line 2"),
        (".json", '{"rules": [}', "JSON syntax error at line 1, column 12"),
        (".yaml", "rules:\n  - {name: t, type: no_such_rule, field: x}\n", "rules.0: Input tag 'no_such_rule'"),
        (".yaml", "rulez: []\n", "rulez: unknown key (check its spelling)"),
        (".yaml", "rules:\n  - {name: r, type: range, field: x}\n", "rules.0.range: Value error, a range rule needs min, max or both"),
        (".yaml", "", "the file is empty"),
        (".yaml", "- a list\n", "expected a mapping of the stage's settings, got list"),
        (".yaml", "max_invalid_share: 0.1\n", "'max_invalid_share' is set both in the pipeline (with:) and in this file"),
        (".yaml", "config_file: other.yaml\n", "'config_file' belongs in the pipeline file"),
    ],
)
def test_a_bad_new_file_is_refused_once_and_the_rules_in_use_kept(tmp_path: Path, suffix: str, text: str, fault: str) -> None:
    path, process, log = quality(tmp_path, {"rules": [RULE]}, suffix, max_invalid_share=1.0)
    replace(path, text)
    for seq in (1, 2):  # logged once per version of the file, not per batch
        b = batch(seq, {"x": 9})
        process(b)
        assert rejected(b) == ["small_x"]
    [event] = log.named("stage_config_refused")
    assert event["file"] == str(path) and fault in event["fault"], event["fault"]
    assert not log.named("stage_config_reloaded")


def test_a_deleted_file_is_refused_and_a_fixed_one_taken(tmp_path: Path) -> None:
    path, process, log = quality(tmp_path, {"rules": [RULE]})
    path.unlink()
    process(batch(1, {"x": 9}))
    assert log.named("stage_config_refused")[0]["fault"] == "no such file"
    replace(path, yaml.safe_dump({"rules": [RULE]}))  # the version in use again: nothing changes
    process(batch(2, {"x": 9}))
    assert [e for e, _ in log.events] == ["stage_config_refused", "stage_config_unchanged"]
    replace(path, yaml.safe_dump({"rules": [{**RULE, "max": 10}]}))
    last = batch(3, {"x": 9})
    process(last)
    assert rejected(last) == [None] and log.named("stage_config_reloaded")[0]["from_batch"] == 3


def test_a_file_changing_while_read_is_read_again_at_the_next_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, process, log = quality(tmp_path, {"rules": [RULE]})
    replace(path, yaml.safe_dump({"rules": [{**RULE, "max": 10}]}))
    real, ticks = reload.signature, itertools.count()
    monkeypatch.setattr(reload, "signature", lambda p: (*real(p)[:2], next(ticks)))  # every stat differs: a writer at work
    during = batch(1, {"x": 9})
    process(during)
    assert rejected(during) == ["small_x"] and log.events == [], "half a file is neither applied nor refused"
    monkeypatch.undo()
    after = batch(2, {"x": 9})
    process(after)
    assert rejected(after) == [None] and log.named("stage_config_reloaded")[0]["from_batch"] == 2


def test_the_duplicate_window_survives_a_reload_unless_the_key_changes(tmp_path: Path) -> None:
    path, process, log = quality(tmp_path, {"duplicates": {"key": ["id"]}})
    process(batch(0, {"id": 1, "other": 1}))
    replace(path, yaml.safe_dump({"duplicates": {"key": ["id"], "window": 10}, "rules": [RULE]}))
    again = batch(1, {"id": 1, "other": 2})
    process(again)
    assert again.records[0].duplicate, "a key seen before the reload is still a duplicate after it"
    assert log.named("stage_config_reloaded")[0]["note"] == "duplicate window kept (1 keys)"
    replace(path, yaml.safe_dump({"duplicates": {"key": ["other"]}}))
    fresh = batch(2, {"id": 1, "other": 1})
    process(fresh)
    assert not fresh.records[0].duplicate
    assert log.named("stage_config_reloaded")[1]["note"] == "duplicate window restarted: key ['id'] -> ['other']"


def test_rules_are_compared_by_name_and_a_new_order_is_a_change() -> None:
    a, b = {"name": "a", "max": 1}, {"name": "b", "max": 2}
    assert describe_changes({"rules": [a, b]}, {"rules": [a, b]}) == {"added": [], "removed": [], "changed": []}
    assert describe_changes({"rules": [a, b]}, {"rules": [b, a]})["changed"] == ["rules order: ['a', 'b'] -> ['b', 'a']"]
    assert describe_changes({"rules": [a]}, {"rules": []}) == {"added": [], "removed": ["rules.a"], "changed": []}
    assert describe_changes({"rules": [a], "share": 0.5}, {"rules": [{**a, "max": 3}], "share": 0.4})["changed"] == [
        "rules.a.max: 1 -> 3",
        "share: 0.5 -> 0.4",
    ]


def test_validate_reads_the_file_and_names_it_with_the_fault(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: t, type: no_such_rule}\n")
    with pytest.raises(ValidationError, match=f"config_file {rules}: rules.0: Input tag 'no_such_rule'"):
        QualityParams.model_validate({"config_file": str(rules)})
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["tasks"]["quality"]["with"] = {"config_file": str(rules)}
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match="no_such_rule") as caught:
        build_dag(load_spec(pipeline), pipeline)
    assert str(rules) in str(caught.value) and "quality" in str(caught.value)


def test_a_stage_starts_with_the_file_merged_into_its_settings(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [RULE]}))
    params = QualityParams.model_validate({"config_file": str(rules), "max_invalid_share": 0.3, "reload": False})
    start = params.effective()
    assert [r.name for r in start.rules] == ["small_x"] and start.max_invalid_share == 0.3 and start.config_file is None
    assert params.rules == [], "the task's own parameters stay what with: said"
