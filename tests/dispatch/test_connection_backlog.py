"""Lag per connection (issue 17, point 3): ``asset_sync_connection_waiting_events`` and
``asset_sync_connection_oldest_waiting_seconds``, read from /metrics' registry while one Webflow
tenant hangs and another flows. The pipeline, dispatcher and vendor fakes are the real ones;
only the offsets and the dead-letter writer are in-memory stand-ins (no broker)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka.structs import TopicPartition
from prometheus_client import REGISTRY

from consumer.broker.dead_letter import SourceRecord
from consumer.broker.offsets import OffsetTracker
from consumer.config import Config, parse_config
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.pipeline import Pipeline
from consumer.events import Event
from tests.dispatch.conftest import FAST_RETRY, NoDeadLetters, valid
from tests.fakes import FakeVendors, Reply

WAITING = "asset_sync_connection_waiting_events"
OLDEST = "asset_sync_connection_oldest_waiting_seconds"


def sample(name: str, vendor: str, connection: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"vendor": vendor, "connection": connection})


def backlog(connection: str, vendor: str = "webflow") -> tuple[float | None, float | None]:
    return sample(WAITING, vendor, connection), sample(OLDEST, vendor, connection)


async def until(predicate: Callable[[], bool], message: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        await asyncio.sleep(0.02)


@pytest.fixture
def hanging(fakes: FakeVendors) -> Iterator[tuple[FakeVendors, Config]]:
    """Webflow tenant ``a`` gets no answer (until released); ``default`` is served."""
    connections: dict[str, Any] = fakes.connections()
    connections["webflow"]["a"] = fakes.webflow_tenant()
    config = parse_config(
        {
            "connections": connections,
            "retry": FAST_RETRY,
            "dispatch": {"read_timeout_s": 60},  # the hang outlasts the test
        },
        environ={},
    )
    fakes.webflow.by_token[fakes.secrets["webflow_tenant_token"]] = Reply(hang=True)
    try:
        yield fakes, config
    finally:
        fakes.webflow.by_token.clear()
        fakes.webflow.release()


def webflow(connection: str, n: int) -> Event:
    return dataclasses.replace(valid("webflow", asset_id=f"{n:024x}"), connection=connection)


def test_a_hanging_connection_shows_its_waiting_events_and_their_growing_age(
    hanging: tuple[FakeVendors, Config],
) -> None:
    fakes, config = hanging
    # a: five assets (on the wire or queued behind the pacer) and three more updates of the
    # first one (queued behind it); default: six, which flow
    events = [webflow("a", n) for n in range(5)] + [webflow("a", 0) for _ in range(3)]
    events += [webflow("default", n) for n in range(100, 106)]

    async def run() -> None:
        dispatcher = Dispatcher(config, rand=lambda: 0.5)
        pipeline = Pipeline(config, dispatcher, NoDeadLetters(), OffsetTracker())
        # every configured connection has both series from the start, at 0
        assert backlog("a") == backlog("default") == (0, 0)
        assert sample(WAITING, "lexful", "default") == 0
        submitted = time.monotonic()
        for offset, event in enumerate(events):
            pipeline.submit(SourceRecord("t", 0, offset, 0, None, b"", ()), event)
        try:
            await until(lambda: backlog("default") == (0, 0), "default delivered")
            assert len(fakes.webflow.succeeded()) == 6
            waiting, first = backlog("a")
            assert waiting == 8
            assert first is not None and 0 < first <= time.monotonic() - submitted + 0.01
            await asyncio.sleep(0.5)
            waiting, later = backlog("a")
            assert waiting == 8, "nothing of a finished while it hangs"
            assert later is not None and later >= first + 0.45, (first, later)
            assert backlog("default") == (0, 0), "a flowing connection stays at 0"

            fakes.webflow.by_token.clear()  # the vendor answers again
            fakes.webflow.release()
            await until(lambda: backlog("a") == (0, 0), "a drained")
            assert await pipeline.wait_idle(20)
            assert len(fakes.webflow.succeeded()) == 14
        finally:
            await pipeline.cancel_all()
            await dispatcher.close()

    asyncio.run(run())


def test_a_revoked_partitions_events_stop_counting_at_once(
    hanging: tuple[FakeVendors, Config],
) -> None:
    """Its new owner counts them; left here, a queued event of a stuck lane would keep this
    replica's age growing for an event it will never deliver."""
    _, config = hanging
    revoked, kept = TopicPartition("t", 0), TopicPartition("t", 1)

    async def run() -> None:
        dispatcher = Dispatcher(config, rand=lambda: 0.5)
        pipeline = Pipeline(config, dispatcher, NoDeadLetters(), OffsetTracker())
        for offset in range(6):
            tp = revoked if offset < 4 else kept
            event = webflow("a", offset % 3)
            pipeline.submit(SourceRecord(tp.topic, tp.partition, offset, 0, None, b"", ()), event)
        try:
            await until(lambda: backlog("a")[0] == 6, "six waiting")
            pipeline.drop({revoked})
            assert backlog("a")[0] == 2
            oldest = backlog("a")[1]
            assert oldest is not None and oldest > 0
        finally:
            await pipeline.cancel_all()
            await dispatcher.close()
        assert backlog("a") == (0, 0), "a stopped pipeline has nothing waiting"

    asyncio.run(run())


def test_only_configured_connections_get_series(hanging: tuple[FakeVendors, Config]) -> None:
    """Connection names in events are not bounded: one an event makes up is no label."""
    _, config = hanging

    async def run() -> None:
        dispatcher = Dispatcher(config, rand=lambda: 0.5)
        pipeline = Pipeline(config, dispatcher, NoDeadLetters(), OffsetTracker())
        pipeline.submit(SourceRecord("t", 0, 0, 0, None, b"", ()), webflow("made-up", 7))
        try:
            assert await pipeline.wait_idle(20)
        finally:
            await dispatcher.close()
        assert backlog("made-up") == (None, None)
        labels = {s.labels.get("connection") for f in REGISTRY.collect() for s in f.samples}
        assert "made-up" not in labels

    asyncio.run(run())
