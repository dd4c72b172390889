"""What the daemon's parts share: one ``Request`` per delivered message, and the ``Board`` they sit on.

The intake (intake.py) puts requests on the board, the execution (execution.py) takes them off and
runs them, the server (server.py) decides when; none of them holds the others. A request carries
everything resolved about it once (its parsed message, its checked spec and DAG, the claim made with
its acceptance) from the fetch until its offset is done, so no part parses or builds it again.

Changes are announced, not polled: ``Board.wake()`` sets the current ``changed`` event and replaces it,
so every waiter sees each change once (a request queued, a slot freed, an offset done, a stop).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import anyio

from pipeline.daemon.ledger import Claim
from pipeline.daemon.requests import Resolved, RunRequest
from task_components.streaming.offsets import OffsetTracker

__all__ = ["TP", "Board", "Mark", "Request"]

TP = tuple[str, int]
# the partition's tracker *object* (a rebalance makes a new one) and the message's sequence number in it
Mark = tuple[OffsetTracker, int]


@dataclass(eq=False)
class Request:
    """One delivered run request, from fetch to its offset being done."""

    tp: TP
    mark: Mark
    timestamp: float  # the message's, in seconds (0: unknown)
    message: RunRequest
    resolved: Resolved  # the checked spec and DAG, carried to the run (never parsed or built again)
    also: list[Mark] = field(default_factory=list)  # duplicates delivered while this one is live
    claim: Claim | None = None  # claimed together with its acceptance (it went straight to a free slot)
    claimed_at: float = 0.0  # ... at this ``time.monotonic()``
    # from its run slot on: the claim's and set-up's scope, then the running pipeline's (a stop cancels it)
    scope: anyio.CancelScope | None = None
    interrupted: bool = False  # cancelled by a stop: resumable, not an outcome
    starting: bool = False  # in its run slot, its pipeline not started yet (a stop interrupts it at once)
    prepared: int = 0  # runs set up for it in this process (the first uses the intake's DAG)
    unrecorded: int = 0  # tries whose claim or end the ledger or broker did not take (the requeue backs off)

    @property
    def id(self) -> str:
        return self.message.request_id


class Board:
    """The daemon's requests and offsets: which are live, waiting, running, and what may be committed."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.trackers: dict[TP, OffsetTracker] = {}
        self.committed: dict[TP, int] = {}
        self.uncommitted: dict[TP, int] = {}  # ready offsets a commit has not carried yet (the broker refused)
        self.live: dict[str, Request] = {}  # request_id -> its request, queued or running here
        self.waiting: list[tuple[int, int, Request]] = []  # a heap: highest priority, then oldest, first
        self.running: dict[str, Request] = {}
        self.stopped = anyio.Event()  # set once by a stop: waits that would outlast it (a backoff) end on it
        self.side = 0  # dead-letter, replay and final-event sends in progress (shutdown lets them finish)
        self.commit_due = anyio.Event()  # an offset was marked done since the last commit
        # the "accepted" event (intake.py tells it, the run waits for it before "started"):
        self.announcing: dict[str, anyio.Event] = {}  # sent, the broker's acknowledgement pending
        self.announce_failed: set[str] = set()  # ... and it failed: the claim tells it again
        self.told: set[str] = set()  # ... and the broker has it (the claim records that in the ledger)
        # request ids whose pipeline ran in this process, until they are recorded as over: a claim of one again
        # (a retry after the outcome was not recorded, a redelivery after a revoke) is a new attempt, counted
        self.ran: set[str] = set()
        self.changed = anyio.Event()
        self._order = itertools.count()

    @property
    def stopping(self) -> bool:
        return self.stopped.is_set()

    @stopping.setter
    def stopping(self, value: bool) -> None:
        if value:
            self.stopped.set()
        elif self.stopped.is_set():
            self.stopped = anyio.Event()

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    def queue(self, request: Request) -> None:
        heapq.heappush(self.waiting, (-request.message.priority, next(self._order), request))
        self.wake()

    def next_waiting(self) -> Request:
        return heapq.heappop(self.waiting)[2]

    def forget_partitions(self, gone: set[TP]) -> None:
        """Revoked partitions: their queued requests and offsets belong to the new owner now."""
        self.waiting = [w for w in self.waiting if w[2].tp not in gone]
        heapq.heapify(self.waiting)
        for request in [it for it in self.live.values() if it.tp in gone and it.id not in self.running]:
            self.drop(request)
        for tp in gone:
            self.trackers.pop(tp, None)
            self.committed.pop(tp, None)
            self.uncommitted.pop(tp, None)
        self.wake()  # their requests no longer count against the read-ahead

    def in_flight(self) -> int:
        return sum(t.in_flight for t in self.trackers.values())

    def ours(self, mark: Mark) -> bool:
        return any(t is mark[0] for t in self.trackers.values())

    def done(self, mark: Mark) -> None:
        if self.ours(mark):  # else revoked meanwhile: the new owner decides
            mark[0].finish(mark[1])
            self.commit_due.set()
        self.wake()

    def drop(self, request: Request) -> None:
        """Forget the request here, and only it: a newer delivery of its id (after a revoke) may hold the entry."""
        if self.live.get(request.id) is request:
            del self.live[request.id]
            self.told.discard(request.id)
            self.announce_failed.discard(request.id)

    def release(self, request: Request) -> None:
        """The request is over here (recorded, or another daemon's): its offsets (duplicates too) are done."""
        self.drop(request)
        self.ran.discard(request.id)
        for mark in (request.mark, *request.also):
            self.done(mark)

    def free_slot(self, max_runs: int) -> bool:
        return not self.stopping and len(self.running) < max_runs
