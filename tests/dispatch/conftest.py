"""Helpers for dispatcher tests against the contract-enforcing vendor fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.config import Config, parse_config
from consumer.delivery.dispatcher import Dispatcher
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
