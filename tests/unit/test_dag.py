from __future__ import annotations

from typing import Any

import pytest

from dag_orchestrator import DAG, DAGValidationError, Task, task


def t(name: str, needs: list[str] | None = None, **kw: Any) -> Task:
    return Task(name, needs or [], **kw)


def test_cycle_is_reported_with_the_tasks_in_it() -> None:
    dag = DAG("c", [t("a", ["c"]), t("b", ["a"]), t("c", ["b"]), t("d")])
    with pytest.raises(DAGValidationError) as info:
        dag.validate()
    assert set(info.value.cycle) == {"a", "b", "c"}
    assert "has a cycle" in str(info.value) and "d" not in info.value.cycle


def test_unknown_dependency_names_both_tasks() -> None:
    with pytest.raises(DAGValidationError, match="task 'b' needs 'ghost', which is not a task"):
        DAG("u", [t("a"), t("b", ["ghost"])]).validate()


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(DAGValidationError, match="two different tasks are named 'a'"):
        DAG("d", [t("a"), t("a")])


def test_rshift_composes_inside_a_dag_context() -> None:
    @task
    async def a(ctx: Any) -> int:
        return 1

    @task
    async def b(ctx: Any) -> int:
        return 2

    @task
    async def c(ctx: Any) -> int:
        return 3

    with DAG("x") as dag:
        a >> [b, c]
    assert set(dag.upstream("b")) == {"a"} and set(dag.upstream("c")) == {"a"}
    with pytest.raises(RuntimeError, match="needs an active DAG"):
        a >> b


def test_subgraph_keeps_a_task_and_its_upstream() -> None:
    dag = DAG("s", [t("a"), t("b", ["a"]), t("c", ["b"]), t("d", ["a"]), t("e")])
    assert {x.name for x in dag.subgraph(["c"])} == {"a", "b", "c"}
    with pytest.raises(DAGValidationError, match="'zzz'"):
        dag.subgraph(["zzz"])


def test_mermaid_and_dot_show_every_edge() -> None:
    dag = DAG("m", [t("a"), t("b", ["a"])])
    assert 't0["a"]' in dag.to_mermaid() and "t0 --> t1" in dag.to_mermaid()
    assert '"a" -> "b";' in dag.to_dot()


def test_streams_from_must_be_a_need_and_a_producer() -> None:
    with pytest.raises(ValueError, match="must also be listed in needs"):
        t("b", [], streams_from=["a"])
    with pytest.raises(DAGValidationError, match="does not emit a stream"):
        DAG("s", [t("a"), t("b", ["a"], streams_from=["a"])]).validate()


def test_stream_that_would_deadlock_is_rejected() -> None:
    dag = DAG("s", [t("p", emits_stream=True), t("q", ["p"]), t("c", ["p", "q"], streams_from=["p"])])
    with pytest.raises(DAGValidationError, match="would deadlock"):
        dag.validate()
