"""A rebalance that hands a member its own partitions back loses nothing.

kafka-python keeps the fetch position of a partition that is revoked and assigned again; work
dropped on revocation must be fetched again, not skipped. A second member joining the group
(even for another topic) makes every member revoke and re-join.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer

from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.kafka_helpers import produce
from tests.reliability.helpers import delivered, updates
from tests.service_helpers import wait_until


def test_revoked_and_reassigned_partitions_lose_nothing(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    for fake in vendors.fakes.values():
        fake.latency_s = 0.2
    service = start_service(dispatch={"commit_interval_s": 0.3, "dedup_window_s": 0})
    records, expected = updates(600, assets=20)  # per-asset queues: work waits in line
    produce(kafka_bootstrap, source_topic, records)
    wait_until(lambda: len(delivered(vendors)) >= 50, message="deliveries under way")
    # A second member joins the group and leaves: partitions move to it and come back. It
    # neither commits nor keeps what it fetched. (A member of another topic would make
    # kafka-python 3.0 stall on the rebalance: "No partition metadata for topic".)
    intruder = KafkaConsumer(
        source_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=service.config["kafka"]["group_id"],
        enable_auto_commit=False,
    )
    deadline = time.monotonic() + 20
    while not intruder.assignment() and time.monotonic() < deadline:
        intruder.poll(timeout_ms=200)
    intruder.close(autocommit=False)
    wait_until(
        lambda: set(delivered(vendors)) >= expected,
        timeout_s=120,
        message="every update delivered after the rebalances",
    )
    released = [e for e in service.log_entries() if e.get("msg") == "partitions released"]
    print(
        f"\nrebalance: {len(released)} revocations, {len(expected)} updates all delivered, "
        f"{sum(delivered(vendors).values()) - len(expected)} duplicates"
    )
    assert released, "the test must actually cause a revocation"
    assert service.terminate() == 0
