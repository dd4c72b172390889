"""The DAG: tasks as nodes of a networkx.DiGraph, edges from a task to the tasks that need it.

Validation happens once, before a run (Dask checks dependencies when the graph is built), so the
executor can trust the graph and stay lean. Edges come from one place, each task's ``needs``:
``>>`` composition inside ``with DAG(...) as dag:`` appends to the downstream task's needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextvars import Token

import networkx as nx

from dag_orchestrator.task import Composer, Task, active_dag

__all__ = ["DAG", "DAGValidationError"]


class DAGValidationError(ValueError):
    """The graph cannot run: a cycle, an unknown dependency, a duplicate name."""

    def __init__(self, message: str, *, task: str | None = None, cycle: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.task = task
        self.cycle = tuple(cycle)


class DAG:
    """A named set of tasks and their dependencies."""

    def __init__(self, name: str = "dag", tasks: Iterable[Task] = ()) -> None:
        self.name = name
        self.graph: nx.DiGraph = nx.DiGraph()
        self._token: Token[Composer | None] | None = None
        for t in tasks:
            self.add(t)

    # -- building -------------------------------------------------------------------------------
    def __enter__(self) -> DAG:
        self._token = active_dag.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            active_dag.reset(self._token)
            self._token = None

    def add(self, *tasks: Task) -> DAG:
        for t in tasks:
            existing = self.graph.nodes.get(t.name, {}).get("task")
            if existing is not None and existing is not t:
                raise DAGValidationError(f"two different tasks are named {t.name!r}", task=t.name)
            self.graph.add_node(t.name, task=t)
            for need in t.needs:
                self.graph.add_edge(need, t.name)
        return self

    def connect(self, upstream: Task, downstream: Task | Sequence[Task]) -> None:
        """Record that ``downstream`` needs ``upstream`` (what ``a >> b`` means).

        The need is added to the downstream task's own ``needs`` too: a task's needs are the one
        source of its edges, so a component that looks its inputs up among its needs finds them
        whether it was wired by ``needs=`` or by ``>>``.
        """
        targets = [downstream] if isinstance(downstream, Task) else list(downstream)
        for t in targets:
            if upstream.name not in t.needs:
                t.needs = (*t.needs, upstream.name)
        self.add(upstream, *targets)

    # -- reading --------------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self.graph and "task" in self.graph.nodes[name]

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __iter__(self) -> Iterator[Task]:
        for name in nx.topological_sort(self.graph):
            yield self.graph.nodes[name]["task"]

    def task(self, name: str) -> Task:
        try:
            return self.graph.nodes[name]["task"]
        except KeyError:
            raise KeyError(f"no task named {name!r} in DAG {self.name!r}") from None

    def upstream(self, name: str) -> list[str]:
        return list(self.graph.predecessors(name))

    def downstream(self, name: str) -> list[str]:
        return list(self.graph.successors(name))

    # -- checking -------------------------------------------------------------------------------
    def validate(self) -> DAG:
        """Raise DAGValidationError naming the tasks at fault; return self when the graph can run."""
        for name, data in self.graph.nodes(data=True):
            if "task" not in data:
                needed_by = sorted(self.graph.successors(name))
                raise DAGValidationError(
                    f"task {needed_by[0]!r} needs {name!r}, which is not a task in DAG {self.name!r}",
                    task=needed_by[0],
                )
        cycle: list = []
        if not nx.is_directed_acyclic_graph(self.graph):  # fast check; find the cycle only when there is one
            cycle = nx.find_cycle(self.graph)
        if cycle:
            names = [edge[0] for edge in cycle]
            path = " -> ".join([*names, names[0]])
            raise DAGValidationError(f"DAG {self.name!r} has a cycle: {path}", task=names[0], cycle=names)
        for name, data in self.graph.nodes(data=True):
            t: Task = data["task"]
            for producer in t.streams_from:
                if not self.task(producer).emits_stream:
                    raise DAGValidationError(
                        f"task {name!r} streams from {producer!r}, which does not emit a stream",
                        task=name,
                    )
                for other in self.graph.predecessors(name):
                    if other != producer and other not in t.streams_from and nx.has_path(self.graph, producer, other):
                        raise DAGValidationError(
                            f"task {name!r} streams from {producer!r} but also waits for {other!r}, which "
                            f"waits for {producer!r} to finish: the stream would deadlock",
                            task=name,
                        )
        return self

    def subgraph(self, only: Iterable[str]) -> DAG:
        """The named tasks and everything they depend on (``--only``).

        A task may say what is wrong with its needs among a set of tasks (``needs_problem(tasks)``, as
        components do); it is asked again about the kept tasks, because leaving tasks out can break a
        wiring that was whole (a streaming step whose dead-letter sink is left out would lose records).
        """
        keep: set[str] = set()
        for name in only:
            if name not in self:
                raise DAGValidationError(f"--only names {name!r}, which is not a task in the DAG", task=name)
            keep.add(name)
            keep |= nx.ancestors(self.graph, name)
        sub = DAG(self.name)
        sub.graph = self.graph.subgraph(keep).copy()
        kept = {t.name: t for t in sub}
        for t in kept.values():  # a task's own wiring check (e.g. rejected records need a dead-letter sink)
            check = getattr(t, "needs_problem", None)
            problem = check(kept) if callable(check) else None
            if problem:
                raise DAGValidationError(
                    f"--only leaves out a task that {t.name!r} relies on: {problem} (or name that task in --only too)", task=t.name
                )
        return sub

    def needs_of(self, name: str) -> tuple[str, ...]:
        """Declared needs plus edges added with ``>>``."""
        return tuple(self.graph.predecessors(name))

    # -- drawing --------------------------------------------------------------------------------
    def to_mermaid(self) -> str:
        ids = {n: f"t{i}" for i, n in enumerate(self.graph.nodes)}
        lines = ["flowchart TD"]
        lines += [f'    {ids[n]}["{n}"]' for n in self.graph.nodes]
        for a, b in self.graph.edges:
            arrow = "==>" if a in self.task(b).streams_from else "-->"
            lines.append(f"    {ids[a]} {arrow} {ids[b]}")
        return "\n".join(lines)

    def to_dot(self) -> str:
        lines = [f'digraph "{self.name}" {{', "    rankdir=LR;"]
        lines += [f'    "{n}";' for n in self.graph.nodes]
        for a, b in self.graph.edges:
            style = " [style=bold]" if a in self.task(b).streams_from else ""
            lines.append(f'    "{a}" -> "{b}"{style};')
        lines.append("}")
        return "\n".join(lines)
