"""``asset-sync run`` against the real broker: delivered, dead-lettered, committed, in order."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from consumer.broker.kafka_clients import create_topic
from tests.fakes import FakeVendors, Reply
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, produce, unique_topic
from tests.samples import encode, event_for, marked, received_markers
from tests.service_helpers import wait_until

VENDORS = ["lexful", "webflow", "autodesk", "trelica", "enos"]


def keyed(event: dict[str, Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return f"{event['vendor']}:{event['data']['asset_id']}".encode(), encode(event), []


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def delivered_ids(vendors: FakeVendors) -> dict[str, int]:
    """How often each event reached a vendor, by the asset and body it carried."""
    counts: dict[str, int] = defaultdict(int)
    for fake in vendors.fakes.values():
        for request in fake.updates():
            counts[request.path + json.dumps(request.body, sort_keys=True)] += 1
    return counts


def test_all_vendors_delivered_and_offsets_committed(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    # Given the service running and 10 events per vendor on a 3-partition topic
    service = start_service()
    events = [event_for(v) for v in VENDORS for _ in range(10)]
    produce(kafka_bootstrap, source_topic, [keyed(e) for e in events])
    # Then every vendor receives its 10 updates, without a contract violation
    wait_until(
        lambda: service.metric("asset_sync_events_delivered_total") == 50, message="50 deliveries"
    )
    assert {name: len(f.updates()) for name, f in vendors.fakes.items()} == {
        "lexful": 10,
        "webflow": 10,
        "autodesk": 10,
        "trelica": 10,
        "enos": 10,
    }
    assert vendors.violations() == []
    # And the committed offsets reach the end of every partition
    group = service.config["kafka"]["group_id"]
    ends = end_offsets(kafka_bootstrap, source_topic, 3)
    wait_until(
        lambda: committed(kafka_bootstrap, group, source_topic, 3) == ends,
        message="offsets committed to the end",
    )
    assert service.metric("asset_sync_events_consumed_total") == 50
    assert service.terminate() == 0


def test_invalid_records_are_dead_lettered_byte_for_byte_with_reasons(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    service = start_service()
    bad_schema = event_for("trelica", changes={"platform": "BeOS"})
    unknown_vendor = {**event_for("webflow"), "vendor": "acme"}
    records = [
        (b"k1", b"\xff\xfe not utf-8", [("trace", b"abc")]),
        (b"k2", b"{not json", []),
        (b"k3", encode(bad_schema), [("content-type", b"application/cloudevents+json")]),
        (b"k4", encode(unknown_vendor), []),
        (None, encode(event_for("enos")), []),
    ]
    produce(kafka_bootstrap, source_topic, records)
    dlq = consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=4, timeout_s=30)
    by_key = {r.key: r for r in dlq}
    assert set(by_key) == {b"k1", b"k2", b"k3", b"k4"}
    for key, value, headers in records[:4]:
        record = by_key[key]
        assert record.value == value  # byte for byte
        got = dict(record.headers)
        for name, original in headers:
            assert got[name] == original  # original headers kept
        assert got["dlq.original.topic"] == source_topic.encode()
        assert {
            "dlq.original.partition",
            "dlq.original.offset",
            "dlq.original.timestamp",
            "dlq.failed_at",
            "dlq.error",
        } <= set(got)
    reasons = {k: dict(r.headers)["dlq.reason"] for k, r in by_key.items()}
    assert reasons == {
        b"k1": b"invalid_json",
        b"k2": b"invalid_json",
        b"k3": b"invalid_event",
        b"k4": b"unknown_vendor",
    }
    assert b"/data/changes/platform" in dict(by_key[b"k3"].headers)["dlq.error"]
    wait_until(lambda: len(vendors.enos.updates()) == 1, message="the good event delivered")
    # counted once the broker's acknowledgement reaches the service, which can come after a
    # consumer already reads the record (a fresh-clone CI run read 0 here)
    wait_until(
        lambda: service.metric("asset_sync_events_dead_lettered_total", reason="invalid_json") == 2,
        timeout_s=10,
        message="both invalid_json records counted",
    )


def test_retries_exhausted_and_rejected_are_dead_lettered(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    vendors.trelica.always = Reply(503)
    vendors.lexful.fail_next(Reply(422, body={"error": "owned_by unknown"}))
    service = start_service(retry={"max_attempts": 3})
    produce(
        kafka_bootstrap, source_topic, [keyed(event_for("trelica")), keyed(event_for("lexful"))]
    )
    dlq = consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=2, timeout_s=30)
    headers = {dict(r.headers)["dlq.vendor"]: dict(r.headers) for r in dlq}
    assert headers[b"trelica"]["dlq.reason"] == b"retries_exhausted"
    assert headers[b"trelica"]["dlq.attempts"] == b"3"
    assert headers[b"trelica"]["dlq.status"] == b"503"
    assert headers[b"lexful"]["dlq.reason"] == b"vendor_rejected"
    assert headers[b"lexful"]["dlq.attempts"] == b"1"
    assert b"owned_by unknown" in headers[b"lexful"]["dlq.error"]
    assert len(vendors.trelica.updates()) == 3
    assert service.metric("asset_sync_retries_total", vendor="trelica") == 2


def test_per_asset_order_while_another_vendor_is_rate_limited(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    # Given Webflow answering 429 (Retry-After: 1) for its first 3 requests
    vendors.webflow.fail_next(*[Reply(429, {"Retry-After": "1"})] * 3)
    start_service()
    # And 20 ordered updates of one Webflow asset and of one Trelica asset, interleaved
    webflow = [event_for("webflow", changes={"displayName": f"v{i}"}) for i in range(20)]
    trelica = [event_for("trelica", changes={"notes": f"v{i}"}) for i in range(20)]
    produce(
        kafka_bootstrap,
        source_topic,
        [keyed(e) for pair in zip(webflow, trelica, strict=True) for e in pair],
    )
    wait_until(
        lambda: len(vendors.webflow.updates()) >= 23, timeout_s=60, message="webflow caught up"
    )
    # Then each asset's updates arrived in the order they were produced
    ok_webflow = [r.body["displayName"] for r in vendors.webflow.updates()][3:]
    assert ok_webflow == [f"v{i}" for i in range(20)]
    assert [r.body["notes"] for r in vendors.trelica.updates()] == [f"v{i}" for i in range(20)]
    # And Trelica kept flowing while Webflow waited: it finished before Webflow's first success
    first_webflow_ok = vendors.webflow.updates()[3].at
    assert vendors.trelica.updates()[-1].at < first_webflow_ok


def test_sigterm_commits_and_exits_0(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    vendors.lexful.latency_s = 0.5  # deliveries are in flight when SIGTERM arrives
    service = start_service(dispatch={"commit_interval_s": 60})
    produce(kafka_bootstrap, source_topic, [keyed(event_for("lexful")) for _ in range(6)])
    wait_until(lambda: len(vendors.lexful.received) >= 1, message="first request")
    assert service.terminate() == 0
    # Everything in flight finished and was committed on the way out (no periodic commit ran)
    group = service.config["kafka"]["group_id"]
    assert sum(committed(kafka_bootstrap, group, source_topic, 3).values()) == 6
    assert len(vendors.lexful.updates()) == 6
    assert consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=1, timeout_s=2) == []


def all_markers(vendors: FakeVendors) -> list[str]:
    return [
        m for v in VENDORS for r in vendors.fakes[v].updates() for m in received_markers(r.body, v)
    ]


def test_kill_9_mid_stream_then_restart_loses_nothing(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    for fake in vendors.fakes.values():
        fake.latency_s = 0.01
    events = [marked(v, f"{v}-{i}") for v in VENDORS for i in range(60)]
    bad: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = [
        (b"junk", f"junk {i}".encode(), []) for i in range(20)
    ]
    settings = {"commit_interval_s": 0.5, "dedup_window_s": 0}
    service = start_service(dispatch=settings)
    produce(kafka_bootstrap, source_topic, [keyed(e) for e in events] + bad)
    wait_until(
        lambda: service.metric("asset_sync_events_delivered_total") >= 60, message="some deliveries"
    )
    service.kill()  # SIGKILL: no commit, no goodbye
    restarted = start_service(name="svc2", dispatch=settings)
    expected = {f"{v}-{i}" for v in VENDORS for i in range(60)}
    wait_until(
        lambda: set(all_markers(vendors)) >= expected,
        timeout_s=90,
        message="every event delivered after the restart",
    )
    dlq = consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=20, timeout_s=30)
    assert {r.value for r in dlq} >= {value for _, value, _ in bad}
    delivered = all_markers(vendors)
    print(
        f"kill -9: {len(events)} events + {len(bad)} junk, all delivered or dead-lettered; "
        f"duplicate deliveries {len(delivered) - len(expected)}, "
        f"duplicate dead-letters {len(dlq) - len(bad)}"
    )
    assert restarted.terminate() == 0


def test_two_processes_share_six_partitions_and_one_leaves(
    kafka_bootstrap: str, vendors: FakeVendors, start_service: StartService
) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic("six"), partitions=6)
    for fake in vendors.fakes.values():
        fake.latency_s = 0.005
    first = start_service(name="a", topic=topic)
    second = start_service(name="b", topic=topic)
    events = [event_for("trelica", asset_id=f"asset-{i}") for i in range(600)]
    produce(kafka_bootstrap, topic, [keyed(e) for e in events[:300]])
    wait_until(lambda: len(vendors.trelica.updates()) >= 100, message="both consuming")
    assert first.terminate() == 0  # leaves the group mid-stream; the other takes over
    produce(kafka_bootstrap, topic, [keyed(e) for e in events[300:]])
    wait_until(
        lambda: (
            {r.path for r in vendors.trelica.updates()}
            >= {f"/api/assets/v1/asset-{i}" for i in range(600)}
        ),
        timeout_s=90,
        message="every event delivered",
    )
    assert second.terminate() == 0
    print(f"two processes: 600 events, {len(vendors.trelica.updates())} deliveries")
