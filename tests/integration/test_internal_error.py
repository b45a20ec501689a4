"""A bug of ours during a delivery ends in a dead-letter record on the real broker (reason
``internal_error``), and the offset is finished: never a partition stuck for good."""

from __future__ import annotations

import asyncio

from kafka.structs import TopicPartition

from consumer.broker.dead_letter import DeadLetterWriter, SourceRecord
from consumer.broker.kafka_clients import create_topic, make_producer
from consumer.broker.offsets import OffsetTracker
from consumer.config import KafkaConfig
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.pipeline import Pipeline
from consumer.events import Event
from consumer.outcome import Outcome
from tests.dispatch.conftest import make_config, valid
from tests.fakes import FakeVendors
from tests.kafka_helpers import consume_all


class BrokenDispatcher(Dispatcher):
    """Stands for any defect of ours: the first lexful delivery raises."""

    async def deliver(self, event: Event) -> Outcome:
        if event.data["changes"].get("title") == "boom":
            raise KeyError("a bug")
        return await super().deliver(event)


def test_an_unexpected_error_is_dead_lettered_and_the_offset_finished(
    kafka_bootstrap: str, topic: str, vendors: FakeVendors
) -> None:
    config = make_config(vendors)
    tracker = OffsetTracker()
    dlq = create_topic(kafka_bootstrap, f"{topic}.dlq")
    boom, after = (valid("lexful", changes={"title": t}) for t in ("boom", "after"))
    assert boom.asset_id == after.asset_id  # same asset: the queue must go on after the bug

    async def run() -> None:
        producer = make_producer(KafkaConfig(bootstrap_servers=kafka_bootstrap), "test-dlq")
        dispatcher = BrokenDispatcher(config, rand=lambda: 0.5)
        pipeline = Pipeline(config, dispatcher, DeadLetterWriter(producer, dlq), tracker)
        for offset, event in enumerate((boom, after)):
            record = SourceRecord(topic, 0, offset, 0, b"k", b"v%d" % offset, ())
            pipeline.submit(record, event)
        try:
            assert await pipeline.wait_idle(30), "the pipeline did not finish"
        finally:
            await dispatcher.close()
            producer.close(5)

    asyncio.run(run())
    assert tracker.to_commit() == {TopicPartition(topic, 0): (2, "", -1)}
    (record,) = consume_all(kafka_bootstrap, dlq, 1)
    headers = dict(record.headers)
    assert headers["dlq.reason"] == b"internal_error"
    assert headers["dlq.vendor"] == b"lexful"
    assert b"KeyError" in headers["dlq.error"]
    assert record.value == b"v0"
    assert [r.body for r in vendors.lexful.updates()] == [{"title": "after"}]
