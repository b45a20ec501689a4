"""When a connection starts and stops parking (consumer/delivery/parking.py ``_decide``):
its breaker, its pause, and how many of its events wait here and for how long."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kafka.structs import TopicPartition

from consumer.config import parse_config
from consumer.delivery.breaker import CircuitBreaker
from consumer.delivery.parking import Parking

TRELICA = ("trelica", "default")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def parking(clock: Clock) -> tuple[Parking, CircuitBreaker]:
    raw = {
        "kafka": {"topic": "changes"},
        "parking": {"backlog": 100, "max_wait_s": 60},
        "breaker": {"failure_threshold": 1, "open_s": 1, "max_open_s": 1},
        "connections": {
            "trelica": {"default": {"base_url": "http://t", "client_id": "a", "client_secret": "b"}}
        },
    }
    config = parse_config(raw, {})
    breaker = CircuitBreaker(config.breaker, clock)
    return Parking(config, None, None, {TRELICA: breaker}), breaker  # type: ignore[arg-type]


def decide(parked: Parking, count: int, oldest_s: float) -> list[Any]:
    taken: list[Any] = []
    parked._decide(TRELICA, lambda _: (count, oldest_s), lambda *_: taken)
    return taken


@pytest.mark.parametrize(
    ("count", "oldest_s", "fail", "pause", "parks"),
    [
        (101, 1, False, False, False),  # a healthy connection with a burst waiting: no
        (101, 61, False, False, True),  # rate-limited beyond the bound: the oldest waited 61 s
        (100, 600, False, False, False),  # not more than the backlog bound: no
        (101, 1, True, False, True),  # breaker open
        (101, 1, False, True, True),  # paused by an operator
        (5, 1, True, False, False),  # breaker open, little waiting: it waits in memory
    ],
)
def test_a_connection_parks_when_unavailable_with_more_than_the_backlog_waiting(
    count: int, oldest_s: float, fail: bool, pause: bool, parks: bool
) -> None:
    clock = Clock()
    parked, breaker = parking(clock)
    if fail:
        breaker.machine.failed(probe=False)
    if pause:
        breaker.pause(True)
    decide(parked, count, oldest_s)
    assert (TRELICA in parked._parking) is parks


def test_parking_ends_when_available_with_half_the_backlog_or_less_left() -> None:
    clock = Clock()
    parked, _ = parking(clock)
    decide(parked, 101, 61)  # rate-limited: parks
    assert TRELICA in parked._parking
    decide(parked, 51, 61)  # available, but more than half the bound still waits here
    assert TRELICA in parked._parking
    decide(parked, 50, 1)
    assert TRELICA not in parked._parking


def test_with_nothing_parked_on_this_member_parking_ends_when_a_probe_is_due() -> None:
    clock = Clock()
    parked, breaker = parking(clock)
    breaker.machine.failed(probe=False)  # open for 1 s
    decide(parked, 101, 1)
    assert TRELICA in parked._parking
    decide(parked, 0, 0)  # nothing waits, the open wait is not over: stays parked
    assert TRELICA in parked._parking
    clock.now = 1.5  # the probe is due; no parking partition of it is assigned here
    decide(parked, 0, 0)
    assert TRELICA not in parked._parking


PARKED_0 = TopicPartition("changes.parked.trelica.default", 0)
PARKED_1 = TopicPartition("changes.parked.trelica.default", 1)


class Record:
    def __init__(self, offset: int, age_s: float) -> None:
        self.offset = offset
        self.timestamp = int((time.time() - age_s) * 1000)


class Consumer:
    """What ``take_probe`` asks of kafka-python's consumer: seek and pause."""

    def __init__(self) -> None:
        self.seeks: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)


def probing() -> tuple[Parking, CircuitBreaker, Clock]:
    """Trelica parks with its events on two parking partitions of this member, none of its
    events left in memory, and a probe due."""
    clock = Clock()
    parked, breaker = parking(clock)
    parked.assigned([PARKED_0, PARKED_1])
    breaker.machine.failed(probe=False)  # open for 1 s
    decide(parked, 101, 1)
    clock.now = 1.5
    decide(parked, 0, 0)
    return parked, breaker, clock


def test_with_parked_events_here_one_is_read_back_to_probe_and_the_rest_stay_parked() -> None:
    parked, _, _ = probing()
    assert TRELICA in parked._parking  # still parking: new events are parked
    assert PARKED_0 not in parked.held() and PARKED_1 not in parked.held()  # fetched now
    old = parked.config.parking.max_age_s + 10
    batches: dict[TopicPartition, list[Any]] = {
        PARKED_1: [Record(20, old), Record(21, 1), Record(22, 1)],
        PARKED_0: [Record(10, 1), Record(11, 1)],
    }
    consumer = Consumer()
    parked.take_probe(batches, consumer)
    # partition 0 comes first: its first record is the probe; partition 1 gives only the
    # expired one ahead of its first live record (dead-lettered when submitted)
    assert {tp: [r.offset for r in rs] for tp, rs in batches.items()} == {
        PARKED_0: [10],
        PARKED_1: [20],
    }
    assert consumer.seeks == {PARKED_0: 11, PARKED_1: 21}
    assert consumer.paused == {PARKED_0, PARKED_1}
    assert {PARKED_0, PARKED_1} <= parked.held()


def test_no_second_probe_is_read_back_while_the_first_is_on_its_way() -> None:
    parked, _, _ = probing()
    parked.take_probe({PARKED_0: [Record(10, 1)]}, Consumer())
    decide(parked, 0, 0)  # the probe event is not counted yet (on its way to the pipeline)
    assert PARKED_0 in parked.held() and TRELICA not in parked._probing
    parked._probe_taken[TRELICA] -= 1.1  # settled: a count of 0 now means the probe finished
    decide(parked, 0, 0)
    assert TRELICA in parked._probing


def test_the_events_taken_at_the_start_are_parked_in_offset_order() -> None:
    clock = Clock()
    parked, breaker = parking(clock)
    breaker.pause(True)
    source = TopicPartition("changes", 0)

    class Record:
        def __init__(self, offset: int) -> None:
            self.offset = offset

    taken = [(source, Record(7)), (source, Record(3)), (source, Record(5))]
    parked._decide(TRELICA, lambda _: (101, 0.0), lambda *_: taken)
    assert [r.offset for _, r, _ in parked._queue] == [3, 5, 7]
    assert {reason for _, _, reason in parked._queue} == {"unavailable"}
