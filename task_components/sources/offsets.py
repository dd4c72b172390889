"""In-order offset commits for batches that finish out of order.

Batches are numbered as they are fetched. A batch is *finished* when every sink (and the dead-letter
topic) took its records. Offsets may be committed only up to the first unfinished batch: committing a
later batch's offsets would also cover the earlier one's records, which a crash would then lose. So
``ready()`` releases the positions of the longest finished prefix, merged per partition (offsets only
grow within a partition, so the later batch's position wins). Pure bookkeeping, no I/O: unit-tested.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["OffsetTracker", "lag"]

Position = tuple[str, int]


class OffsetTracker:
    __slots__ = ("_done", "_next_commit", "_next_seq", "_positions")

    def __init__(self) -> None:
        self._positions: dict[int, dict[Position, int]] = {}
        self._done: set[int] = set()
        self._next_seq = 0
        self._next_commit = 0

    def register(self, positions: dict[Position, int]) -> int:
        """A new batch, in fetch order; returns its sequence number."""
        seq = self._next_seq
        self._next_seq += 1
        self._positions[seq] = dict(positions)
        return seq

    def finish(self, seq: int) -> None:
        if seq not in self._positions:
            raise KeyError(f"batch {seq} is not pending")
        self._done.add(seq)

    @property
    def in_flight(self) -> int:
        return len(self._positions) - len(self._done)

    def ready(self) -> dict[Position, int]:
        """Positions safe to commit now (the finished prefix), forgotten once returned."""
        merged: dict[Position, int] = {}
        while self._next_commit in self._done:
            seq = self._next_commit
            for tp, offset in self._positions.pop(seq).items():
                merged[tp] = max(offset, merged.get(tp, offset))
            self._done.discard(seq)
            self._next_commit += 1
        return merged


def lag(fetched: dict[Position, int], highwater: Callable[[Position], int | None]) -> int:
    """Records behind the log end: per partition, the fetch high watermark minus the next offset to fetch.

    ``highwater`` is the one the last fetch response carried (``consumer.highwater``), never ListOffsets:
    Tansu's ListOffsets(latest) can lag behind the log, which made the figure too low. A partition without
    a high watermark yet (nothing fetched) counts nothing rather than a guess.
    """
    total = 0
    for tp, last in fetched.items():
        high = highwater(tp)
        if high is not None:
            total += max(0, high - last - 1)
    return total
