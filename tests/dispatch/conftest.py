"""Helpers for dispatcher tests against the contract-enforcing vendor fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.broker.dead_letter import DeadLetterWriter, SourceRecord
from consumer.broker.offsets import OffsetTracker
from consumer.config import Config, parse_config
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.pipeline import Pipeline
from consumer.events import Event, parse_record
from consumer.outcome import Outcome
from tests.fakes import FakeVendors
from tests.samples import encode, event_for

FAST_RETRY = {"max_attempts": 4, "max_elapsed_s": 20, "base_delay_s": 0.01, "max_delay_s": 0.05}


def make_config(fakes: FakeVendors, **options: Any) -> Config:
    retry = {**FAST_RETRY, **options.pop("retry", {})}
    dispatch = options.pop("dispatch", {})
    return parse_config(
        {"connections": fakes.connections(**options), "retry": retry, "dispatch": dispatch},
        environ={},
    )


def valid(vendor: str, **data: Any) -> Event:
    result = parse_record(encode(event_for(vendor, **data)))
    assert isinstance(result, Event), result
    return result


def deliver(config: Config, *events: Event) -> list[Outcome]:
    async def run() -> list[Outcome]:
        dispatcher = Dispatcher(config, rand=lambda: 0.5)
        try:
            return list(await asyncio.gather(*(dispatcher.deliver(e) for e in events)))
        finally:
            await dispatcher.close()

    return asyncio.run(run())


@pytest.fixture
def fakes(vendors: FakeVendors) -> Iterator[FakeVendors]:
    yield vendors
    assert vendors.violations() == [], "a request broke a vendor contract"


class NoDeadLetters(DeadLetterWriter):
    def __init__(self) -> None:
        self.written: list[Any] = []

    async def write(self, *args: Any, **known: Any) -> None:
        self.written.append(args)


def asset_id(n: int) -> str:
    return f"286c1ef7-70f6-4ebd-8f87-e7f591ec{n:04x}"


def run_pipeline(
    fakes: FakeVendors,
    events: list[Event],
    tenants: tuple[str, ...] = (),
    dead_letters: NoDeadLetters | None = None,
    settings: dict[str, Any] | None = None,
    **dispatch: Any,
) -> OffsetTracker:
    """Deliver ``events`` through a pipeline (no broker: the offsets and the dead-letter
    writer are in-memory stand-ins); ``tenants`` are more connections of every vendor, each
    a copy of its ``default``; ``settings`` are added to every connection."""
    connections = fakes.connections()
    for named in connections.values():
        named["default"].update(settings or {})
        named.update({tenant: dict(named["default"]) for tenant in tenants})
    config = parse_config(
        {"connections": connections, "retry": FAST_RETRY, "dispatch": dispatch}, environ={}
    )
    tracker = OffsetTracker()
    expect_none = dead_letters is None
    dead_letters = dead_letters or NoDeadLetters()

    async def run() -> None:
        dispatcher = Dispatcher(config, rand=lambda: 0.5)
        pipeline = Pipeline(config, dispatcher, dead_letters, tracker)
        for offset, event in enumerate(events):
            pipeline.submit(SourceRecord("t", 0, offset, 0, None, b"", ()), event)
        try:
            assert await pipeline.wait_idle(30), "the pipeline did not finish"
            assert pipeline._lanes == {}, "an idle connection keeps no lane"
        finally:
            await dispatcher.close()

    asyncio.run(run())
    if expect_none:
        assert dead_letters.written == []
    return tracker
