"""What a bulk-import job path offers, whichever API serves it (``import_jobs`` for REST, ``legacy`` for gRPC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["CALL_TIMEOUT", "ImportJobs", "ImportJobsError", "JobState"]

# seconds any one job call may take, retries included: above the ~210 s pymilvus' retries rode out before job
# calls carried a timeout, so a Milvus restart mid-load still passes (a submit holds a shutdown that long at most)
CALL_TIMEOUT = 240.0


class ImportJobsError(RuntimeError):
    """A job call failed or went unanswered; the message names the endpoint and Milvus' reason."""


@dataclass(frozen=True, slots=True)
class JobState:
    state: str  # Milvus' own name: Pending, Importing, Completed, Failed, ... (2.3 adds Started, Persisted)
    rows: int  # rows imported (2.3: parsed) so far
    reason: str = ""
    files: tuple[str, ...] = ()

    @property
    def completed(self) -> bool:
        return self.state == "Completed"

    @property
    def failed(self) -> bool:
        return self.state.startswith("Failed")  # 2.3 also reports "Failed and cleaned"


class ImportJobs(Protocol):
    kind: str

    def submit(self, collection: str, location: str) -> int: ...
    def state(self, job: int) -> JobState: ...
    def listed(self, collection: str) -> list[tuple[int, JobState]]: ...
    def close(self) -> None: ...
