"""The retry policy as a value: deterministic waits, server floors, budgets."""

from __future__ import annotations

import asyncio
import email.utils

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


def test_permanent_error_is_not_retried() -> None:
    policy = RetryPolicy(RetryConfig(base_delay_s=0.0))
    with pytest.raises(PermanentError) as caught:
        run(policy, [PermanentError("bad", status=400), None])
    assert caught.value.attempts == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sleeps(pacer: Pacer, count: int, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delay each of ``count`` concurrent requests is given, on a frozen clock."""
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(round(seconds, 3))

    monkeypatch.setattr("consumer.vendors.pacing.asyncio.sleep", fake_sleep)

    async def all_wait() -> None:
        pacer.answered()  # past the first probing request
        for _ in range(count):
            await pacer.wait()

    asyncio.run(all_wait())
    return delays


def test_pacer_holds_every_request_after_a_429_then_paces_at_the_vendors_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pacer = Pacer(60.0, Clock())
    pacer.observe(
        429, {"Retry-After": "2", "X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "60"}
    )
    assert pacer.blocked_until == 102.0
    # nothing before Retry-After, then one request a second (60 a minute)
    assert sleeps(pacer, 5, monkeypatch) == [2.0, 2.0, 3.0, 4.0, 5.0]


def test_pacer_bursts_what_remains_then_spaces_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    pacer = Pacer(1.0, Clock())
    pacer.observe(200, {"X-RateLimit-Remaining": "3", "X-RateLimit-Limit": "50"})
    assert sleeps(pacer, 6, monkeypatch) == [0.02, 0.04, 0.06]  # 3 at once, then 50/s
    assert pacer.blocked_until == 0.0


def test_pacer_without_headers_never_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    pacer = Pacer(60.0, Clock())
    pacer.observe(200, {})
    assert sleeps(pacer, 100, monkeypatch) == []


def test_pacer_lets_one_probe_go_before_the_limit_is_known() -> None:
    pacer = Pacer(1.0, Clock())
    order: list[str] = []

    async def request(name: str) -> None:
        await pacer.wait()
        order.append(name)

    async def scenario() -> None:
        first = asyncio.ensure_future(request("probe"))
        others = [asyncio.ensure_future(request(f"r{i}")) for i in range(3)]
        await asyncio.sleep(0.01)
        assert order == ["probe"]  # the others wait for the probe's answer
        pacer.observe(200, {"X-RateLimit-Remaining": "10", "X-RateLimit-Limit": "50"})
        pacer.answered()
        await asyncio.gather(first, *others)

    asyncio.run(scenario())
    assert order == ["probe", "r0", "r1", "r2"]
