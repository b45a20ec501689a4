"""Poison and backpressure: a vendor is down while events keep arriving. Fetching pauses
(memory bounded), the consumer stays in its group (polling never stops), and every event is
delivered after recovery or dead-lettered at ``retry.max_elapsed_s``.

The outage lasts ``ASSET_SYNC_OUTAGE_S`` seconds: by default the five minutes the reliability
issue names, thirty times the ``max.poll.interval.ms`` of 10 s configured here (set 60 for a
quicker local run).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

from tests.fakes import FakeVendors, Reply
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, produce
from tests.reliability.helpers import delivered, rss_mb, updates
from tests.service_helpers import wait_until

OUTAGE_S = float(os.environ.get("ASSET_SYNC_OUTAGE_S", "300"))


def test_vendor_down_pauses_fetching_and_everything_ends_somewhere(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    vendors.trelica.always = Reply(503, body={"error": "down"})
    service = start_service(
        kafka={"max_poll_interval_ms": 10_000, "session_timeout_ms": 6_000},
        retry={
            "max_attempts": 1000,
            "max_elapsed_s": OUTAGE_S / 2,
            "base_delay_s": 0.2,
            "max_delay_s": 2,
        },
        dispatch={"max_buffered": 500, "max_in_flight_per_connection": 50},
    )
    assert service.proc is not None
    time.sleep(2)  # kafka-python may re-join once right after the first join; let it settle
    records, expected = updates(5_000, assets=2_000)

    # Events keep arriving during the outage
    def feed() -> None:
        for i in range(0, len(records), 250):
            produce(kafka_bootstrap, source_topic, records[i : i + 250])
            time.sleep(OUTAGE_S / 25)

    feeder = threading.Thread(target=feed)
    feeder.start()
    paused, buffered, rss = [], [], []
    started = time.monotonic()
    outage_began = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    while time.monotonic() - started < OUTAGE_S:
        paused.append(service.metric("asset_sync_paused_partitions"))
        buffered.append(service.metric("asset_sync_buffered_events"))
        rss.append(rss_mb(service.proc.pid))
        time.sleep(1)
    vendors.trelica.always = None  # the vendor recovers
    feeder.join()
    trelica = {e for e in expected if e[0] == "trelica"}
    wait_until(
        lambda: set(delivered(vendors)) >= expected - trelica,
        timeout_s=120,
        message="other vendors delivered",
    )

    def settled() -> tuple[int, int]:
        dead = len(consume_all(kafka_bootstrap, f"{source_topic}.dlq", 10**6, 3))
        return len({e for e in delivered(vendors) if e[0] == "trelica"}), dead

    wait_until(
        lambda: sum(settled()) >= len(trelica),
        timeout_s=180,
        message="every trelica event delivered or dead-lettered",
    )
    ok, dead = settled()
    dlq = consume_all(kafka_bootstrap, f"{source_topic}.dlq", 10**6, 5)
    assert all(dict(r.headers)["dlq.reason"] == b"retries_exhausted" for r in dlq)
    assert ok + dead == len(trelica)
    # Start-up may re-join once while metadata settles; from the outage on, no rebalance
    revoked = [
        e
        for e in service.log_entries()
        if e.get("msg") == "partitions released" and e["ts"] > outage_began
    ]
    print(
        f"\nbackpressure: trelica down {OUTAGE_S:.0f}s; buffer peak {max(buffered):.0f} "
        f"(limit 500), paused partitions seen {max(paused):.0f}; RSS {rss[0]:.0f} MB "
        f"at the outage's start, peak {max(rss):.0f} MB; trelica: {ok} "
        f"delivered after recovery, {dead} dead-lettered at max_elapsed_s; "
        f"rebalances during the outage {len(revoked)}"
    )
    assert max(paused) > 0, "fetching paused while the buffer was full"
    assert max(buffered) <= 500 + 2_000, "memory bounded: buffer near its limit"
    assert max(rss) < rss[0] + 100, "memory bounded: RSS flat while events keep arriving"
    assert revoked == [], "never left the group: no rebalance while the vendor was down"
    wait_until(
        lambda: service.metric("asset_sync_paused_partitions") == 0,
        timeout_s=30,
        message="no partition left paused",
    )
    assert service.terminate() == 0
