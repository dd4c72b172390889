"""In-order offset commits for batches that finish out of order.

Batches are numbered as they are fetched. A batch is *finished* when every sink (and the dead-letter
topic) took its records. Offsets may be committed only up to the first unfinished batch: committing a
later batch's offsets would also cover the earlier one's records, which a crash would then lose. So
``ready()`` releases the positions of the longest finished prefix, merged per partition (offsets only
grow within a partition, so the later batch's position wins). Pure bookkeeping, no I/O: unit-tested;
``stream_lag`` reads the consumer's figures for the progress line (tested on the real broker).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["OffsetTracker", "lag", "partition_lags", "stream_lag", "stream_lags"]

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


def partition_lags(bases: dict[Position, int], highwater: Callable[[Position], int | None]) -> dict[Position, int]:
    """Records in the log not yet committed, per partition: the fetch high watermark minus ``bases`` (the
    offset committed, or where reading started). A partition without a high watermark yet counts nothing."""
    lags: dict[Position, int] = {}
    for tp, base in bases.items():
        high = highwater(tp)
        lags[tp] = max(0, high - base) if high is not None else 0
    return lags


def lag(bases: dict[Position, int], highwater: Callable[[Position], int | None]) -> int:
    """``partition_lags`` summed."""
    return sum(partition_lags(bases, highwater).values())


async def stream_lag(consumer: Any, committed: dict[Position, int], read_from: dict[Position, int]) -> int:
    """``stream_lags`` summed: the progress line's lag."""
    return sum((await stream_lags(consumer, committed, read_from)).values())


async def stream_lags(consumer: Any, committed: dict[Position, int], read_from: dict[Position, int]) -> dict[Position, int]:
    """Per partition still ours, the records not yet committed, fetched or not (``/metrics`` shows each).

    The high watermark is the one the last fetch response carried (``consumer.highwater``), never
    ListOffsets (Tansu's ListOffsets(latest) lags behind the log). The base of a partition is the offset
    this run last committed there, else the first offset it fetched there, else the consumer's position
    (nothing handed out yet). The figure counted from the last record handed out (as before) missed every
    record fetched but not yet committed (in the buffer, in the stages, being written) and every partition
    whose records were still in the consumer's prefetch: at a start it read a fraction of the real lag.
    """
    from aiokafka import TopicPartition

    bases: dict[Position, int] = {}
    for tp in list(consumer.assignment()):
        key = (tp.topic, tp.partition)
        base = committed.get(key, read_from.get(key))
        if base is None:
            with anyio.move_on_after(0.5):
                try:
                    base = await consumer.position(tp)
                except Exception:  # noqa: BLE001 - revoked or not yet reset: no figure for it this time
                    base = None
        if base is not None:
            bases[key] = base
    return partition_lags(bases, lambda key: consumer.highwater(TopicPartition(*key)))
