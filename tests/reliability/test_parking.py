"""Parking (consumer/delivery/parking.py): a connection that is down, with more than
``parking.backlog`` events waiting, moves them to its parking topic; the other vendors keep
flowing; once it is back its parked events are delivered in their per-asset order, and none
is dead-lettered."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tests.fakes import FakeVendors, Reply
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, produce
from tests.samples import encode, marked, received_markers
from tests.service_helpers import wait_until

OUTAGE_S = 25.0
ASSETS, UPDATES = 40, 5  # Trelica: updates n = 0..4 of each asset, in that order


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
    service = start_service(
        parking={"enabled": True, "backlog": 20},
        breaker={"failure_threshold": 3, "open_s": 0.5, "max_open_s": 2},
    )
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
    per_asset: dict[str, list[int]] = defaultdict(list)
    for marker in delivered_markers(trelica):
        asset, n = marker.split("/")
        per_asset[asset].append(int(n))
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


def delivered_markers(fake: Any) -> list[str]:
    return [m for r in fake.succeeded() for m in received_markers(r.body, "trelica")]
