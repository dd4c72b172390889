"""The Python API's defects a review found, each pinned: the caller's signal handlers survive a run, a Task
is never edited by a build, the run directory's lock is released however a run ends, every refusal is a
PipelineError naming the field, a resume belongs to its pipeline, Ctrl-C is a KeyboardInterrupt, task names
cannot leave the run directory, and a component's parameter type is what its class says."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel, ConfigDict

import dag_pipeline as dp
from config.settings import Settings
from dag_orchestrator.locks import PathLock
from pipeline.registry import build_dag
from pipeline.runner import RunOptions, execute, prepare_pipeline, prepare_run
from pipeline.spec import PipelineSpec, SpecError


class NParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = 1


class Counts(dp.Component[NParams]):
    __slots__ = ()
    component = "test.counts"

    async def run(self, ctx: dp.PipelineContext) -> int:
        return self.params.n


async def one(ctx: dp.PipelineContext) -> int:
    return 1


async def two(ctx: dp.PipelineContext) -> int:
    return 2


def params_of(task: dp.Task) -> BaseModel:
    assert isinstance(task, dp.Component)
    return task.params


def pipeline(name: str = "p") -> dp.Pipeline:
    p = dp.Pipeline(name)
    p.step(two, p.step(one))
    return p


@pytest.fixture
def own_handlers() -> Iterator[dict[signal.Signals, Any]]:
    """The test's own SIGTERM/SIGINT handlers, put back afterwards whatever the run did."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield saved
    for s, handler in saved.items():
        signal.signal(s, handler)


# -- 1. signals -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("handle_signals", [None, True])
def test_a_run_leaves_the_callers_signal_handlers_in_place(
    tmp_path: Path, own_handlers: dict[signal.Signals, Any], handle_signals: bool | None
) -> None:
    def mine(*_: object) -> None: ...

    signal.signal(signal.SIGTERM, mine)
    assert pipeline().run(tmp_path, settings=Settings(), handle_signals=handle_signals).ok
    assert signal.getsignal(signal.SIGTERM) is mine
    assert signal.getsignal(signal.SIGINT) is own_handlers[signal.SIGINT]


def test_an_asyncio_apps_loop_handler_survives_run_async(tmp_path: Path, own_handlers: dict[signal.Signals, Any]) -> None:
    async def main() -> list[str]:
        got: list[str] = []
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, got.append, "app")
        try:
            for handle_signals in (None, True):
                assert (await pipeline().run_async(tmp_path, settings=Settings(), handle_signals=handle_signals)).ok
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.2)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
        return got

    assert asyncio.run(main()) == ["app"]


def test_ctrl_c_raises_keyboard_interrupt_after_the_report(tmp_path: Path, own_handlers: dict[signal.Signals, Any]) -> None:
    async def interrupts(ctx: dp.PipelineContext) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await anyio.sleep(30)

    p = dp.Pipeline("ctrl_c")
    p.step(interrupts, p.step(one))
    with pytest.raises(KeyboardInterrupt, match="interrupted"):
        p.run(tmp_path, settings=Settings(), handle_signals=True)
    (run,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    assert '"cancelled"' in (run / "report.json").read_text()
    assert signal.getsignal(signal.SIGINT) is own_handlers[signal.SIGINT]


# -- 2, 3, 8. tasks as steps --------------------------------------------------------------------------------
def test_building_never_edits_a_task_and_options_apply_to_a_copy() -> None:
    first = dp.task(one, name="a")
    second = dp.task(two, name="b", needs=["a"])
    p1 = dp.Pipeline("p1")
    p1.step(second, p1.step(first))
    p2 = dp.Pipeline("p2")
    p2.step(first).options(retries=3, retry_delay=0.5, timeout=2, kind="io")
    p2.step(second, p2.step(one, name="c"))
    dag = p2.build()
    assert second.needs == ("a",) and first.retry.attempts == 1 and first.timeout is None
    assert dag.task("b").needs == ("a", "c")
    a = dag.task("a")
    assert (a.retry.attempts, a.retry.backoff, a.timeout, a.kind) == (4, 0.5, 2, "io")
    assert p1.build().task("b").needs == ("a",)  # p2 did not change p1
    f = dp.Pipeline("f")
    f.step(one).options(retries=2)
    assert f.build().task("one").retry.attempts == 3


def test_the_same_task_twice_is_refused_naming_the_step() -> None:
    t = dp.task(one, name="a")
    p = dp.Pipeline("q")
    p.step(t)
    with pytest.raises(dp.PipelineError, match="already step 'a'") as err:
        p.step(t)
    assert err.value.task == "a"
    g = p.step(one, name="g")
    used = p.step(two, g, g)
    assert p.build().task(used.name).needs == ("g",)  # a handle twice is one need


# -- 4, 5, 7. refusals are PipelineErrors, the lock is always released ----------------------------------------
def test_the_run_lock_is_released_when_execute_fails_before_the_run(tmp_path: Path) -> None:
    prepared = prepare_pipeline(pipeline(), RunOptions(run_dir=tmp_path))
    with pytest.raises(ValueError, match="max_concurrency"):
        anyio.run(execute, prepared, Settings(), RunOptions(run_dir=tmp_path, max_concurrency=-3))
    PathLock(prepared.path / ".lock", "run directory").acquire(run_id="again").release()


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: dp.Pipeline("x", max_concurrency=0), "max_concurrency"),
        (lambda: dp.Pipeline("x", kind_limits={"io": "many"}), "kind_limits.io"),  # type: ignore[dict-item]  # wrong on purpose
        (lambda: dp.Pipeline("x", kind_limits={"io": 0}), "kind_limits.io"),
    ],
)
def test_pipeline_settings_the_run_would_reject_fail_the_build(make: Any, field: str) -> None:
    p = make()
    p.step(one)
    with pytest.raises(dp.PipelineError) as err:
        p.build()
    assert err.value.field == field


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": 2, "retry_delay": -1}, "retry_delay"),
        ({"timeout": 0}, "timeout"),
        ({"retries": 1.5}, "retries"),
        ({"kind": ""}, "kind"),
    ],
)
def test_bad_options_are_pipeline_errors(options: dict[str, Any], field: str) -> None:
    for source in ("demo.sleep", one):
        p = dp.Pipeline("x")
        p.step(source).options(**options)
        with pytest.raises(dp.PipelineError) as err:
            p.build()
        assert err.value.field == field


def test_bad_policy_and_run_options_are_pipeline_errors(tmp_path: Path) -> None:
    with pytest.raises(dp.PipelineError, match="policy") as err:
        dp.Pipeline("x", policy="bogus")
    assert err.value.field == "policy"
    for kwargs in ({"policy": "bogus"}, {"max_concurrency": 0}, {"backend": "nope"}):
        with pytest.raises(dp.PipelineError) as err:
            pipeline().run(tmp_path, settings=Settings(), **kwargs)
        assert err.value.field == next(iter(kwargs))
    assert not list(tmp_path.iterdir())  # refused before any run directory


def test_a_partial_and_an_unnamed_component_are_steps() -> None:
    async def scaled(ctx: dp.PipelineContext, n: int = 1) -> int:
        return n

    class Unnamed(dp.Component[NParams]):
        async def run(self, ctx: dp.PipelineContext) -> int:
            return self.params.n

    p = dp.Pipeline("x")
    assert p.step(functools.partial(scaled, n=2)).name == "scaled"
    assert p.step(Unnamed, n=3).name == "Unnamed"
    assert params_of(p.build().task("Unnamed")) == NParams(n=3)


def test_a_parameter_given_twice_is_refused() -> None:
    with pytest.raises(dp.PipelineError, match="both") as err:
        dp.Pipeline("x").step(Counts, params={"n": 1}, n=2)
    assert err.value.field == "n"


# -- 6. resume belongs to its pipeline ---------------------------------------------------------------------
def test_a_resume_by_another_pipeline_or_the_cli_is_refused(tmp_path: Path) -> None:
    run = pipeline("p").run(tmp_path, settings=Settings())
    with pytest.raises(dp.PipelineError, match="run of pipeline 'p', not of 'other'"):
        pipeline("other").run(tmp_path, resume=run.run_id, settings=Settings())
    reshaped = dp.Pipeline("p")
    reshaped.step(one)
    with pytest.raises(dp.PipelineError, match=r"it ran tasks \['one', 'two'\], this pipeline has \['one'\]"):
        reshaped.run(tmp_path, resume=run.run_id, settings=Settings())
    with pytest.raises(SpecError, match=r"came from the Python pipeline 'p'.*p\.run\(\.\.\., resume="):
        prepare_run("pipelines/quickstart.yaml", {}, RunOptions(run_dir=tmp_path, resume=run.run_id))
    assert pipeline("p").run(tmp_path, resume=run.run_id, settings=Settings()).ok


# -- 10. task names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escaped", "a/b", ".hidden", "-x", "a b", "", "x" * 101, 5])
def test_a_task_name_that_is_no_safe_file_name_is_refused(name: Any) -> None:
    with pytest.raises(dp.PipelineError) as err:
        dp.Pipeline("x").step(one, name=name)
    assert err.value.field == "name"
    if not isinstance(name, str):
        return  # a YAML key is always a string
    spec = PipelineSpec.model_validate({"name": "y", "tasks": {str(name): {"uses": "demo.sleep"}}})
    with pytest.raises(SpecError) as spec_err:
        build_dag(spec, "y.yaml")
    assert spec_err.value.field == "name"


def test_a_task_name_with_brackets_is_fine() -> None:
    assert dp.Pipeline("x").step(one, name="ok[dask]_1.v-2").name == "ok[dask]_1.v-2"


# -- 11, 12. component parameters ---------------------------------------------------------------------------
def test_a_component_instance_has_its_params_validated() -> None:
    p = dp.Pipeline("ci")
    p.step(Counts("e", {"n": "x"}))  # type: ignore[arg-type]  # the wrong type is the point
    with pytest.raises(dp.PipelineError) as err:
        p.build()
    assert (err.value.task, err.value.field) == ("e", "n")
    q = dp.Pipeline("ci")
    q.step(Counts("e", {"n": "3"}))  # type: ignore[arg-type]  # a mapping is validated into the model
    assert params_of(q.build().task("e")) == NParams(n=3)


def test_a_component_whose_params_contradict_its_type_is_a_type_error() -> None:
    class Other(BaseModel):
        m: int = 0

    with pytest.raises(TypeError, match="Mismatched: Params = Other but the class is Component\\[NParams\\]"):

        class Mismatched(dp.Component[NParams]):
            Params = Other

    with pytest.raises(TypeError, match="NotAModel: Component\\[int\\] needs a pydantic model"):

        class NotAModel(dp.Component[int]):  # type: ignore[type-var]  # the wrong type is the point
            pass

    class Narrower(NParams):
        pass

    class Fine(dp.Component[NParams]):
        Params = Narrower

    assert Fine.Params is Narrower


def test_components_returns_a_copy() -> None:
    found = dp.components()
    found["generate"] = Counts
    assert dp.components()["generate"] is not Counts


def test_an_unknown_component_names_the_pipeline_and_the_task() -> None:
    with pytest.raises(dp.PipelineError, match="pipeline 'x': task 'generat': field 'uses': unknown component") as err:
        dp.Pipeline("x").step("generat")
    assert (err.value.pipeline, err.value.task, err.value.field) == ("x", "generat", "uses")


def test_the_cli_resume_of_a_python_run_by_its_own_name_points_to_python(tmp_path: Path) -> None:
    run = pipeline("p").run(tmp_path, settings=Settings())
    with pytest.raises(SpecError, match=r"came from the Python pipeline 'p'.*p\.run\(\.\.\., resume="):
        prepare_run("<python:p>", {}, RunOptions(run_dir=tmp_path, resume=run.run_id))
