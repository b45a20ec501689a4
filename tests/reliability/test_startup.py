"""Records read in the first seconds after a start are processed once, not once per early
rebalance; the dead-letter record and its log line say what the envelope said."""

from __future__ import annotations

import time
from collections import Counter

from consumer.broker.kafka_clients import create_topic
from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, produce, unique_topic
from tests.samples import encode, event_for, marked
from tests.service_helpers import wait_until

SETTLE_S = 8.0  # longer than kafka-python's follow-up rebalance after the first join


def test_records_produced_at_start_are_dead_lettered_once(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    service = start_service(wait_ready=False)
    invalid = [event_for("lexful", changes={}) for _ in range(5)]  # `changes` may not be empty
    produce(
        kafka_bootstrap, source_topic, [(b"k%d" % i, encode(e), []) for i, e in enumerate(invalid)]
    )
    service.wait_ready()
    wait_until(
        lambda: service.metric("asset_sync_events_dead_lettered_total") >= 5,
        message="five dead-letters",
    )
    time.sleep(SETTLE_S)
    records = consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=6, timeout_s=5)
    assert len(records) == 5, [r.offset for r in records]
    # a schema-invalid event of a known vendor keeps its vendor: label, header and log line
    assert (
        service.metric(
            "asset_sync_events_dead_lettered_total", vendor="lexful", reason="invalid_event"
        )
        == 5
    )
    assert {dict(r.headers)["dlq.vendor"] for r in records} == {b"lexful"}
    lines = [e for e in service.log_entries() if e.get("msg") == "dead-lettered"]
    assert sorted(e["event_id"] for e in lines) == sorted(e["id"] for e in invalid)
    assert {e["vendor"] for e in lines} == {"lexful"}
    assert service.terminate() == 0


def test_a_rebalance_right_after_start_sends_nothing_twice(
    kafka_bootstrap: str, vendors: FakeVendors, start_service: StartService
) -> None:
    """A second replica joins while the first is delivering (a deploy): the request on the
    wire when the partitions move finishes and is committed instead of being cancelled and
    sent again by the new owner."""
    topic = create_topic(kafka_bootstrap, unique_topic("start"), partitions=4)
    vendors.trelica.latency_s = 0.3
    events = [marked("trelica", f"m{i}") for i in range(40)]  # one asset: one request at a time
    produce(kafka_bootstrap, topic, [(b"t", encode(e), []) for e in events])
    first = start_service("first", topic=topic)
    wait_until(lambda: len(vendors.trelica.updates()) >= 1, message="deliveries started")
    second = start_service("second", topic=topic)
    wait_until(
        lambda: (
            {u.body["notes"] for u in vendors.trelica.updates()} == {f"m{i}" for i in range(40)}
        ),
        message="all delivered",
    )
    time.sleep(1)  # a late duplicate would arrive now
    sent = Counter(u.body["notes"] for u in vendors.trelica.updates())
    assert [note for note, times in sent.items() if times > 1] == []
    assert first.terminate() == 0
    assert second.terminate() == 0
