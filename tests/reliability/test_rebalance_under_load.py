"""Rebalance under load: a second and a third process join mid-stream, then the first stops.
Nothing is lost, duplicates are counted, no partition stays paused, and every asset's updates
first arrive in the order they were produced, across the moves."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

from consumer.broker.kafka_clients import create_topic
from consumer.local.samples import event
from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.kafka_helpers import produce, unique_topic
from tests.reliability.helpers import Record
from tests.service_helpers import wait_until

ASSETS = 60
UPDATES = 3_000


def test_processes_join_and_leave_mid_stream(
    kafka_bootstrap: str, vendors: FakeVendors, start_service: StartService
) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic("moves"), partitions=6)
    vendors.trelica.latency_s = 0.01
    settings = {"commit_interval_s": 0.3, "dedup_window_s": 0}
    records: list[Record] = []
    for n in range(UPDATES):
        ev = event("trelica", n, assets=ASSETS)
        records.append((f"trelica:{ev['data']['asset_id']}".encode(), json.dumps(ev).encode(), []))

    def feed() -> None:
        for i in range(0, UPDATES, 100):
            produce(kafka_bootstrap, topic, records[i : i + 100])
            time.sleep(0.4)

    first = start_service(name="a", topic=topic, dispatch=settings)
    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(2)
    second = start_service(name="b", topic=topic, dispatch=settings)
    time.sleep(2)
    third = start_service(name="c", topic=topic, dispatch=settings)
    time.sleep(3)
    assert first.terminate() == 0
    feeder.join()
    expected = {f"update {n}" for n in range(UPDATES)}
    wait_until(
        lambda: {r.body["notes"] for r in vendors.trelica.succeeded()} >= expected,
        timeout_s=120,
        message="every update delivered",
    )
    arrivals: dict[str, list[int]] = defaultdict(list)
    for request in vendors.trelica.succeeded():
        arrivals[request.path].append(int(request.body["notes"].split()[1]))
    for path, sequence in arrivals.items():
        firsts = list(dict.fromkeys(sequence))  # each update's first arrival, in order
        assert firsts == sorted(firsts), f"{path}: updates overtook each other {firsts}"
        assert sequence[-1] == max(sequence), f"{path}: an older update landed last"
    for service in (second, third):
        wait_until(
            lambda s=service: s.metric("asset_sync_paused_partitions") == 0,
            message="no partition left paused",
        )
    deliveries = len(vendors.trelica.succeeded())
    print(
        f"\nrebalance under load: {UPDATES} updates of {ASSETS} assets, 3 processes joined/"
        f"left, lost 0, duplicates {deliveries - UPDATES}, per-asset order kept"
    )
    assert second.terminate() == 0 and third.terminate() == 0
