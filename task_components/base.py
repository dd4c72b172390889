"""The base of every registered component: a Task configured by a validated pydantic model.

A component declares its parameter model (``Params``), its registry name, whether it emits a chunk
stream, and whether it consumes the streams of the needs that emit one. The pipeline registry reads
these class attributes; the engine only ever sees a plain Task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from dag_orchestrator.task import RetryPolicy, Task

T = TypeVar("T")


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(Task):
    __slots__ = ("params",)

    component: ClassVar[str]
    summary: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    default_kind: ClassVar[str] = "default"
    emits: ClassVar[bool] = False  # calls ctx.emit(chunk)
    stream_input: ClassVar[bool] = False  # reads the streams of its stream-emitting needs

    def __init__(
        self,
        name: str,
        params: BaseModel | None = None,
        needs: Sequence[str] = (),
        *,
        streams_from: Sequence[str] = (),
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(
            name,
            needs,
            retry=retry,
            timeout=timeout,
            kind=kind or self.default_kind,
            streams_from=streams_from,
            emits_stream=self.emits,
        )
        self.params = params if params is not None else self.Params()

    def upstream(self, ctx: Any, kind: type[T]) -> T | None:
        """The result of the first need whose result is a ``kind`` (tasks find inputs by type, not name)."""
        for need in self.needs:
            result = ctx.result(need)
            if isinstance(result, kind):
                return result
        return None

    def summarize(self, result: Any) -> dict[str, Any]:
        """A few figures for the run summary and report (rows, files...); empty by default."""
        return {}
