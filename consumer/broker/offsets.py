"""Which offsets may be committed: per partition, everything below the first unfinished record.

Records finish out of order (different assets run concurrently); the committable offset only
moves past a record once it and every record before it are delivered or dead-lettered. Used
from the asyncio side and from kafka-python's rebalance callbacks, hence the lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from kafka.structs import OffsetAndMetadata, TopicPartition


class _Partition:
    __slots__ = ("done", "next_offset", "pending")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.done: set[int] = set()
        self.next_offset: int | None = None  # the offset to commit: first unfinished record


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._committed: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        """A record was handed to the pipeline."""
        with self._lock:
            part = self._partitions.get(tp)
            if part is None:
                part = self._partitions[tp] = _Partition()
            part.pending.append(offset)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        """The record was delivered or its dead-letter acknowledged. Unknown ones are ignored
        (their partition was revoked meanwhile)."""
        with self._lock:
            part = self._partitions.get(tp)
            if part is None:
                return
            part.done.add(offset)
            while part.pending and part.pending[0] in part.done:
                finished = part.pending.popleft()
                part.done.discard(finished)
                part.next_offset = finished + 1

    def unfinished(self) -> int:
        """Records handed over and not finished yet: what holds memory."""
        with self._lock:
            return sum(len(p.pending) - len(p.done) for p in self._partitions.values())

    def uncommitted(self) -> int:
        """Records from the oldest unfinished one on, finished or not: what a restart would
        consume again. One slow record lets this grow while the others finish."""
        with self._lock:
            return sum(len(p.pending) for p in self._partitions.values())

    def to_commit(
        self, only: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Offsets that moved since they were last committed."""
        with self._lock:
            wanted = (
                self._partitions
                if only is None
                else {tp: self._partitions[tp] for tp in only if tp in self._partitions}
            )
            return {
                tp: OffsetAndMetadata(p.next_offset, "", -1)
                for tp, p in wanted.items()
                if p.next_offset is not None and self._committed.get(tp) != p.next_offset
            }

    def committed(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        with self._lock:
            for tp, meta in offsets.items():
                self._committed[tp] = meta.offset

    def first_unfinished(self, tp: TopicPartition) -> int | None:
        """Where consumption must resume so that nothing unfinished is skipped."""
        with self._lock:
            part = self._partitions.get(tp)
            if part is None:
                return None
            return part.pending[0] if part.pending else part.next_offset

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget revoked partitions: their records will be consumed again by the new owner."""
        with self._lock:
            for tp in partitions:
                self._partitions.pop(tp, None)
                self._committed.pop(tp, None)

    def last_committed(self) -> dict[TopicPartition, int]:
        with self._lock:
            return dict(self._committed)
