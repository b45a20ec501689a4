"""How many deliveries the pipeline lets out at once, per vendor (no broker involved: the
offsets and the dead-letter writer are in-memory stand-ins, the vendors the contract fakes)."""

from __future__ import annotations

import asyncio
from typing import Any

from kafka.structs import TopicPartition

from consumer.dead_letter import DeadLetterWriter, SourceRecord
from consumer.dispatcher import Dispatcher
from consumer.events import Event
from consumer.offsets import OffsetTracker
from consumer.pipeline import Pipeline
from tests.dispatch.conftest import make_config, valid
from tests.fakes import FakeVendors


class NoDeadLetters(DeadLetterWriter):
    def __init__(self) -> None:
        self.written: list[Any] = []

    async def write(self, *args: Any, **known: Any) -> None:
        self.written.append(args)


def asset_id(n: int) -> str:
    return f"286c1ef7-70f6-4ebd-8f87-e7f591ec{n:04x}"


def run_pipeline(fakes: FakeVendors, events: list[Event], **dispatch: Any) -> OffsetTracker:
    config = make_config(fakes, dispatch=dispatch)
    tracker = OffsetTracker()
    dead_letters = NoDeadLetters()

    async def run() -> None:
        dispatcher = Dispatcher(config, rand=lambda: 0.5)
        pipeline = Pipeline(config, dispatcher, dead_letters, tracker)
        for offset, event in enumerate(events):
            pipeline.submit(SourceRecord("t", 0, offset, 0, None, b"", ()), event)
        try:
            assert await pipeline.wait_idle(30), "the pipeline did not finish"
        finally:
            await dispatcher.close()

    asyncio.run(run())
    assert dead_letters.written == []
    return tracker


def test_a_batched_vendor_counts_calls_not_deliveries(fakes: FakeVendors) -> None:
    """With one slot per vendor, one Autodesk call still carries a full batch: counting
    deliveries would send 40 calls of one asset each."""
    events = [valid("autodesk", asset_id=asset_id(i)) for i in range(40)]
    tracker = run_pipeline(
        fakes, events, max_in_flight_per_vendor=1, batch_max=20, batch_linger_s=0.2
    )
    assert sorted(fakes.autodesk.batch_sizes) == [20, 20]
    assert tracker.to_commit() == {TopicPartition("t", 0): (40, "", -1)}


def test_an_unbatched_vendor_gets_one_delivery_per_slot(fakes: FakeVendors) -> None:
    fakes.lexful.latency_s = 0.2
    events = [valid("lexful", asset_id=asset_id(i)) for i in range(6)]
    run_pipeline(fakes, events, max_in_flight_per_vendor=2)
    arrivals = sorted(r.at for r in fakes.lexful.updates())
    assert len(arrivals) == 6
    # each request takes 0.2 s: requests that arrive within 0.15 s of each other overlapped
    overlapping = [sum(1 for b in arrivals if a <= b < a + 0.15) for a in arrivals]
    assert max(overlapping) == 2, arrivals  # two at a time (after the pacer's first probe)
