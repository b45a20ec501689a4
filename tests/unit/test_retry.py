"""The retry policy as a value: deterministic waits, server floors, budgets."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from consumer.config import RetryConfig
from consumer.errors import PermanentError, RetryableError
from consumer.retry import RetryPolicy, parse_retry_after, wait_times
from consumer.vendors.pacing import Pacer


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


def released(pacer: Pacer, count: int, answers: list[tuple[int, dict[str, str]]]) -> list[float]:
    """When each of ``count`` concurrent requests is let go (seconds from the start, real
    clock); the n-th request to go gets ``answers[n]`` (default a plain 200)."""
    times: list[float] = []

    async def request(started: float) -> None:
        await pacer.wait()
        times.append(round(time.monotonic() - started, 1))
        status, headers = answers[len(times) - 1] if len(times) <= len(answers) else (200, {})
        await asyncio.sleep(0.01)  # on the wire
        pacer.answered()
        pacer.observe(status, headers)

    async def run() -> None:
        started = time.monotonic()
        await asyncio.gather(*(request(started) for _ in range(count)))

    asyncio.run(run())
    return times


def test_pacer_holds_every_request_after_a_429_then_paces_at_the_vendors_rate() -> None:
    pacer = Pacer(1.0)
    pacer.observe(
        429, {"Retry-After": "0.2", "X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "10"}
    )
    # nothing before Retry-After; one probe first, then what the bucket refilled during the
    # wait (2 at 10 a second), then the rest at the vendor's pace
    assert released(pacer, 4, []) == [0.2, 0.2, 0.3, 0.4]


def test_pacer_sends_one_probe_per_retry_after_while_the_vendor_refuses() -> None:
    pacer = Pacer(60.0)
    refused = (429, {"Retry-After": "0.2"})
    pacer.observe(*refused)
    # 50 deliveries waiting: the 429s cost one call per Retry-After, not 50
    times = released(pacer, 50, [refused, refused])
    assert times[:3] == [0.2, 0.4, 0.6]
    assert set(times[3:]) == {0.6}  # the third probe succeeded: everyone goes


def test_a_429_voids_the_slots_reserved_before_it() -> None:
    pacer = Pacer(1.0)
    pacer.answered()
    pacer.observe(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "10"})
    refused = (429, {"Retry-After": "0.5", "X-RateLimit-Remaining": "0"})
    # three slots reserved 0.1 s apart; the first is refused: the other two do not go at
    # their slots into the same refusal, but after the wait (one probe, then the next)
    assert released(pacer, 3, [refused]) == [0.1, 0.6, 0.6]


def test_pacer_bursts_what_remains_then_spaces_requests() -> None:
    pacer = Pacer(1.0)
    pacer.answered()  # past the first probing request
    pacer.observe(200, {"X-RateLimit-Remaining": "3", "X-RateLimit-Limit": "10"})
    assert released(pacer, 6, []) == [0.0, 0.0, 0.0, 0.1, 0.2, 0.3]  # 3 at once, then 10/s
    assert pacer.blocked_until == 0.0


def test_pacer_without_headers_never_waits() -> None:
    pacer = Pacer(60.0)
    pacer.answered()
    pacer.observe(200, {})
    assert set(released(pacer, 100, [])) == {0.0}


def probe_order(abandon_first_probe: bool) -> tuple[list[str], list[str]]:
    """Four concurrent requests before the limit is known: who went before the answer (and
    after the first probe was called off, if it was), and in the end."""
    pacer = Pacer(1.0)
    order: list[str] = []
    before: list[str] = []

    async def request(name: str) -> None:
        await pacer.wait()
        order.append(name)

    async def scenario() -> None:
        tasks = [asyncio.ensure_future(request(n)) for n in ("probe", "r0", "r1", "r2")]
        await asyncio.sleep(0.01)
        if abandon_first_probe:
            pacer.abandoned()  # the probe's delivery was cancelled before any answer
            await asyncio.sleep(0.01)
        before.extend(order)
        pacer.observe(200, {"X-RateLimit-Remaining": "10", "X-RateLimit-Limit": "50"})
        pacer.answered()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    return before, order


def test_pacer_lets_one_probe_go_before_the_limit_is_known() -> None:
    before, order = probe_order(abandon_first_probe=False)
    assert before == ["probe"]  # the others wait for the probe's answer
    assert order == ["probe", "r0", "r1", "r2"]


def test_a_probe_called_off_hands_the_probe_on_instead_of_opening_the_gate() -> None:
    before, order = probe_order(abandon_first_probe=True)
    assert before == ["probe", "r0"]  # one new probe, not a wave
    assert order == ["probe", "r0", "r1", "r2"]
