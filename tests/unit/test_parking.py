"""When a connection starts and stops parking (consumer/delivery/parking.py ``_decide``):
its breaker, its pause, and how many of its events wait here and for how long."""

from __future__ import annotations

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


def test_with_nothing_left_to_probe_with_parked_events_are_read_back_when_a_probe_is_due() -> None:
    clock = Clock()
    parked, breaker = parking(clock)
    breaker.machine.failed(probe=False)  # open for 1 s
    decide(parked, 101, 1)
    assert TRELICA in parked._parking
    decide(parked, 0, 0)  # nothing waits, the open wait is not over: stays parked
    assert TRELICA in parked._parking
    clock.now = 1.5  # the probe is due
    decide(parked, 0, 0)
    assert TRELICA not in parked._parking


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
