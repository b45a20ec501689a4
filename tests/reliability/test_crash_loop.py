"""Crash loop: SIGKILL the service at 10 random moments; nothing is lost."""

from __future__ import annotations

import random
import time

from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, produce
from tests.reliability.helpers import Record, delivered, updates
from tests.service_helpers import wait_until

EVENTS = 20_000
JUNK = 200
KILLS = 10


def test_sigkill_ten_times_loses_nothing(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    # Given 20k updates for all vendors and some junk on the topic
    records, expected = updates(EVENTS)
    junk: list[Record] = [(b"junk", f"junk-{i}".encode(), []) for i in range(JUNK)]
    produce(
        kafka_bootstrap, source_topic, [*records[: EVENTS // 2], *junk, *records[EVENTS // 2 :]]
    )
    settings = {"commit_interval_s": 0.5, "dedup_window_s": 0}
    rng = random.Random(20261123)
    # When the service is killed with SIGKILL at 10 random moments and restarted each time
    for attempt in range(KILLS):
        service = start_service(name=f"run{attempt}", dispatch=settings)
        time.sleep(rng.uniform(0.2, 2.0))
        service.kill()
    final = start_service(name="final", dispatch=settings)
    # Then every update reaches its vendor and every junk record the dead-letter topic
    wait_until(
        lambda: set(delivered(vendors)) >= expected, timeout_s=180, message="every update delivered"
    )
    dlq = consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=JUNK, timeout_s=60)
    assert {r.value for r in dlq} == {value for _, value, _ in junk}
    counts = delivered(vendors)
    lost = expected - set(counts)
    duplicates = sum(counts.values()) - len(counts)
    print(
        f"\ncrash loop: {EVENTS} updates + {JUNK} junk, {KILLS} SIGKILLs: lost {len(lost)}, "
        f"duplicate deliveries {duplicates} ({duplicates / EVENTS:.1%}), "
        f"duplicate dead-letters {len(dlq) - JUNK}"
    )
    assert not lost
    assert final.terminate() == 0
