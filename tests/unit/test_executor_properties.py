"""Scheduling properties over random DAGs (hypothesis): checked on state transitions, no I/O."""

from __future__ import annotations

from pathlib import Path

import anyio
import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from dag_orchestrator import Executor, StateStore, TaskState
from tests.unit.dagtools import Recorder, build


@st.composite
def random_dags(draw: st.DrawFn, max_tasks: int = 25) -> dict[str, list[str]]:
    n = draw(st.integers(1, max_tasks))
    spec: dict[str, list[str]] = {}
    for i in range(n):
        earlier = [f"t{j}" for j in range(i)]
        spec[f"t{i}"] = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=4)) if earlier else []
    return spec


def graph_of(spec: dict[str, list[str]]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(spec)
    g.add_edges_from((need, name) for name, needs in spec.items() for need in needs)
    return g


@settings(max_examples=60, deadline=None)
@given(spec=random_dags(), limit=st.integers(1, 6), steps=st.lists(st.integers(0, 3), min_size=25, max_size=25))
def test_every_task_runs_once_after_its_needs_within_the_limit(spec, limit, steps) -> None:
    rec = Recorder()
    dag = build(spec, rec, **{n: {"steps": steps[i]} for i, n in enumerate(spec)})
    result = anyio.run(Executor(max_concurrency=limit).run, dag)
    assert result.ok
    for name, needs in spec.items():
        assert len(rec.started(name)) == 1
        start = rec.events.index(("start", name))
        for need in needs:
            assert rec.events.index(("end", need)) < start, f"{name} started before {need} ended"
    assert rec.peak <= limit


@settings(max_examples=60, deadline=None)
@given(spec=random_dags(), data=st.data())
def test_fail_fast_starts_nothing_after_a_failure(spec, data) -> None:
    failing = data.draw(st.sampled_from(sorted(spec)))
    rec = Recorder()
    dag = build(spec, rec, **{failing: {"fails": 1}})
    result = anyio.run(Executor(max_concurrency=3, policy="fail_fast").run, dag)
    assert result.tasks[failing].state is TaskState.FAILED
    assert not result.ok
    fail_end = rec.events.index(("end", failing))
    assert not [n for e, n in rec.events[fail_end:] if e == "start"], "a task started after the failure"
    for name, run in result.tasks.items():
        if name != failing:
            assert run.state in (TaskState.SUCCEEDED, TaskState.CANCELLED)


@settings(max_examples=60, deadline=None)
@given(spec=random_dags(), data=st.data())
def test_continue_skips_exactly_the_dependents_of_failures(spec, data) -> None:
    failing = set(data.draw(st.lists(st.sampled_from(sorted(spec)), unique=True, min_size=1, max_size=3)))
    g = graph_of(spec)
    rec = Recorder()
    dag = build(spec, rec, **{n: {"fails": 1} for n in failing})
    result = anyio.run(Executor(max_concurrency=4, policy="continue").run, dag)
    doomed = set().union(*(nx.descendants(g, f) for f in failing))
    for name, run in result.tasks.items():
        if name in failing and name not in doomed:
            assert run.state is TaskState.FAILED
        elif name in doomed:
            assert run.state is TaskState.SKIPPED, name
            assert not rec.started(name)
        else:
            assert run.state is TaskState.SUCCEEDED, name


@settings(max_examples=40, deadline=None)
@given(spec=random_dags(max_tasks=15), data=st.data())
def test_resume_skips_exactly_the_succeeded_tasks(tmp_path_factory, spec, data) -> None:
    run_dir: Path = tmp_path_factory.mktemp("run")
    failing = data.draw(st.sampled_from(sorted(spec)))
    store = StateStore(run_dir)
    first = Recorder()
    r1 = anyio.run(lambda: Executor(max_concurrency=2, policy="continue").run(build(spec, first, **{failing: {"fails": 1}}), store=store))
    succeeded = {n for n, r in r1.tasks.items() if r.state is TaskState.SUCCEEDED}
    second = Recorder()
    r2 = anyio.run(lambda: Executor(max_concurrency=2).run(build(spec, second), store=store, resume=True))
    assert r2.ok
    assert set(second.order("start")) == set(spec) - succeeded
    assert {n for n, r in r2.tasks.items() if r.resumed} == succeeded
    for name in succeeded:
        assert r2.results[name] == name.upper()
