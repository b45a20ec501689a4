"""Parking (consumer/delivery/parking.py): a connection that is down, with more than
``parking.backlog`` events waiting, moves them to its parking topic; the other vendors keep
flowing; once it is back its parked events are delivered in their per-asset order, and none
is dead-lettered."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

from kafka import KafkaProducer

from consumer.local.samples import event
from tests.fakes import FakeVendors, Reply
from tests.fakes.rate_limits import TokenBucket
from tests.integration.conftest import StartService
from tests.integration.test_service import committed, end_offsets
from tests.kafka_helpers import consume_all, produce
from tests.reliability.helpers import VENDORS, rss_mb
from tests.samples import encode, marked, received_markers
from tests.service_helpers import wait_until

OUTAGE_S = 25.0
ASSETS, UPDATES = 40, 5  # Trelica: updates n = 0..4 of each asset, in that order
# parks after 20 waiting; the breaker opens after 3 failures and probes every 2 s at most
QUICK_PARKING: dict[str, Any] = {
    "parking": {"enabled": True, "backlog": 20},
    "breaker": {"failure_threshold": 3, "open_s": 0.5, "max_open_s": 2},
}


def trelica_wave(first: int, last: int) -> list[tuple[bytes, bytes, list[Any]]]:
    """Updates first..last-1 of every asset, asset by asset interleaved (n-major)."""
    return [
        (
            f"trelica:park-{a}".encode(),
            encode(marked("trelica", f"{a}/{n}", asset_id=f"park-{a}")),
            [],
        )
        for n in range(first, last)
        for a in range(ASSETS)
    ]


def test_a_long_outage_parks_the_connection_and_delivers_in_order_after(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    # Given Trelica down (503) for 25 s from its first update, parking after 20 waiting events
    trelica, webflow = vendors.trelica, vendors.webflow
    trelica.outage(OUTAGE_S, Reply(503, body={"error": "down"}))
    service = start_service(**QUICK_PARKING)
    trelica_state = {"vendor": "trelica", "connection": "default"}

    # When updates 0-2 of 40 Trelica assets come, and 100 Webflow updates with them
    produce(kafka_bootstrap, source_topic, trelica_wave(0, 3))
    produce(
        kafka_bootstrap,
        source_topic,
        [(f"webflow:w{n}".encode(), encode(marked("webflow", f"w{n}")), []) for n in range(100)],
    )
    # Then Trelica parks, and Webflow is delivered meanwhile
    wait_until(
        lambda: service.metric("asset_sync_events_parked_total", **trelica_state) > 0,
        timeout_s=20,
        message="trelica parked",
    )
    assert service.metric("asset_sync_connection_parking", **trelica_state) == 1
    wait_until(lambda: webflow.ok >= 100, timeout_s=20, message="webflow delivered")
    # And updates 3-4, produced while it parks, are parked behind the others
    produce(kafka_bootstrap, source_topic, trelica_wave(3, UPDATES))
    assert trelica.ok == 0  # still down
    wait_until(
        lambda: service.metric("asset_sync_parked_events", **trelica_state) > 0,
        timeout_s=10,
        message="parked events counted",
    )

    # When Trelica is back, every update is delivered, in per-asset order, none dead-lettered
    expected = ASSETS * UPDATES
    wait_until(
        lambda: len(delivered_markers(trelica)) >= expected,
        timeout_s=OUTAGE_S + 60,
        message="every trelica update delivered",
    )
    per_asset = updates_per_asset(trelica)
    assert set(per_asset) == {str(a) for a in range(ASSETS)}
    for asset, sequence in per_asset.items():
        assert sequence == sorted(sequence), (asset, sequence)  # repeats allowed, no going back
        assert set(sequence) == set(range(UPDATES)), (asset, sequence)
    assert consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=1, timeout_s=3) == []
    assert service.metric("asset_sync_events_dead_lettered_total") == 0

    # And the parked copies carry where they came from; parking ended, nothing left parked
    parked = consume_all(
        kafka_bootstrap, f"{source_topic}.parked.trelica.default", expected=expected, timeout_s=5
    )
    assert parked, "nothing was parked"
    headers = dict(parked[0].headers)
    assert headers["parked.from"].decode().startswith(f"{source_topic}:")
    assert headers["parked.reason"] in (b"unavailable", b"behind_parked")
    wait_until(
        lambda: (
            service.metric("asset_sync_connection_parking", **trelica_state) == 0
            and service.metric("asset_sync_parked_events", **trelica_state) == 0
        ),
        timeout_s=20,
        message="parking over",
    )
    print(
        f"\nparking: {len(parked)} of {expected} Trelica updates parked during a "
        f"{OUTAGE_S:.0f}-s outage; Webflow's 100 delivered meanwhile; all delivered in order"
    )
    assert service.terminate() == 0


def delivered_markers(fake: Any, vendor: str = "trelica") -> list[str]:
    return [m for r in fake.succeeded() for m in received_markers(r.body, vendor)]


def updates_per_asset(fake: Any, vendor: str = "trelica") -> dict[str, list[int]]:
    """Per asset, the update numbers of its accepted ``asset/n`` markers, in arrival order."""
    per_asset: dict[str, list[int]] = defaultdict(list)
    for marker in delivered_markers(fake, vendor):
        asset, n = marker.split("/")
        per_asset[asset].append(int(n))
    return per_asset


def test_sigkill_while_parking_and_while_reading_back_loses_nothing(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    # Given Trelica down for 30 s from its first update, and a replica that parks after 20
    trelica = vendors.trelica
    trelica.outage(30.0, Reply(503, body={"error": "down"}))
    sections = QUICK_PARKING
    first = start_service("first", **sections)
    state = {"vendor": "trelica", "connection": "default"}
    # When it is killed (SIGKILL) as soon as it has parked something
    produce(kafka_bootstrap, source_topic, trelica_wave(0, 3))
    wait_until(
        lambda: first.metric("asset_sync_events_parked_total", **state) > 0,
        timeout_s=20,
        message="parking started",
    )
    first.kill()
    # And more updates come while no replica runs; a second replica starts and parks them
    produce(kafka_bootstrap, source_topic, trelica_wave(3, UPDATES))
    second = start_service("second", **sections)
    wait_until(
        lambda: second.metric("asset_sync_connection_parking", **state) == 1 or trelica.ok > 0,
        timeout_s=40,
        message="the second replica parks (or the vendor is back)",
    )
    # And it is killed too once Trelica is back and part of the parked updates was delivered
    wait_until(lambda: trelica.ok > 0, timeout_s=60, message="trelica back")
    second.kill()
    third = start_service("third", **sections)

    # Then every update arrives, each asset's newest last, and nothing is dead-lettered
    wait_until(
        lambda: {m for m in delivered_markers(trelica)} >= all_markers(),
        timeout_s=90,
        message="every trelica update delivered",
    )
    last: dict[str, int] = {}
    for marker in delivered_markers(trelica):
        asset, n = marker.split("/")
        last[asset] = int(n)
    assert last == {str(a): UPDATES - 1 for a in range(ASSETS)}
    assert consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=1, timeout_s=3) == []
    assert third.metric("asset_sync_events_dead_lettered_total") == 0
    assert third.terminate() == 0


def test_no_parked_event_is_read_back_while_its_connection_parks(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    # Given Trelica down for 8 s
    vendors.trelica.outage(8.0, Reply(503, body={"error": "down"}))
    service = start_service(**QUICK_PARKING)
    # When 120 updates come, all parked at once
    produce(kafka_bootstrap, source_topic, trelica_wave(0, 3))
    wait_until(
        lambda: vendors.trelica.ok >= ASSETS * 3,
        timeout_s=60,
        message="every update delivered after the outage",
    )
    # Then no parking partition was read back before parking ended (a fetch of one that was
    # under way as parking began used to hand its events straight back)
    messages = [e["msg"] for e in service.log_entries()]
    started = messages.index("connection unavailable: parking its events")
    ended = messages.index("connection available: reading its parked events back")
    assert "parked events all read back" not in messages[started:ended]
    assert service.terminate() == 0


def test_an_event_parked_longer_than_max_age_is_dead_lettered_as_expired(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    # Given Trelica down for 12 s, and parked events that may wait 3 s
    trelica = vendors.trelica
    trelica.outage(12.0, Reply(503, body={"error": "down"}))
    service = start_service(
        parking={"enabled": True, "backlog": 20, "max_age_s": 3},
        breaker={"failure_threshold": 3, "open_s": 0.5, "max_open_s": 2},
    )
    # When 120 updates come and most are parked
    produce(kafka_bootstrap, source_topic, trelica_wave(0, 3))
    # Then every parked one but the one read back to probe the vendor (none of Trelica's
    # events is left in memory to do it) is read back after the outage and dead-lettered as
    # expired. Before, parking ended as a probe was due and every parked event came back
    # within 2 s, waited in memory and was delivered after the outage.
    wait_until(
        lambda: trelica.ok + service.metric("asset_sync_events_dead_lettered_total") >= ASSETS * 3,
        timeout_s=60,
        message="every update delivered or dead-lettered",
    )
    parked = service.metric("asset_sync_events_parked_total")
    expired = service.metric("asset_sync_events_dead_lettered_total", reason="expired")
    assert parked > 1 and expired == parked - 1, (parked, expired)
    messages = [e["msg"] for e in service.log_entries()]
    assert messages.count("connection available: reading its parked events back") == 1
    assert service.metric("asset_sync_events_dead_lettered_total") == expired
    dead = consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=int(expired))
    assert {dict(r.headers)["dlq.reason"] for r in dead} == {b"expired"}
    assert trelica.ok == ASSETS * 3 - expired
    assert service.terminate() == 0


def all_markers() -> set[str]:
    return {f"{a}/{n}" for a in range(ASSETS) for n in range(UPDATES)}


def test_a_two_minute_outage_of_one_vendor_under_steady_traffic_for_all_five(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    """The short version of bench scenario 12 (30 minutes there). A memory bound that one
    vendor's backlog would fill within the outage: without parking, fetching would pause for
    every vendor."""
    outage_s, rate, duration_s = 120.0, 20, 150.0  # rate: events a second per vendor
    trelica = vendors.trelica
    trelica.outage(outage_s, Reply(503, body={"error": "down"}))
    service = start_service(
        parking={"enabled": True, "backlog": 200},
        breaker={"failure_threshold": 3, "open_s": 0.5, "max_open_s": 5},
        dispatch={"max_buffered": 1500, "max_uncommitted": 3000},
    )
    assert service.proc is not None
    # When every vendor gets 20 updates a second for 150 s, Trelica down for the first 120 s
    produced: dict[str, list[float]] = {v: [] for v in VENDORS}
    rss: list[float] = []
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    started = time.monotonic()
    n = 0
    while (now := time.monotonic()) - started < duration_s:
        for vendor in VENDORS:
            for _ in range(rate // 4):
                ev = event(vendor, n, assets=100)
                key = f"{vendor}:{ev['data']['asset_id']}".encode()
                producer.send(source_topic, json.dumps(ev).encode(), key=key)
                produced[vendor].append(now)
                n += 1
        producer.flush()
        rss.append(rss_mb(service.proc.pid))
        time.sleep(max(0.0, started + len(rss) * 0.25 - time.monotonic()))
    producer.close()

    # Then the other vendors kept up throughout: each 10-s window of the outage delivered at
    # least 90% of what was produced in it
    for vendor in VENDORS:
        if vendor == "trelica":
            continue
        fake = vendors.fakes[vendor]
        delivered_at = [r.at for r in fake.succeeded() for _ in received_markers(r.body, vendor)]
        for window in range(10, int(outage_s) - 10, 10):
            lo, hi = started + window, started + window + 10
            made = sum(lo <= t < hi for t in produced[vendor])
            got = sum(lo <= t < hi for t in delivered_at)
            assert got >= 0.9 * made, (vendor, window, made, got)
    # And Trelica's updates were all delivered after the outage, per asset in order
    total = len(produced["trelica"])
    wait_until(lambda: vendors.trelica.ok >= total, timeout_s=120, message="trelica caught up")
    per_asset: dict[str, list[int]] = defaultdict(list)
    for r in trelica.succeeded():
        for marker in received_markers(r.body, "trelica"):
            per_asset[r.path].append(int(marker.split()[-1]))
    assert sum(len(set(s)) for s in per_asset.values()) == total
    for path, sequence in per_asset.items():
        assert sequence == sorted(sequence), (path, sequence)
    # And nothing was dead-lettered, memory stayed bounded, the consumer never left its group
    assert service.metric("asset_sync_events_dead_lettered_total") == 0
    parked = service.metric("asset_sync_events_parked_total", vendor="trelica")
    assert parked >= total * 0.5, (parked, total)
    half = len(rss) // 2
    assert max(rss[half:]) < max(rss[:half]) * 1.5 + 50, (max(rss[:half]), max(rss[half:]))
    assigned = [e for e in service.log_entries() if e.get("msg") == "partitions assigned"]
    released = [  # the first join revokes nothing, and says so
        e
        for e in service.log_entries()
        if e.get("msg") == "partitions released" and e.get("partitions")
    ]
    assert len(assigned) == 1 and not released, (assigned, released)
    print(
        f"\nparking, 2-min outage: {total} Trelica updates, {parked:.0f} parked, all delivered "
        f"in order; the other four kept >= 90% in every 10-s window; RSS "
        f"{min(rss):.0f}-{max(rss):.0f} MB"
    )
    assert service.terminate() == 0


def test_two_replicas_own_each_parking_partition_with_its_source_partition(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    # Given Trelica down for 30 s, and two replicas in one group that park after 20
    trelica = vendors.trelica
    trelica.outage(30.0, Reply(503, body={"error": "down"}))
    sections = QUICK_PARKING
    first = start_service("first", **sections)
    second = start_service("second", **sections)
    wait_until(
        lambda: {p for s in (first, second) for p in owned(s, source_topic)} == {0, 1, 2},
        timeout_s=30,
        message="the group settled",
    )
    # Then each replica owns partition p of every parking topic with partition p of the source
    for service in (first, second):
        mine = owned(service, source_topic)
        for vendor in VENDORS:
            assert owned(service, f"{source_topic}.parked.{vendor}.default") == mine
    # When both park, and one is killed: its partitions, parked events included, move
    produce(kafka_bootstrap, source_topic, trelica_wave(0, UPDATES))
    wait_until(
        lambda: (
            first.metric("asset_sync_events_parked_total")
            + second.metric("asset_sync_events_parked_total")
            > 0
        ),
        timeout_s=20,
        message="parking started",
    )
    first.kill()
    wait_until(
        lambda: owned(second, source_topic) == {0, 1, 2},
        timeout_s=60,
        message="the survivor owns every partition",
    )
    assert all(owned(second, f"{source_topic}.parked.{v}.default") == {0, 1, 2} for v in VENDORS)
    # Then every update arrives once Trelica is back, each asset's newest last, none dead
    wait_until(
        lambda: set(delivered_markers(trelica)) >= all_markers(),
        timeout_s=90,
        message="every trelica update delivered",
    )
    last = {m.split("/")[0]: int(m.split("/")[1]) for m in delivered_markers(trelica)}
    assert last == {str(a): UPDATES - 1 for a in range(ASSETS)}
    assert consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=1, timeout_s=3) == []
    assert second.terminate() == 0


def owned(service: Any, topic: str) -> set[int]:
    """The partitions of ``topic`` the service's last assignment gave it."""
    assigned = [e for e in service.log_entries() if e.get("msg") == "partitions assigned"]
    if not assigned:
        return set()
    return {
        int(name.rsplit(":", 1)[1])
        for name in assigned[-1]["partitions"]
        if name.rsplit(":", 1)[0] == topic
    }


def test_a_connection_rate_limited_far_below_its_inflow_parks_too(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    # Given Webflow taking 5 requests a second (429 beyond), and a replica that parks a
    # connection with more than 20 waiting, the oldest for 3 s
    webflow = vendors.webflow
    webflow.limit_to(TokenBucket(5, 5, 300))  # announced as 300 a minute
    service = start_service(parking={"enabled": True, "backlog": 20, "max_wait_s": 3})
    state = {"vendor": "webflow", "connection": "default"}
    # When 150 updates of 30 assets come at once (30 s of the vendor's rate)
    updates = [
        marked("webflow", f"{a}/{n}", asset_id=webflow_id(a)) for n in range(5) for a in range(30)
    ]
    produce(
        kafka_bootstrap,
        source_topic,
        [(f"webflow:{e['data']['asset_id']}".encode(), encode(e), []) for e in updates],
    )
    # Then it parks, though its breaker stays closed (429s are answers of a working vendor)
    wait_until(
        lambda: service.metric("asset_sync_events_parked_total", **state) > 0,
        timeout_s=30,
        message="webflow parked",
    )
    assert service.metric("asset_sync_connection_state", **state) == 0
    # And every update arrives in per-asset order, none dead-lettered
    wait_until(
        lambda: (
            len({m for r in webflow.succeeded() for m in received_markers(r.body, "webflow")})
            >= 150
        ),
        timeout_s=120,
        message="every webflow update delivered",
    )
    for asset, sequence in updates_per_asset(webflow, "webflow").items():
        assert sequence == sorted(sequence), (asset, sequence)
    assert service.metric("asset_sync_events_dead_lettered_total") == 0
    assert service.terminate() == 0


def webflow_id(n: int) -> str:
    return f"{n:024x}"  # Webflow asset ids are 24 hex digits


def test_a_coalescing_connection_catches_up_after_parking_in_fewer_requests(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    """With ``coalesce: true``, the parked updates read back go several to a request: each
    asset ends on its last update, reached in order, every offset is committed and none is
    dead-lettered."""
    trelica = vendors.trelica
    trelica.outage(10.0, Reply(503, body={"error": "down"}))
    settings = {**vendors.connections()["trelica"]["default"], "coalesce": True}
    service = start_service(**QUICK_PARKING, connections={"trelica": {"default": settings}})
    state = {"vendor": "trelica", "connection": "default"}
    produce(kafka_bootstrap, source_topic, trelica_wave(0, 3))
    wait_until(
        lambda: service.metric("asset_sync_events_parked_total", **state) > 0,
        timeout_s=20,
        message="trelica parked",
    )
    produce(kafka_bootstrap, source_topic, trelica_wave(3, UPDATES))
    last = {f"{a}/{UPDATES - 1}" for a in range(ASSETS)}
    wait_until(
        lambda: last <= set(delivered_markers(trelica)),
        timeout_s=60,
        message="every asset's last update delivered",
    )
    group = service.config["kafka"]["group_id"]
    for topic in (source_topic, f"{source_topic}.parked.trelica.default"):
        end = end_offsets(kafka_bootstrap, topic, 3)
        wait_until(
            lambda t=topic, e=end: committed(kafka_bootstrap, group, t, 3) == e,
            timeout_s=30,
            message=f"every offset of {topic} committed",
        )
    per_asset = updates_per_asset(trelica)
    assert set(per_asset) == {str(a) for a in range(ASSETS)}
    for asset, sequence in per_asset.items():
        assert sequence == sorted(sequence), (asset, sequence)
        assert sequence[-1] == UPDATES - 1, (asset, sequence)
    assert service.metric("asset_sync_events_dead_lettered_total") == 0
    coalesced = service.metric("asset_sync_events_coalesced_total", vendor="trelica")
    assert coalesced > 0
    print(
        f"\nparking, coalescing: {ASSETS * UPDATES} Trelica updates in "
        f"{len(trelica.succeeded())} accepted requests ({coalesced:.0f} rode in another's)"
    )
    assert service.terminate() == 0
