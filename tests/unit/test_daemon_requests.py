"""Daemon run requests: every dead-letter kind, named with the field and value at fault, and the good paths."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.daemon.requests import BadRequest, RunRequest, parse_request, resolve_spec

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
LIMIT = 1_048_576


def req(**fields: Any) -> bytes:
    return json.dumps({"request_id": "r1", "pipeline": "demo", **fields}).encode()


def bad_parse(value: bytes | None, max_bytes: int = LIMIT) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_request(value, max_bytes)
    return info.value


def bad_resolve(request: RunRequest, pipelines_dir: Path = PIPELINES) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        resolve_spec(request, pipelines_dir)
    return info.value


def inline(tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "adhoc", "tasks": tasks, **extra}


# --- parse_request: the bytes and the model -------------------------------------------------------------------


def test_none_value_is_empty() -> None:
    bad = bad_parse(None)
    assert bad.kind == "empty"
    assert "no value" in str(bad) and bad.request_id is None


def test_oversize_is_dead_lettered_with_the_request_id_from_its_head() -> None:
    value = b'{"request_id": "big-1", "pipeline": "demo", "params": {"x": "' + b"a" * 5000 + b'"}}'
    bad = bad_parse(value, max_bytes=1000)
    assert bad.kind == "oversize"
    assert bad.request_id == "big-1"
    assert f"{len(value):,} bytes" in str(bad) and "1,000" in str(bad)
    assert "DAEMON__MAX_REQUEST_BYTES" in str(bad)


def test_oversize_without_a_visible_request_id_has_none() -> None:
    bad = bad_parse(b'{"pipeline": "demo", "pad": "' + b"a" * 500 + b'"}', max_bytes=256)
    assert bad.kind == "oversize" and bad.request_id is None


def test_exactly_max_bytes_is_not_oversize() -> None:
    value = req()
    assert parse_request(value, len(value)).request_id == "r1"
    assert bad_parse(value, len(value) - 1).kind == "oversize"


def test_not_utf8_names_the_byte_and_offset() -> None:
    value = b'{"request_id": "r\xff1", "pipeline": "demo"}'
    offset = value.index(b"\xff")
    bad = bad_parse(value)
    assert bad.kind == "not_json"
    assert "not UTF-8" in str(bad)
    assert f"byte 0xff at offset {offset}" in str(bad)


def test_not_json_names_line_and_column() -> None:
    bad = bad_parse(b"{not json")
    assert bad.kind == "not_json"
    assert "not JSON" in str(bad) and "line 1, column 2" in str(bad)


def test_json_array_instead_of_object_is_invalid() -> None:
    bad = bad_parse(b'[{"request_id": "r1", "pipeline": "demo"}]')
    assert bad.kind == "invalid"
    assert "JSON object" in str(bad) and "got list" in str(bad)


def test_missing_pipeline_is_missing_field() -> None:
    bad = bad_parse(b'{"request_id": "r1"}')
    assert bad.kind == "missing_field"
    assert "'pipeline'" in str(bad)
    assert bad.request_id == "r1"


def test_wrong_type_priority_is_invalid_and_names_field_and_value() -> None:
    bad = bad_parse(req(priority="high"))
    assert bad.kind == "invalid"
    assert "'priority'" in str(bad) and "'high'" in str(bad)
    assert bad.request_id == "r1"


def test_priority_out_of_range_is_invalid() -> None:
    bad = bad_parse(req(priority=1001))
    assert bad.kind == "invalid" and "'priority'" in str(bad) and "1001" in str(bad)


def test_unknown_field_is_invalid() -> None:
    bad = bad_parse(req(colour="red"))
    assert bad.kind == "invalid"
    assert "'colour'" in str(bad) and "unknown field" in str(bad)


@pytest.mark.parametrize("request_id", ["bad id!", "-leading-dash", "", "x" * 201, "a/b"])
def test_bad_request_id_pattern_is_invalid(request_id: str) -> None:
    bad = bad_parse(req(request_id=request_id))
    assert bad.kind == "invalid"
    assert "'request_id'" in str(bad)


def test_bad_reply_topic_is_invalid() -> None:
    bad = bad_parse(req(reply_topic="no spaces allowed"))
    assert bad.kind == "invalid" and "'reply_topic'" in str(bad)


def test_good_request_parses_with_defaults() -> None:
    request = parse_request(req(), LIMIT)
    assert request.request_id == "r1" and request.pipeline == "demo" and request.pipeline_name == "demo"
    assert request.params == {} and request.priority == 0
    assert request.deadline is None and request.deadline_ts() is None and request.reply_topic is None


# --- deadline -------------------------------------------------------------------------------------------------


def test_naive_deadline_is_treated_as_utc() -> None:
    request = parse_request(req(deadline="2030-01-01T00:00:00"), LIMIT)
    assert request.deadline is not None and request.deadline.tzinfo is None
    assert request.deadline_ts() == datetime(2030, 1, 1, tzinfo=UTC).timestamp()


def test_aware_deadline_keeps_its_offset() -> None:
    request = parse_request(req(deadline="2030-01-01T02:00:00+02:00"), LIMIT)
    assert request.deadline is not None and request.deadline.tzinfo is not None
    assert request.deadline_ts() == datetime(2030, 1, 1, tzinfo=UTC).timestamp()


def test_bad_deadline_is_invalid() -> None:
    bad = bad_parse(req(deadline="next tuesday"))
    assert bad.kind == "invalid" and "'deadline'" in str(bad) and "next tuesday" in str(bad)


# --- resolve_spec: named pipelines ----------------------------------------------------------------------------


def named(pipeline: str, **params: Any) -> RunRequest:
    return RunRequest(request_id="r1", pipeline=pipeline, params=params)


def test_unknown_pipeline_lists_the_known_ones() -> None:
    bad = bad_resolve(named("nosuch"))
    assert bad.kind == "unknown_pipeline"
    assert "'nosuch'" in str(bad) and "demo" in str(bad)
    assert bad.request_id == "r1"


@pytest.mark.parametrize("name", ["../demo", "/etc/passwd", "a/b", "..", "demo/../demo", "./demo", "..demo", ""])
def test_names_that_leave_the_directory_are_bad_pipeline(name: str) -> None:
    bad = bad_resolve(named(name))
    assert bad.kind == "bad_pipeline"
    assert "not a plain name" in str(bad)


def test_symlink_out_of_the_pipelines_dir_is_bad_pipeline(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text((PIPELINES / "demo.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    pipes = tmp_path / "pipelines"
    pipes.mkdir()
    (pipes / "evil.yaml").symlink_to(outside / "secret.yaml")
    bad = bad_resolve(named("evil"), pipes)
    assert bad.kind == "bad_pipeline"
    assert "'evil'" in str(bad) and "leaves the pipelines directory" in str(bad)


def test_symlink_within_the_pipelines_dir_is_allowed(tmp_path: Path) -> None:
    pipes = tmp_path / "pipelines"
    pipes.mkdir()
    (pipes / "demo.yaml").write_text((PIPELINES / "demo.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (pipes / "alias.yaml").symlink_to(pipes / "demo.yaml")
    spec, file = resolve_spec(named("alias"), pipes)
    assert spec.name == "demo" and file == (pipes / "demo.yaml").resolve()


def test_undeclared_param_is_bad_params_and_lists_the_known_ones() -> None:
    bad = bad_resolve(named("demo", colour="red"))
    assert bad.kind == "bad_params"
    assert "params.colour" in str(bad) and "chunk, pause, rows" in str(bad)


def test_wrong_typed_param_is_bad_params() -> None:
    bad = bad_resolve(named("demo", rows="many"))
    assert bad.kind == "bad_params"
    assert "params.rows" in str(bad) and "expected int" in str(bad) and "'many'" in str(bad)


def test_bool_for_an_int_param_is_rejected() -> None:
    bad = bad_resolve(named("demo", rows=True))
    assert bad.kind == "bad_params"
    assert "params.rows" in str(bad) and "bool" in str(bad)


def test_float_for_an_int_param_is_rejected() -> None:
    bad = bad_resolve(named("demo", chunk=2.5))
    assert bad.kind == "bad_params" and "params.chunk" in str(bad)


def test_int_for_a_float_param_is_accepted() -> None:
    spec, _ = resolve_spec(named("demo", pause=1), PIPELINES)
    assert spec.params["pause"] == 1
    assert spec.tasks["wait"].with_["seconds"] == 1


def test_param_that_fails_component_validation_is_bad_spec() -> None:
    bad = bad_resolve(named("demo", pause=-1.0))
    assert bad.kind == "bad_spec"
    assert "'wait'" in str(bad) and "with.seconds" in str(bad)


def test_valid_named_request_returns_the_demo_spec_with_params_applied() -> None:
    spec, file = resolve_spec(named("demo", rows=42, chunk=7), PIPELINES)
    assert spec.name == "demo"
    assert spec.params == {"rows": 42, "chunk": 7, "pause": 0.5}
    assert spec.tasks["count"].with_ == {"total": 42, "chunk": 7}
    assert file == PIPELINES.resolve() / "demo.yaml"
    assert file is not None and file.parent == PIPELINES.resolve()


def test_name_with_yaml_suffix_finds_the_same_file() -> None:
    spec, file = resolve_spec(named("demo.yaml"), PIPELINES)
    assert spec.name == "demo" and file == PIPELINES.resolve() / "demo.yaml"


def test_unreadable_yaml_in_the_pipelines_dir_is_bad_spec(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: x\ntasks: [unclosed\n", encoding="utf-8")
    bad = bad_resolve(named("broken"), tmp_path)
    assert bad.kind == "bad_spec" and "broken.yaml" in str(bad)


# --- resolve_spec: inline specs -------------------------------------------------------------------------------


def inline_request(spec: dict[str, Any], **params: Any) -> RunRequest:
    return RunRequest(request_id="r1", pipeline=spec, params=params)


def test_inline_spec_with_unknown_component_is_bad_spec() -> None:
    bad = bad_resolve(inline_request(inline({"a": {"uses": "demo.nosuch"}})))
    assert bad.kind == "bad_spec"
    assert "'a'" in str(bad) and "demo.nosuch" in str(bad)


def test_inline_spec_reading_the_environment_is_bad_spec() -> None:
    spec = inline({"a": {"uses": "demo.fail", "with": {"message": "${env.HOME}"}}})
    bad = bad_resolve(inline_request(spec))
    assert bad.kind == "bad_spec"
    assert "${env.*}" in str(bad) and "environment" in str(bad)


def test_inline_spec_reading_the_environment_with_a_default_is_bad_spec() -> None:
    spec = inline({"a": {"uses": "demo.sleep"}}, params={"p": "${env.HOME:-x}"})
    assert bad_resolve(inline_request(spec)).kind == "bad_spec"


def test_inline_spec_without_tasks_is_bad_spec() -> None:
    bad = bad_resolve(inline_request({"name": "adhoc"}))
    assert bad.kind == "bad_spec" and "'tasks'" in str(bad)


def test_inline_spec_with_a_cycle_is_bad_spec() -> None:
    bad = bad_resolve(inline_request(inline({"a": {"uses": "demo.sleep", "needs": ["a"]}})))
    assert bad.kind == "bad_spec" and "cycle" in str(bad)


def test_valid_inline_spec_returns_no_file_and_its_name() -> None:
    spec_raw = inline({"a": {"uses": "demo.sleep", "with": {"seconds": "${params.s}"}}}, params={"s": 0.0})
    request = inline_request(spec_raw, s=2)
    assert request.pipeline_name == "adhoc"
    spec, file = resolve_spec(request, PIPELINES)
    assert file is None
    assert spec.name == "adhoc"
    assert spec.params == {"s": 2} and spec.tasks["a"].with_ == {"seconds": 2}


def test_inline_spec_params_are_checked_like_a_files() -> None:
    spec_raw = inline({"a": {"uses": "demo.sleep", "with": {"seconds": "${params.s}"}}}, params={"s": 0.0})
    bad = bad_resolve(inline_request(spec_raw, s="slow"))
    assert bad.kind == "bad_params" and "params.s" in str(bad)
    bad = bad_resolve(inline_request(spec_raw, t=1))
    assert bad.kind == "bad_params" and "params.t" in str(bad) and "known: s" in str(bad)


def test_request_from_bytes_resolves_end_to_end() -> None:
    request = parse_request(req(params={"rows": 10}, priority=5), LIMIT)
    spec, file = resolve_spec(request, PIPELINES)
    assert spec.params["rows"] == 10 and file == PIPELINES.resolve() / "demo.yaml"
    assert request.priority == 5


# --- a small but deeply nested request is refused before anything recurses over it ------------------------------


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    bad = bad_parse(b"[" * 100_000)  # 100 kB, well under the default 1 MiB limit: json.loads would overflow
    assert bad.kind == "invalid" and "nested deeper than" in str(bad)


def test_deeply_nested_inline_spec_is_refused_at_parse() -> None:
    nested: Any = 1
    for _ in range(600):
        nested = {"a": nested}
    spec = {"name": "x", "tasks": {"a": {"uses": "demo.sleep", "with": {"x": nested}}}}
    body = {"request_id": "deep-1", "pipeline": spec}
    raw = json.dumps(body).encode()
    assert len(raw) < 10_000
    bad = bad_parse(raw)
    assert bad.kind == "invalid" and "nested deeper than" in str(bad) and bad.request_id == "deep-1"


def test_priority_must_be_an_integer_not_a_boolean() -> None:
    bad = bad_parse(json.dumps({"request_id": "p1", "pipeline": "demo", "priority": True}).encode())
    assert bad.kind == "invalid" and "priority" in str(bad)


def test_a_trailing_newline_does_not_pass_as_a_plain_name() -> None:
    request = parse_request(json.dumps({"request_id": "n1", "pipeline": "demo\n"}).encode(), LIMIT)
    assert bad_resolve(request).kind == "bad_pipeline"


def test_an_invalid_request_id_is_not_carried_into_the_reply() -> None:
    bad = bad_parse(json.dumps({"request_id": "bad id!", "pipeline": "demo", "priority": "x"}).encode())
    assert bad.request_id is None


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e400", "-1e999"])
def test_non_finite_numbers_are_refused(number: str) -> None:
    """json.loads takes Infinity and 1e400 (inf): a sleep of inf seconds would hold a run slot for ever."""
    raw = f'{{"request_id": "inf-1", "pipeline": "demo", "params": {{"pause": {number}}}}}'.encode()
    bad = bad_parse(raw)
    assert bad.kind == "invalid" and "finite" in str(bad)
