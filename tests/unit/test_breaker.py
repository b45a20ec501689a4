"""The circuit breaker: the state machine on a fake clock, then its asyncio waiting (one probe
per interval, arrival order, cancellation), what trips it, its metric and its configuration."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from consumer.config import BreakerConfig, load_config
from consumer.delivery.breaker import Admission, Breaker, CircuitBreaker, State, trips
from consumer.errors import (
    AuthFailedError,
    ConfigError,
    DeliveryError,
    PermanentError,
    RetryableError,
)

CONFIG = BreakerConfig(failure_threshold=3, open_s=1.0, max_open_s=4.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(breaker: Breaker | CircuitBreaker) -> State:
    """Read afresh (mypy would narrow ``breaker.state`` from an earlier assert)."""
    return breaker.state


def machine(config: BreakerConfig = CONFIG) -> tuple[Breaker, Clock, list[State]]:
    clock, changes = Clock(), list[State]()
    return Breaker(config, clock, changes.append), clock, changes


def test_opens_after_the_threshold_of_failures_in_a_row() -> None:
    breaker, _, changes = machine()
    for _ in range(2):
        breaker.failed(probe=False)
    breaker.succeeded(probe=False)  # a success in between starts the count again
    breaker.failed(probe=False)
    breaker.failed(probe=False)
    assert state(breaker) is State.CLOSED
    assert breaker.admit() is Admission.GO
    breaker.failed(probe=False)
    assert state(breaker) is State.OPEN
    assert breaker.admit() is Admission.WAIT
    assert changes == [State.OPEN]


def test_half_open_lets_one_probe_go_and_its_success_closes() -> None:
    breaker, clock, changes = machine()
    for _ in range(3):
        breaker.failed(probe=False)
    clock.now += 0.99
    assert breaker.admit() is Admission.WAIT
    clock.now += 0.01
    assert state(breaker) is State.HALF_OPEN
    assert breaker.admit() is Admission.PROBE
    assert breaker.admit() is Admission.WAIT  # only one probe at a time
    breaker.failed(probe=False)  # an attempt let go before the breaker opened: no say
    breaker.succeeded(probe=False)
    assert state(breaker) is State.HALF_OPEN
    breaker.succeeded(probe=True)
    assert state(breaker) is State.CLOSED
    assert breaker.admit() is Admission.GO
    assert changes == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_each_failed_probe_doubles_the_wait_up_to_the_cap() -> None:
    breaker, clock, _ = machine()
    for _ in range(3):
        breaker.failed(probe=False)
    waits = []
    for _ in range(5):
        waits.append(breaker.opens_in())
        clock.now = breaker.open_until
        assert breaker.admit() is Admission.PROBE
        breaker.failed(probe=True)
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
    clock.now = breaker.open_until
    assert breaker.admit() is Admission.PROBE
    breaker.succeeded(probe=True)
    breaker.failed(probe=False)  # closed again: the count and the wait start from scratch
    assert state(breaker) is State.CLOSED
    for _ in range(2):
        breaker.failed(probe=False)
    assert breaker.opens_in() == 1.0


def test_a_probe_called_off_hands_the_probe_on() -> None:
    breaker, clock, _ = machine()
    for _ in range(3):
        breaker.failed(probe=False)
    clock.now += 1
    assert breaker.admit() is Admission.PROBE
    breaker.abandoned(probe=True)
    assert state(breaker) is State.HALF_OPEN
    assert breaker.admit() is Admission.PROBE


def test_the_budget_clock_stands_still_unless_closed() -> None:
    breaker, clock, _ = machine()
    clock.now += 5
    for _ in range(3):
        breaker.failed(probe=False)
    clock.now += 30  # open, then half-open with nobody to probe
    assert breaker.closed_seconds() == 5
    assert breaker.admit() is Admission.PROBE
    clock.now += 2
    breaker.succeeded(probe=True)
    clock.now += 1
    assert breaker.closed_seconds() == 6


def test_a_threshold_of_zero_turns_the_breaker_off() -> None:
    breaker, _, changes = machine(BreakerConfig(failure_threshold=0))
    for _ in range(1000):
        breaker.failed(probe=False)
    assert breaker.admit() is Admission.GO
    assert changes == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RetryableError("HTTP 503", status=503, retry_reason="server_error"), True),
        (RetryableError("HTTP 408", status=408, retry_reason="status"), True),
        (RetryableError("HTTP 425", status=425, retry_reason="status"), False),
        (RetryableError("EnOS code None", status=200, retry_reason="server_error"), True),
        (RetryableError("timed out", retry_reason="timeout"), True),
        (RetryableError("connection error", retry_reason="connection"), True),
        (RetryableError("token endpoint 502", status=502, retry_reason="auth_endpoint"), True),
        (RetryableError("HTTP 429", status=429, retry_reason="rate_limited"), False),
        (RetryableError("HTTP 409", status=409, retry_reason="conflict"), False),
        (RetryableError("token endpoint 429", status=429, retry_reason="auth_endpoint"), False),
        (PermanentError("HTTP 400", status=400), False),
        (AuthFailedError("HTTP 401", status=401), False),
    ],
)
def test_what_trips_the_breaker(error: DeliveryError, expected: bool) -> None:
    assert trips(error) is expected


# --- asyncio: waiting at the breaker -------------------------------------------------------
FAST = BreakerConfig(failure_threshold=2, open_s=0.2, max_open_s=0.4)
DOWN = RetryableError("HTTP 503", status=503)


def opened(config: BreakerConfig = FAST) -> CircuitBreaker:
    breaker = CircuitBreaker(config)
    for _ in range(config.failure_threshold):
        assert breaker.release(False, DOWN)  # attempts made while closed count
    assert state(breaker) is State.OPEN
    return breaker


def test_fifty_waiters_send_one_probe_per_interval_and_all_go_once_it_succeeds() -> None:
    sent: list[tuple[int, float, bool]] = []
    vendor_up_at = 0.5  # seconds after the breaker opened

    async def scenario() -> None:
        breaker = opened()
        started = time.monotonic()

        async def delivery(n: int) -> None:
            while True:
                probe = await breaker.acquire()
                at = time.monotonic() - started
                sent.append((n, at, probe))
                await asyncio.sleep(0.01)  # on the wire
                if at < vendor_up_at:
                    assert not breaker.release(probe, DOWN)  # a failed probe costs nothing
                    continue
                assert breaker.release(probe, None)
                return

        await asyncio.gather(*(delivery(n) for n in range(50)))

    asyncio.run(scenario())
    probes = [(n, round(at, 1)) for n, at, probe in sent if probe]
    # 0.2 s, then 0.4 s (doubled), then the cap; each time the longest-waiting delivery
    assert probes == [(0, 0.2), (1, 0.6)]
    assert len(sent) == 51
    # the rest go on the probe's success (0.01 s on the wire), not on a timer of their own;
    # measured from it, not rounded to a tenth that a busy machine's few ms can tip over
    success = next(at for n, at, probe in sent if probe and n == 1) + 0.01
    assert all(success <= at < success + 0.05 for _, at, probe in sent if not probe)


def test_a_cancelled_waiter_leaves_and_a_cancelled_probe_hands_on_at_once() -> None:
    order: list[str] = []

    async def scenario() -> None:
        breaker = opened()

        async def delivery(name: str, hold_s: float) -> None:
            probe = await breaker.acquire()
            order.append(f"{name}{'-probe' if probe else ''}")
            try:
                await asyncio.sleep(hold_s)
            except asyncio.CancelledError:
                breaker.release(probe, asyncio.CancelledError())
                raise
            breaker.release(probe, None)

        first = asyncio.ensure_future(delivery("a", 10))  # will be the probe, then cancelled
        gone = asyncio.ensure_future(delivery("b", 0))  # cancelled while waiting
        last = asyncio.ensure_future(delivery("c", 0))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.sleep(0.25)  # the wait is over: "a" probes
        assert order == ["a-probe"]
        first.cancel()  # a shutdown or a revocation while the probe is on the wire
        await asyncio.sleep(0.01)
        assert order == ["a-probe", "c-probe"]  # no new wait: the next waiter probes now
        await last
        assert state(breaker) is State.CLOSED
        await asyncio.gather(first, gone, return_exceptions=True)

    asyncio.run(scenario())


class Edge:
    """A clock at the end of the open wait: the first reading falls just before it, every
    later one just after (the timer rings, ``admit`` still sees it open, the re-arm not)."""

    def __init__(self, at: float) -> None:
        self.at, self.read = at, False

    def __call__(self) -> float:
        before, self.read = not self.read, True
        return self.at - 1e-9 if before else self.at + 1e-9


def test_the_wait_ending_between_admit_and_the_re_arm_still_lets_the_probe_go() -> None:
    async def scenario() -> None:
        clock = Clock()
        breaker = CircuitBreaker(CONFIG, clock=clock)
        for _ in range(CONFIG.failure_threshold):
            breaker.release(False, DOWN)
        waiter = asyncio.ensure_future(breaker.acquire())
        await asyncio.sleep(0)
        edge = Edge(breaker.machine.open_until)
        breaker.machine.clock = edge
        assert breaker._timer is not None
        breaker._timer.cancel()  # it is this timer that rings, at the very end of the wait
        breaker._ring()
        assert await asyncio.wait_for(waiter, 0.5) is True  # the probe goes

    asyncio.run(scenario())


def test_shows_half_open_when_the_wait_is_over_even_with_nobody_waiting() -> None:
    changes: list[State] = []

    async def scenario() -> None:
        breaker = CircuitBreaker(FAST, on_change=changes.append)
        breaker.release(False, DOWN)
        breaker.release(False, DOWN)
        await asyncio.sleep(0.3)

    asyncio.run(scenario())
    assert changes == [State.OPEN, State.HALF_OPEN]


def test_state_is_exported_per_connection(tmp_path: Path) -> None:
    from consumer.delivery.dispatcher import Dispatcher

    path = tmp_path / "config.yaml"
    path.write_text(
        "breaker: {failure_threshold: 2}\n"
        "connections:\n  webflow:\n"
        "    breaker-test: {base_url: 'https://api.webflow.com', token: t}\n"
    )
    dispatcher = Dispatcher(load_config(path, {}))
    labels = {"vendor": "webflow", "connection": "breaker-test"}

    def sample(name: str, **extra: str) -> float | None:
        return REGISTRY.get_sample_value(name, {**labels, **extra})

    opened_before = sample("asset_sync_connection_transitions_total", state="open") or 0.0
    assert sample("asset_sync_connection_state") == 0

    async def fail_twice() -> None:
        breaker = dispatcher.breakers[("webflow", "breaker-test")]
        breaker.release(False, DOWN)
        breaker.release(False, DOWN)

    asyncio.run(fail_twice())
    assert sample("asset_sync_connection_state") == 2
    assert sample("asset_sync_connection_transitions_total", state="open") == opened_before + 1


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("breaker: {failure_threshold: -1}", "breaker.failure_threshold"),
        ("breaker: {open_s: 0}", "breaker.open_s"),
        ("breaker: {open_s: 10, max_open_s: 5}", "breaker.max_open_s"),
        ("breaker: {failures: 3}", "breaker.failures"),
        ("breaker: {open_s: soon}", "breaker.open_s"),
    ],
)
def test_bad_breaker_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.key == key


def test_breaker_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("breaker: {max_open_s: 60}\n")
    config = load_config(path, {})
    assert config.breaker == BreakerConfig(failure_threshold=10, open_s=1.0, max_open_s=60.0)
