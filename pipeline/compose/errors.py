"""The one error a pipeline that cannot run raises, in Python or YAML: where it is wrong, and how."""

from __future__ import annotations

__all__ = ["PipelineError"]


class PipelineError(ValueError):
    """A pipeline that cannot run, found before anything runs; ``str()`` is one line a person can act on.

    ``task`` and ``field`` say where: ``field`` is a component parameter (``total_rows``), ``needs``,
    ``uses`` or ``options``; ``about`` is which of those it is, so the YAML front end can name the
    same place in its own terms (``with.total_rows``). ``problem`` is the message without the place.
    """

    def __init__(
        self,
        problem: str,
        *,
        pipeline: str | None = None,
        task: str | None = None,
        field: str | None = None,
        about: str | None = None,
    ) -> None:
        where = [f"pipeline {pipeline!r}"] if pipeline else []
        if task:
            where.append(f"task {task!r}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(": ".join([*where, problem]))
        self.pipeline, self.task, self.field, self.problem = pipeline, task, field, problem
        self.about = about or field
