"""Dead-letter records on the real broker keep the event's trace context (issue 17, point 1):
the original value and headers as they were, and W3C ``traceparent``/``tracestate`` record
headers besides, for a structured event refused by its vendor and for an invalid binary one."""

from __future__ import annotations

import asyncio
import json

from consumer.broker.dead_letter import DeadLetterWriter, SourceRecord
from consumer.broker.kafka_clients import create_topic, make_producer
from consumer.broker.offsets import OffsetTracker
from consumer.config import KafkaConfig
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.pipeline import Pipeline
from consumer.events import Rejection, parse_record
from tests.dispatch.conftest import make_config
from tests.fakes import FakeVendors, Reply
from tests.kafka_helpers import consume_all
from tests.samples import encode, event_for

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_dead_letter_records_keep_the_trace_context(
    kafka_bootstrap: str, topic: str, vendors: FakeVendors
) -> None:
    config = make_config(vendors)
    dlq = create_topic(kafka_bootstrap, f"{topic}.dlq")
    structured = encode({**event_for("trelica"), "traceparent": PARENT, "tracestate": "a=1"})
    data = event_for("trelica")
    binary_headers = [
        (f"ce_{k}", str(v).encode()) for k, v in data.items() if k not in ("data", "time")
    ]
    binary_headers.append(("ce_traceparent", OTHER.encode()))
    binary_value = json.dumps({**data["data"], "changes": {}}).encode()  # invalid: no change
    vendors.trelica.fail_next(Reply(400, body={"error": "refused"}))

    async def run() -> None:
        producer = make_producer(KafkaConfig(bootstrap_servers=kafka_bootstrap), "test-dlq")
        dispatcher = Dispatcher(config, rand=lambda: 0.5)
        pipeline = Pipeline(config, dispatcher, DeadLetterWriter(producer, dlq), OffsetTracker())
        rejected = parse_record(binary_value, binary_headers)
        assert isinstance(rejected, Rejection), rejected
        pipeline.submit(
            SourceRecord(topic, 0, 0, 0, b"k0", structured, ()), parse_record(structured)
        )
        record = SourceRecord(topic, 0, 1, 0, b"k1", binary_value, tuple(binary_headers))
        pipeline.submit(record, rejected)
        try:
            assert await pipeline.wait_idle(30), "the pipeline did not finish"
        finally:
            await dispatcher.close()
            producer.close(5)

    asyncio.run(run())
    records = {r.key: r for r in consume_all(kafka_bootstrap, dlq, 2)}
    refused, invalid = records[b"k0"], records[b"k1"]
    assert refused.value == structured  # the value, with its context, byte for byte
    headers = dict(refused.headers)
    assert headers["dlq.reason"] == b"vendor_rejected"
    assert (headers["traceparent"], headers["tracestate"]) == (PARENT.encode(), b"a=1")
    assert invalid.value == binary_value
    assert invalid.headers[: len(binary_headers)] == binary_headers  # as they were
    assert dict(invalid.headers)["dlq.reason"] == b"invalid_event"
    assert dict(invalid.headers)["traceparent"] == OTHER.encode()
