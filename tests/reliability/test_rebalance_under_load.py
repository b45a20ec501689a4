"""Rebalance under load: a second and a third process join mid-stream, then the first stops.
Nothing is lost, duplicates are counted, no partition stays paused, and every asset's updates
first arrive in the order they were produced, across the moves."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from typing import Any

from consumer.broker.kafka_clients import create_topic
from consumer.local.samples import event
from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.integration.test_service import committed, end_offsets
from tests.kafka_helpers import produce, unique_topic
from tests.reliability.helpers import Record
from tests.service_helpers import ServiceProcess, wait_until

ASSETS = 60
UPDATES = 3_000


def join_and_leave(
    kafka_bootstrap: str,
    vendors: FakeVendors,
    start_service: StartService,
    latency_s: float = 0.01,
    **sections: Any,
) -> tuple[str, list[ServiceProcess]]:
    """Produce UPDATES Trelica updates of ASSETS assets, 100 every 0.4 s, to a vendor
    answering in ``latency_s``, while a second and a third process join and then the first
    stops; returns the topic and the two processes left."""
    topic = create_topic(kafka_bootstrap, unique_topic("moves"), partitions=6)
    vendors.trelica.latency_s = latency_s
    sections["dispatch"] = {"commit_interval_s": 0.3, "dedup_window_s": 0}
    records: list[Record] = []
    for n in range(UPDATES):
        ev = event("trelica", n, assets=ASSETS)
        records.append((f"trelica:{ev['data']['asset_id']}".encode(), json.dumps(ev).encode(), []))

    def feed() -> None:
        for i in range(0, UPDATES, 100):
            produce(kafka_bootstrap, topic, records[i : i + 100])
            time.sleep(0.4)

    first = start_service(name="a", topic=topic, **sections)
    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(2)
    second = start_service(name="b", topic=topic, **sections)
    time.sleep(2)
    third = start_service(name="c", topic=topic, **sections)
    time.sleep(3)
    assert first.terminate() == 0
    feeder.join()
    return topic, [second, third]


def arrivals(vendors: FakeVendors) -> dict[str, list[int]]:
    """Per asset, the update numbers the vendor accepted, in the order it did."""
    accepted: dict[str, list[int]] = defaultdict(list)
    for request in vendors.trelica.succeeded():
        accepted[request.path].append(int(request.body["notes"].split()[1]))
    return accepted


def assert_order_kept(accepted: dict[str, list[int]]) -> None:
    for path, sequence in accepted.items():
        firsts = list(dict.fromkeys(sequence))  # each update's first arrival, in order
        assert firsts == sorted(firsts), f"{path}: updates overtook each other {firsts}"
        assert sequence[-1] == max(sequence), f"{path}: an older update landed last"


def assert_none_left_paused(services: list[ServiceProcess]) -> None:
    for service in services:
        wait_until(
            lambda s=service: s.metric("asset_sync_paused_partitions") == 0,
            message="no partition left paused",
        )


def test_processes_join_and_leave_mid_stream(
    kafka_bootstrap: str, vendors: FakeVendors, start_service: StartService
) -> None:
    _, left = join_and_leave(kafka_bootstrap, vendors, start_service)
    expected = {f"update {n}" for n in range(UPDATES)}
    wait_until(
        lambda: {r.body["notes"] for r in vendors.trelica.succeeded()} >= expected,
        timeout_s=120,
        message="every update delivered",
    )
    assert_order_kept(arrivals(vendors))
    assert_none_left_paused(left)
    deliveries = len(vendors.trelica.succeeded())
    print(
        f"\nrebalance under load: {UPDATES} updates of {ASSETS} assets, 3 processes joined/"
        f"left, lost 0, duplicates {deliveries - UPDATES}, per-asset order kept"
    )
    assert all(service.terminate() == 0 for service in left)


def test_coalescing_processes_join_and_leave_mid_stream(
    kafka_bootstrap: str, vendors: FakeVendors, start_service: StartService
) -> None:
    """The same moves with ``coalesce: true``: a coalesced update's marker is overwritten by
    a later one, so what shows nothing is lost is every offset committed with no
    dead-letter, and each asset ending on its last update, reached in order."""
    trelica = {"default": {**vendors.connections()["trelica"]["default"], "coalesce": True}}
    topic, left = join_and_leave(  # 50 ms a request: an asset's updates queue up
        kafka_bootstrap, vendors, start_service, latency_s=0.05, connections={"trelica": trelica}
    )
    group = left[0].config["kafka"]["group_id"]
    end = end_offsets(kafka_bootstrap, topic, 6)
    wait_until(
        lambda: committed(kafka_bootstrap, group, topic, 6) == end,
        timeout_s=120,
        message="every offset committed",
    )
    accepted = arrivals(vendors)
    last = {n % ASSETS: n for n in range(UPDATES)}  # consumer.local.samples: asset n % ASSETS
    assert sorted(sequence[-1] for sequence in accepted.values()) == sorted(last.values())
    assert_order_kept(accepted)
    assert_none_left_paused(left)
    assert sum(s.metric("asset_sync_events_dead_lettered_total") for s in left) == 0
    coalesced = sum(s.metric("asset_sync_events_coalesced_total", vendor="trelica") for s in left)
    assert coalesced > 0, "no update rode in another's request"
    print(
        f"\nrebalance under load, coalescing: {UPDATES} updates of {ASSETS} assets in "
        f"{len(vendors.trelica.succeeded())} requests ({coalesced:.0f} rode in another's in "
        "the two processes left), all committed, per-asset order kept"
    )
    assert all(service.terminate() == 0 for service in left)
