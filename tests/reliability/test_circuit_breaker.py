"""A vendor down for longer than the retry budget, behind the connection's circuit breaker:
the breaker opens, probes about once a second or less, closes when the vendor is back, and
no event is dead-lettered, because waiting for an open connection spends no budget."""

from __future__ import annotations

import itertools
import time

from tests.fakes import FakeVendors, Reply
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, produce
from tests.samples import encode, marked, received_markers
from tests.service_helpers import wait_until

OUTAGE_S = 30.0
EVENTS = 200


def test_an_outage_longer_than_max_elapsed_dead_letters_nothing(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    # Given Trelica answering 503 to everything for 30 s from its first update request
    trelica = vendors.trelica
    trelica.outage(OUTAGE_S, Reply(503, body={"error": "down"}))
    # And a retry budget of 20 s (the breaker at its defaults: 10 failures, 1 s doubling to 30)
    service = start_service(
        retry={"max_attempts": 8, "max_elapsed_s": 20, "base_delay_s": 0.1, "max_delay_s": 2}
    )
    state = {"vendor": "trelica", "connection": "default"}
    assert service.metric("asset_sync_connection_state", **state) == 0

    # When 200 events of 200 assets are waiting
    events = [marked("trelica", f"cb-{n}", asset_id=f"cb-asset-{n}") for n in range(EVENTS)]
    produce(
        kafka_bootstrap,
        source_topic,
        [(f"trelica:{e['data']['asset_id']}".encode(), encode(e), []) for e in events],
    )
    seen: list[tuple[float, float]] = []  # (time, state) from /metrics
    started = time.monotonic()
    while trelica.ok < EVENTS and time.monotonic() - started < OUTAGE_S + 60:
        seen.append((time.monotonic(), service.metric("asset_sync_connection_state", **state)))
        time.sleep(0.25)

    # Then every event was delivered once the vendor was back, and none dead-lettered
    wait_until(lambda: trelica.ok >= EVENTS, timeout_s=10, message="all delivered")
    markers = {m for r in trelica.succeeded() for m in received_markers(r.body, "trelica")}
    assert markers == {f"cb-{n}" for n in range(EVENTS)}
    assert consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=1, timeout_s=3) == []
    assert service.metric("asset_sync_events_dead_lettered_total") == 0

    # And while the breaker was open the vendor saw at most about one request a second
    updates = trelica.updates()
    began = updates[0].at
    refused = [r.at - began for r in updates if r.status == 503]
    wave = [t for t in refused if t < 0.9]  # the attempts already under way when it opened
    probes = [t for t in refused if t >= 0.9]
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert all(gap >= 0.9 for gap in gaps), probes
    assert len(probes) <= 6, probes  # 1, 2, 4, 8, 16 s apart: a handful in 30 s
    assert len(wave) <= 2 * EVENTS
    recovered = next(r.at - began for r in updates if r.status == 200)
    assert OUTAGE_S <= recovered <= OUTAGE_S + 31  # at most the cap of the wait past its end

    # And the state metric showed the connection open, then closed
    states = [s for _, s in seen]
    assert 2 in states, seen
    assert states[-1] == 0 or service.metric("asset_sync_connection_state", **state) == 0
    for entered in ("open", "half_open", "closed"):
        assert service.metric("asset_sync_connection_transitions_total", state=entered) >= 1
    logged = [e for e in service.log_entries() if e.get("msg") == "circuit breaker changed"]
    assert {e["state"] for e in logged} >= {"open", "closed"}
    print(
        f"\ncircuit breaker: {EVENTS} events, Trelica down {OUTAGE_S:.0f}s; "
        f"{len(wave)} requests in the wave before it opened, then {len(probes)} probes at "
        f"{', '.join(f'{t:.1f}' for t in probes)} s; delivered from {recovered:.1f} s; "
        f"0 dead-lettered"
    )
    assert service.terminate() == 0
