"""The pacer: probes, 429s, the pace from the vendor's headers, and replicas that share one
credential (token bucket and fixed window vendors), in virtual time.

The replica tests run the real ``Pacer`` (one per simulated replica, 256 deliveries waiting
each, as ``dispatch.max_in_flight_per_connection`` allows) against the rate limiters of the
fake vendors (tests/fakes/rate_limits.py) on an event loop whose clock only moves when every
task waits: minutes of traffic take a fraction of a second, and the figures are exact.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from consumer.config import load_config, parse_rate_limit
from consumer.delivery.retry import parse_retry_after
from consumer.errors import ConfigError
from consumer.vendors.pacing import Pacer
from tests.fakes.rate_limits import FixedWindow, Limiter, TokenBucket

T = TypeVar("T")
START = 1000.0  # virtual seconds at the start of every run


class _Selector(selectors.DefaultSelector):
    """Never blocks: a wait for ``timeout`` moves the virtual clock by that much."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START

    def select(self, timeout: float | None = None) -> Any:
        if timeout is None:
            raise RuntimeError("every task waits for something that never comes")
        self.now += max(timeout, 0.0)
        return super().select(0)


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _Selector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return float(self._virtual.now)


def run(scenario: Callable[[VirtualLoop], Awaitable[T]]) -> T:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(scenario(loop))
    finally:
        loop.close()


# --- replicas sharing a credential -------------------------------------------------------------
@dataclass
class Sent:
    at: float  # when the vendor counted it
    replica: int
    ok: bool


@dataclass
class Traffic:
    sent: list[Sent] = field(default_factory=list)
    refused_at: list[tuple[float, int]] = field(default_factory=list)  # 429 answers arrived

    def window(self, start: float, end: float) -> list[Sent]:
        return [s for s in self.sent if start <= s.at - START < end]

    def rate(self, start: float, end: float) -> float:
        return sum(s.ok for s in self.window(start, end)) / (end - start)

    def refused(self, start: float, end: float) -> float:
        sent = self.window(start, end)
        return sum(not s.ok for s in sent) / max(len(sent), 1)


def replicas(
    make_vendor: Callable[[Callable[[], float]], Limiter],
    window_s: float,
    count: int,
    seconds: float,
    *,
    waiting: int = 256,
    latency_s: float = 0.005,
    stagger_s: float = 0.0,
    foreign_429_at: float | None = None,
) -> Traffic:
    """``count`` replicas, each with ``waiting`` deliveries always ready, share one vendor
    credential for ``seconds``. A delivery answered 429 is retried after its Retry-After
    plus jitter, like the retry policy does. ``foreign_429_at``: one extra 429 (Retry-After
    1) answers the first request sent after that time, as when something else uses the key."""
    traffic = Traffic()
    rand = random.Random(7)

    async def scenario(loop: VirtualLoop) -> Traffic:
        vendor = make_vendor(loop.time)
        end = START + seconds
        foreign = [foreign_429_at]

        async def delivery(pacer: Pacer, replica: int) -> None:
            while loop.time() < end:
                probe = await pacer.wait()
                sent = loop.time()
                await asyncio.sleep(latency_s * (0.5 + rand.random()) / 2)
                if foreign[0] is not None and loop.time() - START >= foreign[0]:
                    foreign[0] = None
                    ok, headers = False, {"Retry-After": "1"}
                else:
                    ok, headers = vendor.take()
                if loop.time() < end:
                    traffic.sent.append(Sent(loop.time(), replica, ok))
                await asyncio.sleep(latency_s * (0.5 + rand.random()) / 2)
                pacer.answered(probe)
                pacer.observe(200 if ok else 429, headers, sent)
                if not ok:
                    traffic.refused_at.append((loop.time(), replica))
                    wait = parse_retry_after(headers.get("Retry-After")) or 0.0
                    await asyncio.sleep(wait + rand.random() * 0.2)

        async def replica(number: int) -> None:
            await asyncio.sleep(number * stagger_s)
            pacer = Pacer(window_s, clock=loop.time)
            await asyncio.gather(*(delivery(pacer, number) for _ in range(waiting)))

        await asyncio.gather(*(replica(n) for n in range(count)))
        return traffic

    return run(scenario)


def token_bucket(clock: Callable[[], float]) -> Limiter:
    """The issue's vendor: 20/s, a bucket of 20, announced as 1200 a minute."""
    return TokenBucket(20, 20, announced=1200, clock=clock)


def fixed_window(clock: Callable[[], float]) -> Limiter:
    """Webflow's plan limit, 60 a minute all at the minute's start, scaled to 20 a second."""
    return FixedWindow(20, 1.0, clock=clock)


VENDORS = {"token bucket": (token_bucket, 60.0), "fixed window": (fixed_window, 1.0)}


@pytest.mark.parametrize("vendor", list(VENDORS))
@pytest.mark.parametrize("count", [1, 2, 3])
def test_replicas_sharing_one_credential_use_most_of_its_limit_and_few_429s(
    vendor: str, count: int
) -> None:
    make, window_s = VENDORS[vendor]
    traffic = replicas(make, window_s, count, seconds=80)
    rate, refused = traffic.rate(20, 80), traffic.refused(20, 80)
    print(f"{vendor}, {count} replicas: {rate / 20:.1%} of the limit, {refused:.2%} 429")
    assert rate >= 0.9 * 20
    assert refused <= 0.02


@pytest.mark.parametrize("vendor", list(VENDORS))
@pytest.mark.parametrize("count", [2, 3])
def test_replicas_starting_together_send_again_within_2_s_of_every_429(
    vendor: str, count: int
) -> None:
    """The issue's two replicas with 400 ready each: 2.6 accepted requests/s between them and
    46% of requests answered 429, each 429 stalling a replica for about 12 s."""
    make, window_s = VENDORS[vendor]
    traffic = replicas(make, window_s, count, seconds=30)
    assert traffic.refused_at, "no 429 at all: the scenario tests nothing"
    for refused, replica in traffic.refused_at:
        if refused - START > 28:
            continue  # too late to see the next request in the run
        later = [s.at for s in traffic.sent if s.replica == replica and s.at > refused]
        assert later and later[0] - refused <= 2.0, (refused - START, later[:1])
    assert traffic.rate(0, 30) >= 0.8 * 20
    assert traffic.refused(0, 30) <= 0.05


def test_a_single_429_with_256_waiting_sends_again_within_2_s_and_keeps_the_pace() -> None:
    """The issue's stall: slots reserved before a 429 were voided but never given back, so
    the probe waited behind them (12 s at 20/s with 256 deliveries waiting)."""
    traffic = replicas(token_bucket, 60.0, 1, seconds=20, foreign_429_at=5.0)
    ((refused, _),) = traffic.refused_at
    after = [s.at for s in traffic.sent if s.at > refused]
    assert after[0] - refused <= 2.0
    # then the pace again: each of the next seconds carries at least 2/3 of the limit
    resumed = after[0] - START
    for second in range(3):
        assert traffic.rate(resumed + second, resumed + second + 1) >= 13, second


# --- one pacer, step by step -------------------------------------------------------------------
def released(
    pacer_at: Callable[[Callable[[], float]], Pacer],
    count: int,
    answers: list[tuple[int, dict[str, str]]],
) -> list[float]:
    """When each of ``count`` concurrent requests is let go (virtual seconds from the
    start); the n-th request to go gets ``answers[n]`` (default a plain 200)."""
    times: list[float] = []

    async def scenario(loop: VirtualLoop) -> list[float]:
        pacer = pacer_at(loop.time)

        async def request() -> None:
            probe = await pacer.wait()
            sent = loop.time()
            times.append(round(sent - START, 2))
            status, headers = answers[len(times) - 1] if len(times) <= len(answers) else (200, {})
            await asyncio.sleep(0.01)  # on the wire
            pacer.answered(probe)
            pacer.observe(status, headers, sent)

        await asyncio.gather(*(request() for _ in range(count)))
        return times

    return run(scenario)


def learned(limit: int, remaining: int, window_s: float = 1.0) -> Callable[..., Pacer]:
    """A pacer past its first probe, that was told ``limit`` and ``remaining``."""

    def make(clock: Callable[[], float]) -> Pacer:
        pacer = Pacer(window_s, clock=clock)
        pacer.answered()
        pacer.observe(
            200, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)}
        )
        return pacer

    return make


def test_after_a_429_one_probe_at_retry_after_then_the_pace() -> None:
    def make(clock: Callable[[], float]) -> Pacer:
        pacer = Pacer(1.0, clock=clock)
        headers = {"Retry-After": "0.2", "X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "10"}
        pacer.observe(429, headers)
        return pacer

    # nothing before Retry-After; the probe, then the rest at the pace: 10/s cut to 0.7
    # by the 429, less the margin (6.8/s)
    assert released(make, 4, []) == pytest.approx([0.2, 0.35, 0.49, 0.64], abs=0.01)


def test_a_429_holds_the_queue_but_voids_no_place_in_it() -> None:
    # three requests paced 0.1 s apart; the first is refused: nothing goes before its
    # Retry-After, then the probe at once, then the pace (cut to 0.7 by the 429)
    refused = (429, {"Retry-After": "0.5", "X-RateLimit-Remaining": "0"})
    assert released(learned(10, 0), 3, [refused]) == [0.1, 0.61, 0.76]


def test_pacer_sends_one_probe_per_retry_after_while_the_vendor_refuses() -> None:
    def make(clock: Callable[[], float]) -> Pacer:
        pacer = Pacer(60.0, clock=clock)
        pacer.observe(429, {"Retry-After": "0.2"})
        return pacer

    refused = (429, {"Retry-After": "0.2"})
    # 50 deliveries waiting: the 429s cost one call per Retry-After, not 50
    times = released(make, 50, [refused, refused])
    assert times[:3] == [0.2, 0.41, 0.62]
    assert set(times[3:]) == {0.63}  # the third probe succeeded: everyone goes


def test_after_a_quiet_spell_the_pacer_bursts_what_remains_then_spaces_requests() -> None:
    async def scenario(loop: VirtualLoop) -> list[float]:
        pacer = learned(10, 9)(loop.time)
        await asyncio.sleep(5)  # quiet: the bucket refills, up to what the vendor said
        pacer.observe(200, {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "3"})
        times = []
        for _ in range(5):
            await pacer.wait()
            times.append(round(loop.time() - START - 5, 2))
        return times

    assert run(scenario) == [0.0, 0.0, 0.0, 0.1, 0.21]  # 3 at once, then 9.7/s


def test_pacer_without_headers_never_waits() -> None:
    def make(clock: Callable[[], float]) -> Pacer:
        pacer = Pacer(60.0, clock=clock)
        pacer.answered()
        pacer.observe(200, {})
        return pacer

    assert set(released(make, 100, [])) == {0.0}


def probe_order(abandon_first_probe: bool) -> tuple[list[str], list[str]]:
    """Four concurrent requests before the limit is known: who went before the answer (and
    after the first probe was called off, if it was), and in the end."""
    order: list[str] = []
    before: list[str] = []

    async def scenario(loop: VirtualLoop) -> None:
        pacer = Pacer(1.0, clock=loop.time)

        async def request(name: str) -> None:
            await pacer.wait()
            order.append(name)

        tasks = [asyncio.ensure_future(request(n)) for n in ("probe", "r0", "r1", "r2")]
        await asyncio.sleep(0.01)
        if abandon_first_probe:
            pacer.abandoned()  # the probe's delivery was cancelled before any answer
            await asyncio.sleep(0.01)
        before.extend(order)
        pacer.answered()
        pacer.observe(200, {"X-RateLimit-Remaining": "10", "X-RateLimit-Limit": "50"})
        await asyncio.gather(*tasks)

    run(scenario)
    return before, order


def test_pacer_lets_one_probe_go_before_the_limit_is_known() -> None:
    before, order = probe_order(abandon_first_probe=False)
    assert before == ["probe"]  # the others wait for the probe's answer
    assert order == ["probe", "r0", "r1", "r2"]


def test_a_probe_called_off_hands_the_probe_on_instead_of_opening_the_gate() -> None:
    before, order = probe_order(abandon_first_probe=True)
    assert before == ["probe", "r0"]  # one new probe, not a wave
    assert order == ["probe", "r0", "r1", "r2"]


def test_a_request_cancelled_in_the_queue_leaves_it() -> None:
    async def scenario(loop: VirtualLoop) -> list[str]:
        pacer = learned(10, 0)(loop.time)
        order: list[str] = []

        async def request(name: str) -> None:
            await pacer.wait()
            order.append(name)

        tasks = {n: asyncio.ensure_future(request(n)) for n in ("a", "b", "c", "d")}
        await asyncio.sleep(0.05)
        tasks["a"].cancel()  # the head, sleeping for its slot (a rebalance took it)
        tasks["b"].cancel()  # and the one next in line, in the same breath
        ends = await asyncio.gather(*tasks.values(), return_exceptions=True)
        return [*order, *(type(end).__name__ for end in ends)]

    # c and d go; a and b end cancelled (not with an error of the queue's)
    assert run(scenario) == ["c", "d", "CancelledError", "CancelledError", "NoneType", "NoneType"]


# --- the limit: configured, stated, shared -----------------------------------------------------
@pytest.mark.parametrize(
    ("configured", "stated", "rate"),
    [
        (1.0, None, 0.97),  # rate_limit: 60/min, the vendor says nothing
        (1.0, 1200, 0.97),  # the vendor allows more than configured: the configured
        (100.0, 1200, 19.4),  # the vendor allows less: the vendor's (1200 a minute)
        (None, 1200, 19.4),
    ],
)
def test_the_limit_is_the_smaller_of_configured_and_stated(
    configured: float | None, stated: int | None, rate: float
) -> None:
    pacer = Pacer(60.0, configured=configured)
    if stated:
        pacer.answered()
        pacer.observe(200, {"X-RateLimit-Limit": str(stated), "X-RateLimit-Remaining": "5"})
    assert pacer.rate == pytest.approx(rate)


def test_a_configured_limit_paces_before_any_header() -> None:
    def make(clock: Callable[[], float]) -> Pacer:
        pacer = Pacer(60.0, clock=clock, configured=parse_rate_limit("120/min"))
        pacer.answered()
        pacer.observe(200, {})
        return pacer

    assert released(make, 4, []) == [0.52, 1.03, 1.55, 2.06]  # 2/s less the margin


def test_the_share_is_cut_once_per_congestion_then_grows_back_to_the_limit_only() -> None:
    refused = {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "Retry-After": "1"}
    plenty = {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "15"}

    async def scenario(loop: VirtualLoop) -> list[float]:
        pacer = learned(20, 10)(loop.time)
        sent = loop.time()
        await asyncio.sleep(0.1)
        pacer.observe(429, refused, sent)
        pacer.observe(429, refused, sent)  # also sent before the cut: no second cut
        shares = [pacer.share]

        async def requests() -> None:  # more than the pacer lets go: it is what limits
            while loop.time() < START + 100:
                probe = await pacer.wait()
                sent = loop.time()
                await asyncio.sleep(0.01)
                pacer.answered(probe)
                pacer.observe(200, plenty, sent)  # plenty remains: room to grow
                shares.append(pacer.share)

        await asyncio.gather(*(requests() for _ in range(50)))
        return shares

    shares = run(scenario)
    assert shares[0] == pytest.approx(0.7)
    assert shares[-1] == 1.0 and max(shares) == 1.0  # back, and never past the stated limit
    assert shares.index(1.0) > 100  # by small steps (1% of the limit a second)


def test_a_bucket_announced_per_minute_is_not_taken_for_a_fixed_window() -> None:
    """20/s announced as 1200 a minute: Remaining (at most 20) jumps back whenever the
    replicas pause, but never nears 1200, so no pause waits for a window's end."""
    traffic = replicas(token_bucket, 60.0, 2, seconds=20, stagger_s=3)
    gaps = [b.at - a.at for a, b in zip(traffic.sent, traffic.sent[1:], strict=False)]
    assert max(gaps) < 1.5


@pytest.mark.parametrize(
    ("text", "per_s"),
    [
        ("60/min", 1.0),
        ("20/s", 20.0),
        ("100/minute", 100 / 60),
        ("1000/10min", 1000 / 600),
        ("7200 / hours", 2.0),
    ],
)
def test_rate_limit_reads_requests_per_period(text: str, per_s: float) -> None:
    assert parse_rate_limit(text) == pytest.approx(per_s)


@pytest.mark.parametrize(
    "value", ["60", "fast", "60/fortnight", "20/ms", "0/s", "5/0min", "-5/min", "{a: 1}"]
)
def test_a_bad_rate_limit_stops_the_start_naming_its_key(tmp_path: Path, value: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "connections:\n  webflow:\n    eu: {base_url: https://x.example, token: t0k3n-value,"
        f" rate_limit: {value}}}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path, {})
    assert error.value.key == "connections.webflow.eu.rate_limit"
    assert "t0k3n-value" not in str(error.value)


def test_a_configured_rate_limit_reaches_the_pacer(tmp_path: Path) -> None:
    from consumer.delivery.http import HttpClient
    from consumer.vendors import VENDORS

    path = tmp_path / "config.yaml"
    path.write_text(
        "connections:\n  webflow:\n    eu: {base_url: https://x.example, token: t,"
        " rate_limit: 60/min, rate_window_s: 1}\n"
    )
    config = load_config(path, {})
    connection = config.connection("webflow", "eu")
    assert connection is not None
    client = VENDORS["webflow"](connection, HttpClient(config.dispatch))
    assert (client.pacer.configured, client.pacer.window_s) == (1.0, 1.0)
