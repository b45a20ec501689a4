"""The pause gate (issue 17, point 4) in the real pipeline, dispatcher, breakers and vendor
fakes: a paused connection starts no vendor call, its events wait past the retry budget
without spending it, others flow, and resuming delivers every event once, in per-asset
order. The pause arrives as a control record applied by ``Control`` (no broker: records are
applied by hand, as its follower would); only the offsets and the dead-letter writer are
in-memory stand-ins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from kafka.structs import TopicPartition
from prometheus_client import REGISTRY

from consumer.broker.dead_letter import SourceRecord
from consumer.broker.offsets import OffsetTracker
from consumer.config import Config, parse_config
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.pipeline import Pipeline
from consumer.events import Event, parse_record
from consumer.state.control import Control, Pause
from tests.dispatch.conftest import NoDeadLetters
from tests.fakes import FakeVendors, Reply
from tests.samples import encode, marked, received_markers

# A budget the pause outlasts: were the wait counted, the first failure after it would give up.
RETRY = {"max_attempts": 3, "max_elapsed_s": 1.0, "base_delay_s": 0.01, "max_delay_s": 0.05}
PAUSE_S = 1.5
TRELICA = ("trelica", "default")


def config(fakes: FakeVendors) -> Config:
    return parse_config({"connections": fakes.connections(), "retry": RETRY}, environ={})


def update(vendor: str, asset: int, n: int) -> Event:
    parsed = parse_record(encode(marked(vendor, f"{asset}-{n}", asset_id=f"asset-{asset}")))
    assert isinstance(parsed, Event), parsed
    return parsed


def lexful(n: int) -> Event:
    parsed = parse_record(
        encode(marked("lexful", f"l{n}", asset_id=f"019983a9-c4c0-73af-aec9-46{n:010x}"))
    )
    assert isinstance(parsed, Event), parsed
    return parsed


def control_record(control: Control, offset: int, paused: bool) -> None:
    control.apply(0, offset, b"pause/trelica/default", Pause(paused, "ops@test", "now").to_json())


def paused_gauge() -> float | None:
    return REGISTRY.get_sample_value(
        "asset_sync_connection_paused", {"vendor": "trelica", "connection": "default"}
    )


def markers(fakes: FakeVendors) -> list[str]:
    return [m for r in fakes.trelica.succeeded() for m in received_markers(r.body, "trelica")]


async def until(predicate: Callable[[], bool], message: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        await asyncio.sleep(0.02)


class Harness:
    def __init__(self, fakes: FakeVendors) -> None:
        self.config = config(fakes)
        self.dispatcher = Dispatcher(self.config, rand=lambda: 0.5)
        self.dead_letters = NoDeadLetters()
        self.tracker = OffsetTracker()
        self.pipeline = Pipeline(self.config, self.dispatcher, self.dead_letters, self.tracker)
        self.control = Control(self.config, "test", replica="r0")
        self.control.obey(self.dispatcher.breakers)
        self.offset = 0

    def submit(self, *events: Event) -> None:
        for event in events:
            record = SourceRecord("t", 0, self.offset, 0, None, b"", ())
            self.pipeline.submit(record, event)
            self.offset += 1

    def waiting(self, vendor: str = "trelica") -> int:
        return next(n for v, c, n, _ in self.pipeline.backlog() if (v, c) == (vendor, "default"))

    async def close(self) -> None:
        await self.pipeline.cancel_all()
        await self.dispatcher.close()


def test_a_paused_connection_waits_past_its_budget_and_resumes_in_order(
    fakes: FakeVendors,
) -> None:
    trelica = [update("trelica", asset, n) for n in range(3) for asset in range(2)]
    others = [lexful(n) for n in range(4)]

    async def run() -> None:
        harness = Harness(fakes)
        try:
            control_record(harness.control, 0, paused=True)
            assert paused_gauge() == 1
            harness.submit(*trelica, *others)
            # Then the other vendor flows while trelica gets no call at all, not even a token
            await until(lambda: len(fakes.lexful.succeeded()) == 4, "lexful delivered")
            await asyncio.sleep(PAUSE_S)  # longer than retry.max_elapsed_s
            assert fakes.trelica.received == []
            assert harness.waiting() == 6 and harness.waiting("lexful") == 0
            breaker = harness.dispatcher.breakers[TRELICA]
            assert breaker.paused and breaker.attempts == 0
            # When resumed, with the vendor failing the first call: that failure is retried,
            # not the end of a budget the pause had spent
            fakes.trelica.fail_next(Reply(503))
            control_record(harness.control, 1, paused=False)
            assert paused_gauge() == 0
            assert await harness.pipeline.wait_idle(20)
            assert harness.dead_letters.written == []
            got = markers(fakes)
            assert sorted(got) == sorted(f"{a}-{n}" for a in range(2) for n in range(3))
            for asset in range(2):  # each asset's updates in the order they came
                mine = [m for m in got if m.startswith(f"{asset}-")]
                assert mine == [f"{asset}-{n}" for n in range(3)]
        finally:
            await harness.close()

    asyncio.run(run())


def test_a_request_on_the_wire_finishes_and_nothing_new_starts(fakes: FakeVendors) -> None:
    events = [update("trelica", 0, n) for n in range(3)]

    async def run() -> None:
        harness = Harness(fakes)
        breaker = harness.dispatcher.breakers[TRELICA]
        try:
            fakes.trelica.fail_next(Reply(200, delay_s=0.5))  # the first update is slow
            harness.submit(*events)
            await until(lambda: len(fakes.trelica.updates()) == 1, "the first update sent")
            control_record(harness.control, 0, paused=True)
            await until(lambda: len(fakes.trelica.succeeded()) == 1, "the first update answered")
            await asyncio.sleep(0.5)
            assert len(fakes.trelica.updates()) == 1, "a call started while paused"
            assert harness.waiting() == 2 and breaker.attempts == 0
            control_record(harness.control, 1, paused=False)
            assert await harness.pipeline.wait_idle(20)
            assert markers(fakes) == ["0-0", "0-1", "0-2"]
            assert harness.dead_letters.written == []
        finally:
            await harness.close()

    asyncio.run(run())


def test_a_replica_that_starts_while_paused_starts_paused(fakes: FakeVendors) -> None:
    """The topic is read before the breakers exist: obeying applies what was read."""

    async def run() -> None:
        cfg = config(fakes)
        control = Control(cfg, "test", replica="r1")
        control_record(control, 0, paused=True)  # read at start, before any breaker
        dispatcher = Dispatcher(cfg, rand=lambda: 0.5)
        pipeline = Pipeline(cfg, dispatcher, NoDeadLetters(), OffsetTracker())
        control.obey(dispatcher.breakers)
        try:
            pipeline.submit(SourceRecord("t", 0, 0, 0, None, b"", ()), update("trelica", 0, 0))
            await asyncio.sleep(0.3)
            assert fakes.trelica.received == []
            report: dict[str, Any] = control.report()
            assert report["connections"] == {}  # no backlog attached: nothing to report
            control_record(control, 1, paused=False)
            assert await pipeline.wait_idle(20)
            assert markers(fakes) == ["0-0"]
        finally:
            await pipeline.cancel_all()
            await dispatcher.close()

    asyncio.run(run())


def test_requests_queued_behind_the_pace_wait_for_the_resume(fakes: FakeVendors) -> None:
    """Attempts that passed the breaker before the pause and wait for the connection's pace
    (a rate limit) start no call either while it is paused."""
    events = [update("trelica", asset, 0) for asset in range(20)]  # 20 assets: all at once

    async def run() -> None:
        connections = fakes.connections()
        connections["trelica"]["default"]["rate_limit"] = "4/s"
        cfg = parse_config({"connections": connections, "retry": RETRY}, environ={})
        dispatcher = Dispatcher(cfg, rand=lambda: 0.5)
        pipeline = Pipeline(cfg, dispatcher, NoDeadLetters(), OffsetTracker())
        control = Control(cfg, "test", replica="r2")
        control.obey(dispatcher.breakers)
        try:
            for offset, event in enumerate(events):
                pipeline.submit(SourceRecord("t", 0, offset, 0, None, b"", ()), event)
            await until(lambda: len(fakes.trelica.updates()) >= 2, "the pace begun")
            assert dispatcher.breakers[TRELICA].attempts > 10  # most wait in the pacer
            control_record(control, 0, paused=True)
            await asyncio.sleep(0.3)  # a call the pacer let go just before is on its way
            sent = len(fakes.trelica.updates())
            await asyncio.sleep(1.0)  # four more would go at 4/s
            assert len(fakes.trelica.updates()) == sent, "a queued request went while paused"
            control_record(control, 1, paused=False)
            assert await pipeline.wait_idle(30)
            assert sorted(markers(fakes)) == sorted(f"{a}-0" for a in range(20))
        finally:
            await pipeline.cancel_all()
            await dispatcher.close()

    asyncio.run(run())


def test_paused_work_holds_no_slot_of_the_other_connections(fakes: FakeVendors) -> None:
    """With two slots for every vendor together, five paused Trelica assets take none of
    them: Lexful still flows."""
    trelica = [update("trelica", asset, 0) for asset in range(5)]

    async def run() -> None:
        cfg = parse_config(
            {
                "connections": fakes.connections(),
                "retry": RETRY,
                "dispatch": {"max_in_flight": 2, "max_in_flight_per_connection": 2},
            },
            environ={},
        )
        dispatcher = Dispatcher(cfg, rand=lambda: 0.5)
        pipeline = Pipeline(cfg, dispatcher, NoDeadLetters(), OffsetTracker())
        control = Control(cfg, "test", replica="r3")
        control.obey(dispatcher.breakers)
        try:
            control_record(control, 0, paused=True)
            for offset, event in enumerate([*trelica, *(lexful(n) for n in range(4))]):
                pipeline.submit(SourceRecord("t", 0, offset, 0, None, b"", ()), event)
            await until(lambda: len(fakes.lexful.succeeded()) == 4, "lexful delivered", 10)
            assert fakes.trelica.received == []
            control_record(control, 1, paused=False)
            assert await pipeline.wait_idle(20)
            assert sorted(markers(fakes)) == sorted(f"{a}-0" for a in range(5))
        finally:
            await pipeline.cancel_all()
            await dispatcher.close()

    asyncio.run(run())


def test_a_revocation_or_a_stop_does_not_wait_for_paused_work(fakes: FakeVendors) -> None:
    """Paused work is not on the wire: a revocation drops it at once (the new owner has it)
    and a shutdown does not spend its grace period on it."""

    async def run() -> None:
        harness = Harness(fakes)
        try:
            control_record(harness.control, 0, paused=True)
            harness.submit(update("trelica", 0, 0), update("trelica", 1, 0))
            await asyncio.sleep(0.2)  # both wait for the resume
            started = time.monotonic()
            assert await harness.pipeline.wait_stoppable(5)
            assert time.monotonic() - started < 1
            await harness.pipeline.settle({TopicPartition("t", 0)}, grace_s=3)
            assert time.monotonic() - started < 1
            assert harness.waiting() == 0
            control_record(harness.control, 1, paused=False)
            await asyncio.sleep(0.3)
            assert fakes.trelica.received == []  # dropped: nothing of it is sent
        finally:
            await harness.close()

    asyncio.run(run())
