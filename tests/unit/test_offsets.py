"""Which offsets may be committed, and how much is held, as records finish out of order."""

from __future__ import annotations

from kafka.structs import TopicPartition

from consumer.broker.offsets import OffsetTracker

TP = TopicPartition("t", 0)


def test_commit_point_waits_for_the_oldest_unfinished_record() -> None:
    tracker = OffsetTracker()
    for offset in range(10, 15):
        tracker.add(TP, offset)
    for offset in (11, 12, 14):
        tracker.finish(TP, offset)
    assert tracker.to_commit() == {}  # 10 is not finished: nothing may be committed
    assert (tracker.unfinished(), tracker.uncommitted()) == (2, 5)
    tracker.finish(TP, 10)
    assert tracker.to_commit()[TP].offset == 13  # 13 still holds the rest
    assert (tracker.unfinished(), tracker.uncommitted()) == (1, 2)
    tracker.finish(TP, 13)
    assert tracker.to_commit()[TP].offset == 15
    assert (tracker.unfinished(), tracker.uncommitted()) == (0, 0)


def test_one_stuck_record_holds_the_span_not_the_memory() -> None:
    tracker = OffsetTracker()
    for offset in range(1000):
        tracker.add(TP, offset)
    for offset in range(1, 1000):
        tracker.finish(TP, offset)
    assert tracker.unfinished() == 1  # what flow control weighs against max_buffered
    assert tracker.uncommitted() == 1000  # ...and this against max_uncommitted


def test_records_of_a_revoked_partition_are_ignored() -> None:
    tracker = OffsetTracker()
    tracker.finish(TopicPartition("t", 3), 7)
    assert tracker.to_commit() == {} and tracker.unfinished() == 0
