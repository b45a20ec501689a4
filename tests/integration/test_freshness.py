"""Per-field last-writer-wins against the real broker, with real ``asset-sync run`` processes:
an older update after a newer one within a partition, after a restart (state restored from
the changelog), after a rebalance to another replica, and a dead-letter replayed after newer
updates. What the vendor ends up holding is read from the fake's requests."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from consumer.broker.kafka_clients import create_topic
from tests.fakes import FakeVendors, Reply
from tests.integration.conftest import StartService
from tests.integration.test_service import committed
from tests.integration.test_tools import cli
from tests.kafka_helpers import consume_all, unique_topic
from tests.samples import event_for
from tests.service_helpers import ServiceProcess, wait_until

ASSET = "laptop-42"


def update(changes: dict[str, Any], sequence: str | None = None, **envelope: Any) -> dict[str, Any]:
    event = event_for("trelica", asset_id=ASSET)
    event["data"]["changes"] = changes
    event.pop("time", None)
    if sequence is not None:
        event["sequence"] = sequence
    event.update(envelope)
    return event


def send(bootstrap: str, topic: str, *events: dict[str, Any]) -> None:
    """Produce in this order, all to partition 0, keyed as recommended."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for event in events:
            key = f"trelica:{ASSET}".encode()
            producer.send(topic, key=key, value=json.dumps(event).encode(), partition=0)
        producer.flush(30)
    finally:
        producer.close()


def bodies(vendors: FakeVendors) -> list[dict[str, Any]]:
    """What the vendor accepted for the asset, in order."""
    return [r.body for r in vendors.trelica.succeeded() if r.path.endswith(ASSET)]


def wait_for_body(vendors: FakeVendors, body: dict[str, Any], timeout_s: float = 60) -> None:
    wait_until(lambda: body in bodies(vendors), timeout_s, message=f"the vendor to get {body}")


def log_lines(service: ServiceProcess, message: str) -> list[dict[str, Any]]:
    return [e for e in service.log_entries() if e.get("msg") == message]


def test_an_older_update_keeps_only_the_fields_nobody_changed_since(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    service = start_service()
    send(
        kafka_bootstrap,
        source_topic,
        update({"notes": "new", "status": "Deployed"}, sequence="2"),
        update({"notes": "old"}, sequence="1"),  # every field newer: stale
        update({"notes": "old", "locationName": "Paris"}, sequence="1"),  # partial overlap
        update({"notes": "older by time"}, time="2020-01-01T00:00:00Z"),  # another kind
        update({"status": "no key"}),  # neither sequence nor time: as before
    )
    wait_for_body(vendors, {"status": "no key"})
    assert bodies(vendors) == [
        {"notes": "new", "status": "Deployed"},
        {"locationName": "Paris"},
        {"notes": "older by time"},  # a time never compares with a sequence
        {"status": "no key"},
    ]
    assert service.metric("asset_sync_events_stale_total", vendor="trelica") == 1
    assert service.metric("asset_sync_stale_fields_total", vendor="trelica") == 2
    assert service.metric("asset_sync_events_dead_lettered_total") == 0
    (stale,) = log_lines(service, "stale skipped")
    assert stale["outcome"] == "stale" and stale["offset"] == 1
    (partial,) = log_lines(service, "stale fields taken out")
    assert partial["stale_fields"] == ["notes"] and partial["delivered_fields"] == ["locationName"]
    # the stale record's offset is committed like the others: nothing is consumed again
    assert service.terminate() == 0
    start_service(name="again")
    send(kafka_bootstrap, source_topic, update({"status": "after restart"}))
    wait_for_body(vendors, {"status": "after restart"})
    assert len(bodies(vendors)) == 5


def test_after_a_restart_the_state_comes_back_from_the_changelog(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    first = start_service(name="first")
    send(kafka_bootstrap, source_topic, update({"notes": "new"}, time="2026-11-23T10:00:05Z"))
    wait_for_body(vendors, {"notes": "new"})
    assert first.terminate() == 0
    # a new process, with a store of its own (nothing on disk is shared): only the changelog
    second = start_service(name="second")
    send(
        kafka_bootstrap,
        source_topic,
        update({"notes": "old"}, time="2026-11-23T10:00:04Z"),
        update({"status": "marker"}, time="2026-11-23T10:00:04Z"),
    )
    wait_for_body(vendors, {"status": "marker"})
    assert {"notes": "old"} not in bodies(vendors)
    assert second.metric("asset_sync_events_stale_total", vendor="trelica") == 1
    restored = log_lines(second, "freshness restored")
    assert sum(r["records"] for r in restored if r["partition"] == 0) >= 1


def test_after_a_rebalance_the_replica_that_takes_the_partition_knows(
    kafka_bootstrap: str, vendors: FakeVendors, start_service: StartService
) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic("one"), partitions=1)
    replicas = [start_service(name="a", topic=topic), start_service(name="b", topic=topic)]
    newest = update({"notes": "new"}, sequence="10")
    send(kafka_bootstrap, topic, newest)
    wait_for_body(vendors, {"notes": "new"})
    (owner,) = [
        s for s in replicas if any(e.get("event_id") == newest["id"] for e in s.log_entries())
    ]
    (other,) = [s for s in replicas if s is not owner]
    assert owner.terminate() == 0  # the partition moves to the replica that stayed
    send(
        kafka_bootstrap,
        topic,
        update({"notes": "old"}, sequence="9"),
        update({"status": "marker"}, sequence="9"),
    )
    wait_for_body(vendors, {"status": "marker"}, timeout_s=90)
    assert {"notes": "old"} not in bodies(vendors)
    assert other.metric("asset_sync_events_stale_total", vendor="trelica") == 1


def test_a_replayed_dead_letter_applies_only_the_fields_nobody_changed_since(
    kafka_bootstrap: str,
    source_topic: str,
    vendors: FakeVendors,
    start_service: StartService,
    tmp_path: Path,
) -> None:
    service = start_service()
    vendors.trelica.fail_next(Reply(400, body={"error": "try later"}))
    failed = update({"notes": "old", "status": "Broken"}, sequence="1")
    send(kafka_bootstrap, source_topic, failed, update({"notes": "new"}, sequence="2"))
    wait_for_body(vendors, {"notes": "new"})
    wait_until(lambda: service.metric("asset_sync_events_dead_lettered_total") == 1)
    replay = cli("replay", "--config", str(service.config_path), "--event-id", failed["id"])
    assert replay.returncode == 0 and "replayed 1 record(s)" in replay.stdout, replay.stderr
    wait_for_body(vendors, {"status": "Broken"})
    assert bodies(vendors) == [{"notes": "new"}, {"status": "Broken"}]
    # the replay went back to the partition it came from, where the newer update is known
    replayed = consume_all(kafka_bootstrap, source_topic, expected=3, timeout_s=10)
    assert [r.partition for r in replayed] == [0, 0, 0]
    assert replayed[-1].value == json.dumps(failed).encode()


def test_the_changelog_is_compacted_and_co_partitioned(
    kafka_bootstrap: str, vendors: FakeVendors, start_service: StartService
) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic("co"), partitions=3)
    service = start_service(topic=topic)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for partition in range(3):
        event = event_for("trelica", asset_id=f"asset-{partition}")
        event["data"]["changes"] = {"notes": str(uuid.uuid4())}
        event["sequence"] = "1"
        producer.send(topic, json.dumps(event).encode(), partition=partition)
    producer.close()
    wait_until(lambda: len(vendors.trelica.succeeded()) == 3)
    records = consume_all(kafka_bootstrap, f"{topic}.freshness", expected=3, timeout_s=10)
    assert sorted((r.partition, r.key) for r in records) == [
        (p, f"trelica/default/asset-{p}".encode()) for p in range(3)
    ]
    assert json.loads(records[0].value) == {"notes": "s00011"}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{topic}.freshness", ["cleanup.policy"])]
        )
    finally:
        admin.close()
    assert described["topic"][f"{topic}.freshness"]["cleanup.policy"]["value"] == "compact"
    assert service.terminate() == 0


def test_autodesk_batches_apply_the_rule_per_asset(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    first, second = str(uuid.UUID(int=1, version=4)), str(uuid.UUID(int=2, version=4))

    def autodesk(asset: str, changes: dict[str, Any], sequence: str) -> dict[str, Any]:
        event = event_for("autodesk", asset_id=asset)
        event["data"]["changes"] = changes
        event["sequence"] = sequence
        return event

    start_service(dispatch={"batch_linger_s": 0.5})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    newer = autodesk(first, {"customAttributes": {"owner": "ann"}}, "2")
    producer.send(source_topic, json.dumps(newer).encode(), partition=0).get(30)
    wait_until(lambda: len(vendors.autodesk.succeeded()) == 1)
    for event in (
        autodesk(first, {"customAttributes": {"owner": "bob", "room": "1"}}, "1"),
        autodesk(second, {"customAttributes": {"owner": "cy"}}, "1"),
    ):
        producer.send(source_topic, json.dumps(event).encode(), partition=0)
    producer.close()
    wait_until(lambda: len(vendors.autodesk.succeeded()) >= 2)
    assert vendors.autodesk.succeeded()[1].body == {
        first: {"customAttributes": {"room": "1"}},  # its owner is newer at the vendor
        second: {"customAttributes": {"owner": "cy"}},  # nothing newer: all of it
    }


def test_coalesced_updates_keep_the_rule_and_teach_it_in_order(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    """A connection that coalesces: updates waiting together go as one request, each decided
    as if the ones before it had been delivered (an older one loses only the fields a newer
    one set), and what the request taught is remembered per field, offsets committed."""
    send(
        kafka_bootstrap,
        source_topic,
        update({"notes": "new", "status": "Deployed"}, sequence="2"),
        update({"notes": "old", "locationName": "Paris"}, sequence="1"),
        update({"status": "Retired"}, sequence="3"),
    )  # all waiting before the service starts: one fetch, one run
    trelica = {"default": {**vendors.connections()["trelica"]["default"], "coalesce": True}}
    service = start_service(connections={"trelica": trelica})
    wait_for_body(vendors, {"notes": "new", "status": "Retired", "locationName": "Paris"})
    send(
        kafka_bootstrap,
        source_topic,
        update({"locationName": "Rome", "notes": "older"}, sequence="0"),  # all stale
        update({"description": "marker"}, sequence="4"),
    )
    wait_for_body(vendors, {"description": "marker"})
    assert bodies(vendors) == [
        {"notes": "new", "status": "Retired", "locationName": "Paris"},
        {"description": "marker"},
    ]
    assert service.metric("asset_sync_events_coalesced_total", vendor="trelica") == 2
    assert service.metric("asset_sync_events_stale_total", vendor="trelica") == 1
    wait_until(  # logged once the vendor's answer is back, a moment after it got the marker
        lambda: len(log_lines(service, "delivered")) == 4, 10, message="four deliveries logged"
    )
    delivered = log_lines(service, "delivered")
    assert [(e["offset"], e["asset_id"]) for e in delivered] == [(n, ASSET) for n in (0, 1, 2, 4)]
    group = service.config["kafka"]["group_id"]
    wait_until(
        lambda: committed(kafka_bootstrap, group, source_topic, 3)[0] == 5,
        30,
        message="the five offsets to be committed",
    )


def test_a_refused_coalesced_update_decides_freshness_again_one_at_a_time(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    """The older update is stale only because of the newer one in the same request: when the
    vendor refuses that request and then the newer update alone, the older one is decided
    again against what was delivered, and goes."""
    send(
        kafka_bootstrap,
        source_topic,
        update({"notes": "new"}, sequence="2"),
        update({"notes": "old"}, sequence="1"),
    )
    vendors.trelica.fail_next(Reply(status=400), Reply(status=400))  # the run, then the newer
    trelica = {"default": {**vendors.connections()["trelica"]["default"], "coalesce": True}}
    service = start_service(connections={"trelica": trelica})
    wait_for_body(vendors, {"notes": "old"})
    sent = [(r.status, r.body) for r in vendors.trelica.updates() if r.path.endswith(ASSET)]
    assert sent == [(400, {"notes": "new"}), (400, {"notes": "new"}), (200, {"notes": "old"})]
    (dead,) = consume_all(kafka_bootstrap, f"{source_topic}.dlq", 1)
    headers = dict(dead.headers)
    assert (headers["dlq.original.offset"], headers["dlq.reason"]) == (b"0", b"vendor_rejected")
    assert service.metric("asset_sync_events_dead_lettered_total", vendor="trelica") == 1
