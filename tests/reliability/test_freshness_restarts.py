"""Restart after restart, each new process restores what the last one learned and delivers.

kafka-python 3.0.12 can drop the result of the rebalance that follows start-up when its join
outlives a poll (a revocation slowed by in-flight work or the freshness changelog makes it
likely): that process then held no partition for good (2 of 12 restarts here before the
service noticed and rejoined). Several restarts in a row make it very likely to show.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer

from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.integration.test_service import committed
from tests.samples import event_for
from tests.service_helpers import ServiceProcess, wait_until

ROUNDS = 4


def update(notes: str, sequence: int) -> dict[str, Any]:
    event = event_for("trelica", asset_id="desk-7")
    event["data"]["changes"] = {"notes": notes}
    event["sequence"] = str(sequence)
    return event


def test_every_restart_restores_and_delivers(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for n in range(ROUNDS):
        service = start_service(name=f"round-{n}")
        # older than what the previous process delivered (sequence 10n), then a newer one
        events = [update(f"stale {n}", 10 * n - 5)] if n else []
        for event in [*events, update(f"new {n}", 10 * (n + 1))]:
            producer.send(source_topic, json.dumps(event).encode(), partition=0)
        producer.flush(30)
        wait_until(
            lambda n=n: any(r.body == {"notes": f"new {n}"} for r in vendors.trelica.succeeded()),
            timeout_s=60,
            message=f"round {n}: the new process delivers",
        )
        assert service.terminate() == 0
    producer.close()
    notes = [r.body["notes"] for r in vendors.trelica.succeeded()]
    assert notes == [f"new {n}" for n in range(ROUNDS)]  # every stale one taken out


def committed_offset(kafka_bootstrap: str, service: ServiceProcess) -> int:
    kafka = service.config["kafka"]
    return committed(kafka_bootstrap, kafka["group_id"], kafka["topic"], 1)[0]


def test_a_crash_between_the_vendors_answer_and_the_changelog_write_delivers_again(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    """At-least-once holds across the changelog: an update the vendor accepted but that was
    not yet written to the changelog keeps its offset uncommitted, so after a crash the next
    process delivers it again (never loses it)."""
    first = start_service(name="first")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    # A first update goes all the way (the group settled, the partition restored)
    producer.send(source_topic, json.dumps(update("settled", 1)).encode(), partition=0)
    producer.flush(30)
    wait_until(lambda: committed_offset(kafka_bootstrap, first) == 1, message="first committed")
    # The changelog cannot be written from now on: its topic is gone
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.delete_topics([f"{source_topic}.freshness"])
    admin.close()
    producer.send(source_topic, json.dumps(update("accepted", 2)).encode(), partition=0)
    producer.flush(30)
    producer.close()
    wait_until(lambda: len(vendors.trelica.succeeded()) == 2, message="the vendor accepted it")
    time.sleep(3)  # three commit intervals: the offset stays uncommitted
    assert committed_offset(kafka_bootstrap, first) == 1
    first.kill()  # SIGKILL: nothing more is written or committed
    start_service(name="second")  # creates the changelog again, reads the record again
    wait_until(
        lambda: len(vendors.trelica.succeeded()) == 3, timeout_s=60, message="delivered again"
    )
    notes = [r.body["notes"] for r in vendors.trelica.succeeded()]
    assert notes == ["settled", "accepted", "accepted"]
    wait_until(lambda: committed_offset(kafka_bootstrap, first) == 2, message="then committed")
