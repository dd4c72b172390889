"""How a request ended, typed: what the ledger keeps and the final status event says.

Every ending goes through ``Outcome``, so the JSON a sender reads has one shape per kind of ending: a
run that finished carries its pipeline, per-task states, summary, duration and report; a request
refused before or instead of a run (too many attempts, past its deadline, the run crashed) only its run
id and reason. ``stored()`` is what the ledger row keeps (and a re-delivery replays); ``told()`` is the
final event's body.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Ending", "Outcome", "RunReport"]


class Ending(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # a stop after the grace period: resumable, so not final in the ledger

    @property
    def is_final(self) -> bool:
        return self is not Ending.INTERRUPTED


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a pipeline run that reached its end adds to its outcome."""

    pipeline: str
    tasks: dict[str, Any]  # task -> its state
    summary: Any
    seconds: float
    resumed: bool
    report: str  # the run's report.json


@dataclass(frozen=True, slots=True)
class Outcome:
    ending: Ending
    run_id: str
    reason: str | None = None
    run: RunReport | None = None

    @classmethod
    def failed(cls, run_id: str, reason: str) -> Outcome:
        """Failed without a run result: refused at the claim, over its time, or crashed."""
        return cls(Ending.FAILED, run_id, reason)

    @classmethod
    def interrupted(cls, run_id: str) -> Outcome:
        return cls(Ending.INTERRUPTED, run_id, "the daemon stopped; the run resumes later")

    def stored(self) -> dict[str, Any]:
        """The ledger's JSON. An interruption keeps no reason: the next claim resumes the run."""
        if self.run is None:
            out: dict[str, Any] = {"event": self.ending.value, "run_id": self.run_id}
            if self.reason is not None and self.ending.is_final:
                out["reason"] = self.reason
            return out
        r = self.run
        return {
            "event": self.ending.value,
            "run_id": self.run_id,
            "pipeline": r.pipeline,
            "reason": self.reason,
            "tasks": r.tasks,
            "summary": r.summary,
            "seconds": r.seconds,
            "resumed": r.resumed,
            "report": r.report,
        }

    def told(self) -> dict[str, Any]:
        """The final status event's fields (its ``event`` is the ending)."""
        body = {k: v for k, v in self.stored().items() if k != "event"}
        if not self.ending.is_final:
            body["reason"] = self.reason
        return body
