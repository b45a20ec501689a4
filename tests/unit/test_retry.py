"""The retry policy as a value: deterministic waits, server floors, budgets."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable

import pytest

from consumer.config import BreakerConfig, RetryConfig
from consumer.delivery.breaker import CircuitBreaker, State
from consumer.delivery.retry import RetryPolicy, parse_retry_after, wait_times
from consumer.errors import PermanentError, RetryableError


def waits(errors: list[RetryableError], rand: float) -> list[float]:
    gen = wait_times(0.5, 4.0, lambda: rand)
    gen.send(None)
    return [gen.send(e) for e in errors]


def test_full_jitter_grows_exponentially_up_to_the_cap() -> None:
    errors = [RetryableError("x") for _ in range(6)]
    assert waits(errors, 1.0) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert waits(errors, 0.0) == [0.0] * 6


def test_server_wait_is_a_floor_with_jitter_only_above_it() -> None:
    errors = [RetryableError("x", retry_after=2.0)] * 3
    assert waits(errors, 0.0) == [2.0, 2.0, 2.0]
    assert all(2.0 <= w <= 2.5 for w in waits(errors, 1.0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("soon", None),
        (None, None),
        ("", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(30)


def run(policy: RetryPolicy, outcomes: list[Exception | None]) -> tuple[object, int]:
    calls = iter(outcomes)

    async def attempt() -> str:
        error = next(calls)
        if error is not None:
            raise error
        return "ok"

    return asyncio.run(policy.run(attempt))


def test_policy_retries_then_succeeds_and_reports_each_backoff() -> None:
    seen: list[tuple[str, str, float]] = []
    policy = RetryPolicy(
        RetryConfig(base_delay_s=0.001),
        rand=lambda: 1.0,
        on_retry=lambda label, e, w: seen.append((label, e.retry_reason, w)),
    )
    calls = iter([RetryableError("a", retry_reason="conflict"), None])

    async def attempt() -> str:
        error = next(calls)
        if error is not None:
            raise error
        return "ok"

    assert asyncio.run(policy.run(attempt, "webflow")) == ("ok", 2)
    assert seen == [("webflow", "conflict", 0.001)]


def test_policy_stops_at_max_attempts_and_counts_them() -> None:
    policy = RetryPolicy(RetryConfig(max_attempts=3, base_delay_s=0.0), rand=lambda: 0.0)
    with pytest.raises(RetryableError) as caught:
        run(policy, [RetryableError(str(i)) for i in range(5)])
    assert caught.value.attempts == 3
    assert caught.value.message == "2"


def test_max_elapsed_counts_the_first_attempt() -> None:
    policy = RetryPolicy(RetryConfig(max_elapsed_s=0.2, base_delay_s=0.0), rand=lambda: 0.0)

    async def slow_failure() -> None:
        await asyncio.sleep(0.3)  # a first attempt that hangs past the whole budget
        raise RetryableError("timeout", retry_reason="timeout")

    with pytest.raises(RetryableError) as caught:
        asyncio.run(policy.run(slow_failure))
    assert caught.value.attempts == 1


def test_permanent_error_is_not_retried() -> None:
    policy = RetryPolicy(RetryConfig(base_delay_s=0.0))
    with pytest.raises(PermanentError) as caught:
        run(policy, [PermanentError("bad", status=400), None])
    assert caught.value.attempts == 1


# --- the retry budget while the connection's breaker is open --------------------------------
def outage_then_up(down_s: float) -> tuple[list[tuple[float, bool]], object]:
    """One delivery through a breaker (2 failures open it, probes 0.2 s then 0.4 s apart)
    while the vendor answers 503 for ``down_s``; returns (time, counted) per request made,
    and what the delivery ended with."""
    policy = RetryPolicy(
        RetryConfig(max_attempts=3, max_elapsed_s=0.3, base_delay_s=0.0), rand=lambda: 0.0
    )
    requests: list[tuple[float, bool]] = []

    async def scenario() -> object:
        breaker = CircuitBreaker(BreakerConfig(failure_threshold=2, open_s=0.2, max_open_s=0.4))
        started = time.monotonic()

        async def attempt() -> str:
            at = time.monotonic() - started
            requests.append((round(at, 1), breaker.state is State.CLOSED))
            if at < down_s:
                raise RetryableError("HTTP 503", status=503)
            return "ok"

        try:
            return await policy.run(attempt, "trelica", breaker)
        except RetryableError as error:
            return error

    return requests, asyncio.run(scenario())


def test_waiting_for_an_open_connection_spends_no_attempt_and_no_time() -> None:
    # max_attempts=3 and max_elapsed_s=0.3, but the vendor is down for 0.5 s: only the two
    # attempts made while the connection was closed count; the probe at 0.2 s fails without
    # cost and the one at 0.6 s delivers
    requests, result = outage_then_up(0.5)
    assert requests == [(0.0, True), (0.0, True), (0.2, False), (0.6, False)]
    assert result == ("ok", 3)


def test_a_connection_that_works_still_spends_the_budget() -> None:
    # closed: the budget runs as before (3 attempts, then retries_exhausted)
    policy = RetryPolicy(RetryConfig(max_attempts=3, base_delay_s=0.0), rand=lambda: 0.0)
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=10))
    with pytest.raises(RetryableError) as caught:
        asyncio.run(policy.run(failing(5), "x", breaker))
    assert caught.value.attempts == 3


def test_time_budget_reads_the_breakers_clock() -> None:
    # a 0.2 s budget; 0.3 s of failures on a closed connection exhaust it
    policy = RetryPolicy(
        RetryConfig(max_attempts=100, max_elapsed_s=0.2, base_delay_s=0.0), rand=lambda: 0.0
    )
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=0))

    async def slow_failure() -> None:
        await asyncio.sleep(0.15)
        raise RetryableError("timeout", retry_reason="timeout")

    with pytest.raises(RetryableError) as caught:
        asyncio.run(policy.run(slow_failure, "x", breaker))
    assert caught.value.attempts == 2


def failing(count: int) -> Callable[[], Awaitable[str]]:
    errors = iter([RetryableError(f"HTTP 503 #{i}", status=503) for i in range(count)])

    async def attempt() -> str:
        error = next(errors, None)
        if error is not None:
            raise error
        return "ok"

    return attempt
