"""The Python API (dag_pipeline): handles make edges and streams, building raises one PipelineError naming
the task and the field, a run is a CLI run (run directory, report, resume, closers released)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

import dag_pipeline as dp
from config.settings import Settings
from pipeline.registry import build_dag
from pipeline.spec import PipelineSpec, SpecError


class MarkerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    marker: str


class FailsUntilMarker(dp.Component[MarkerParams]):
    """A component written outside the project: fails until its marker file exists."""

    __slots__ = ()
    component = "test.fails_until_marker"
    Result = dict

    async def run(self, ctx: dp.PipelineContext) -> dict[str, str]:
        ctx.services.on_close(lambda: Path(self.params.marker + ".closed").touch())
        if not Path(self.params.marker).exists():
            raise RuntimeError("no marker yet")
        return {"marker": self.params.marker}


class NeedsBroker(dp.Component[dp.NoParams]):
    __slots__ = ()
    component = "test.needs_broker"

    def settings_problem(self, settings: Any) -> str | None:
        return "TEST__BROKER is not set"

    async def run(self, ctx: dp.PipelineContext) -> None:
        return None


def test_passing_a_handle_makes_the_edge_and_names_are_unique() -> None:
    p = dp.Pipeline("edges")
    a = p.step("demo.sleep", seconds=0)
    b = p.step("demo.sleep", a, seconds=0)
    c = p.step("demo.sleep", a, b, name="last", seconds=0)
    dag = p.build()
    assert (a.name, b.name, c.name) == ("sleep", "sleep_2", "last")
    assert dag.task("sleep_2").needs == ("sleep",) and dag.task("last").needs == ("sleep", "sleep_2")
    assert dag.task("sleep_2").streams_from == ()  # demo.sleep emits no stream


def test_a_stream_edge_is_inferred_the_same_way_for_python_and_yaml() -> None:
    p = dp.Pipeline("streams")
    count = p.step("demo.count", total=10, chunk=5)
    total = p.step("demo.sum", count)
    assert p.build().task(total.name).streams_from == ("count",)
    spec = PipelineSpec.model_validate(
        {"name": "streams", "tasks": {"count": {"uses": "demo.count"}, "sum": {"uses": "demo.sum", "needs": ["count"]}}}
    )
    assert build_dag(spec, "s.yaml").task("sum").streams_from == ("count",)


def test_a_miswired_pipeline_names_the_task_and_field() -> None:
    p = dp.Pipeline("miswired")
    p.step("storage.upload", p.step("demo.count", total=3), name="upload")  # a dict, not a Manifest
    with pytest.raises(dp.PipelineError) as caught:
        p.build()
    assert (caught.value.task, caught.value.field) == ("upload", "needs")
    assert "needs a task producing Manifest" in str(caught.value) and "task 'upload'" in str(caught.value)


def test_bad_params_name_the_field() -> None:
    p = dp.Pipeline("bad")
    p.step("demo.count", total="many")
    with pytest.raises(dp.PipelineError) as caught:
        p.build()
    assert (caught.value.task, caught.value.field) == ("count", "total")
    assert "valid integer" in str(caught.value) and "'many'" in str(caught.value)
    typo = dp.Pipeline("typo")
    typo.step("demo.count", totl=3)
    with pytest.raises(dp.PipelineError, match="field 'totl': unknown parameter"):
        typo.build()


def test_unknown_component_unknown_need_and_cycle_are_pipeline_errors() -> None:
    with pytest.raises(dp.PipelineError, match=r"unknown component 'demo\.coutn'; did you mean 'demo\.count'"):
        dp.Pipeline("x").step("demo.coutn")
    p = dp.Pipeline("needs")
    p.step("demo.sleep", "nowhere", name="a")
    with pytest.raises(dp.PipelineError, match="needs 'nowhere', which is not a task") as caught:
        p.build()
    assert caught.value.field == "needs"
    cyc = dp.Pipeline("cycle")
    cyc.step("demo.sleep", "b", name="a")
    cyc.step("demo.sleep", "a", name="b")
    with pytest.raises(dp.PipelineError, match="has a cycle"):
        cyc.build()


def test_spec_errors_are_pipeline_errors_in_the_files_terms() -> None:
    spec = PipelineSpec.model_validate({"name": "y", "tasks": {"a": {"uses": "demo.count", "with": {"total": "x"}}}})
    with pytest.raises(SpecError) as caught:
        build_dag(spec, "y.yaml")
    assert isinstance(caught.value, dp.PipelineError)
    assert str(caught.value).startswith("y.yaml: task 'a': field 'with.total': ")


def test_validate_checks_settings_and_returns_retry_warnings() -> None:
    p = dp.Pipeline("checks")
    p.step(NeedsBroker, name="sink")
    with pytest.raises(dp.PipelineError, match="task 'sink': TEST__BROKER is not set"):
        p.validate(Settings())
    p.build()  # without settings, configuration is not checked
    warned = dp.Pipeline("warned")
    count = warned.step("demo.count", total=1).options(retries=2)
    warned.step("demo.sum", count)
    ((task, warning),) = warned.validate(Settings())
    assert task == "count" and "streams" in warning


def test_a_failed_python_run_resumes_and_releases_its_closers(tmp_path: Path) -> None:
    calls = tmp_path / "calls"

    async def first(ctx: dp.PipelineContext) -> int:
        with calls.open("a") as f:
            f.write("x")
        return 1

    marker = tmp_path / "marker"
    p = dp.Pipeline("resumable", params={"n": 1})
    head = p.step(first)
    p.step(FailsUntilMarker, head, name="flaky", marker=str(marker))
    failed = p.run(tmp_path / "runs", settings=Settings())
    assert not failed.ok and failed.result.tasks["flaky"].state is dp.TaskState.FAILED
    assert (tmp_path / "marker.closed").exists()  # released although the run failed
    report = json.loads(failed.report.read_text())
    assert report["state"] == "failed" and report["params"] == {"n": 1}
    assert json.loads((failed.path / "request.json").read_text())["file"] == "<python:resumable>"

    marker.touch()
    (tmp_path / "marker.closed").unlink()
    again = p.run(tmp_path / "runs", resume=failed.run_id, settings=Settings())
    assert again.ok and again.path == failed.path and again.run_id == failed.run_id
    assert again[head] == 1 and again["flaky"] == {"marker": str(marker)}
    assert calls.read_text() == "x"  # the step that succeeded was not run again
    assert (tmp_path / "marker.closed").exists()
    with pytest.raises(dp.PipelineError, match="no run found"):
        p.run(tmp_path / "runs", resume="nope", settings=Settings())


@pytest.mark.anyio
async def test_run_inside_an_event_loop_points_to_run_async(tmp_path: Path) -> None:
    p = dp.Pipeline("loop")
    p.step("demo.sleep", seconds=0)
    with pytest.raises(RuntimeError, match="run_async"):
        p.run(tmp_path)
    run = await p.run_async(tmp_path, settings=Settings())
    assert run.ok and run["sleep"] == 0


def test_handles_belong_to_their_pipeline() -> None:
    other = dp.Pipeline("other").step("demo.sleep")
    with pytest.raises(dp.PipelineError, match="is a step of pipeline 'other'"):
        dp.Pipeline("mine").step("demo.sleep", other)


def python_streaming() -> dp.Pipeline:
    """docs/python.md's streaming pipeline: steps in data order, each stage reading the one before."""
    p = dp.Pipeline("streaming")
    consume = p.step("source.kafka", name="consume", max_records=10_000)
    clean = p.step("standardize", consume, mapping={"CustomerID": "customer_id"}, fields={"email": ["trim", "email"]})
    checked = p.step("quality.check", clean, name="quality", rules=[{"name": "id", "type": "not_null", "field": "customer_id"}])
    mongo = p.step("sink.mongodb", checked, name="mongodb", key=["customer_id"])
    out = p.step("sink.kafka", checked, name="kafka_out", key=["customer_id"])
    p.step("sink.dead_letter", consume, clean, checked, mongo, out, name="dead_letter")
    return p


def test_the_documented_streaming_pipeline_is_wired_like_the_yaml_file() -> None:
    from pipeline.spec import load_spec

    yaml_file = Path(__file__).resolve().parents[2] / "pipelines" / "streaming.yaml"
    from_yaml = build_dag(load_spec(yaml_file), yaml_file)
    from_python = python_streaming().build()

    def shape(dag: Any) -> dict[str, Any]:
        return {t.name: (t.component, set(t.needs), set(t.streams_from)) for t in dag}

    assert shape(from_python) == shape(from_yaml)
    assert from_python.task("quality").streams_from == ("standardize",)


def test_plain_async_functions_and_tasks_are_steps(tmp_path: Path) -> None:
    @dp.task(emits_stream=True)
    async def numbers(ctx: dp.PipelineContext) -> int:
        for i in range(3):
            await ctx.emit([i, i])
        return 3

    @dp.task(needs=["numbers"], streams_from=["numbers"])
    async def total(ctx: dp.PipelineContext) -> int:
        return sum([sum(chunk) async for chunk in ctx.stream("numbers")])

    async def doubled(ctx: dp.PipelineContext) -> int:
        return 2 * int(ctx.result("total"))

    p = dp.Pipeline("plain")
    p.step(total, p.step(numbers))
    last = p.step(doubled, "total")
    with pytest.raises(dp.PipelineError, match="a plain task takes no parameters"):
        p.step(doubled, factor=2)
    run = p.run(tmp_path, settings=Settings())
    assert run.ok and run[last] == 12 and run["total"] == 6
