"""Replicas that share one rate-limited credential: real ``asset-sync run`` processes in one
consumer group, the real broker, one Webflow fake whose token bucket (20 requests/s, a
bucket of 20, announced Webflow-style as ``X-RateLimit-Limit: 1200`` a minute) all of them
draw from. Nothing but Kafka and the vendor's answers connects the processes.

The figures are checked with slack (at least 80% of the limit, at most 5% answered 429, over
15 s once every process delivers); the 90% / 2% targets over 60 s are the bench's (bench/,
scenario 9). Run with ``-s`` to see them.
"""

from __future__ import annotations

import json
import time

import pytest

from consumer.broker.kafka_clients import create_topic
from consumer.local.samples import event
from tests.fakes import FakeVendors, Reply
from tests.fakes.base import Received
from tests.fakes.rate_limits import TokenBucket
from tests.integration.conftest import StartService
from tests.kafka_helpers import produce, unique_topic
from tests.reliability.helpers import Record
from tests.service_helpers import ServiceProcess, wait_until

LIMIT = 20.0  # requests a second
EVENTS = 1_500  # more than the test can deliver: a backlog throughout
# A 429 must not cost the delivery: enough attempts for any of them to get through.
RETRY = {"max_attempts": 30, "max_elapsed_s": 120, "base_delay_s": 0.05, "max_delay_s": 0.5}


def webflow_backlog(kafka_bootstrap: str) -> str:
    """A 6-partition topic holding EVENTS updates of as many Webflow assets."""
    topic = create_topic(kafka_bootstrap, unique_topic("shared"), partitions=6)
    records: list[Record] = []
    for n in range(EVENTS):
        ev = event("webflow", n, assets=EVENTS)
        records.append((f"webflow:{ev['data']['asset_id']}".encode(), json.dumps(ev).encode(), []))
    produce(kafka_bootstrap, topic, records)
    return topic


def start(start_service: StartService, topic: str, count: int) -> list[ServiceProcess]:
    """``count`` processes started at once, with nothing to tell them of each other."""
    services = [
        start_service(name=f"r{n}", topic=topic, wait_ready=False, retry=RETRY)
        for n in range(count)
    ]
    for service in services:
        service.wait_ready()
    return services


def delivered(service: ServiceProcess) -> float:
    return service.metric("asset_sync_events_delivered_total", vendor="webflow")


def steady(services: list[ServiceProcess]) -> None:
    """Wait until every process has delivered during the same second (the group is formed
    and each holds partitions)."""
    counts = [delivered(s) for s in services]

    def all_delivering() -> bool:
        nonlocal counts
        now = [delivered(s) for s in services]
        moving = all(b > a for a, b in zip(counts, now, strict=True))
        counts = now
        return moving

    wait_until(all_delivering, timeout_s=30, interval_s=1, message="every process delivering")


def answers(vendors: FakeVendors, start: float, end: float) -> list[Received]:
    return [r for r in vendors.webflow.updates() if start <= r.at < end and r.status]


@pytest.mark.parametrize("count", [2, 3])
def test_replicas_sharing_a_credential_keep_to_its_limit_together(
    kafka_bootstrap: str, vendors: FakeVendors, start_service: StartService, count: int
) -> None:
    vendors.webflow.limit_to(TokenBucket(LIMIT, int(LIMIT), announced=int(LIMIT * 60)))
    topic = webflow_backlog(kafka_bootstrap)
    services = start(start_service, topic, count)
    steady(services)
    before = [delivered(s) for s in services]
    began = time.monotonic()
    time.sleep(15)
    ended = time.monotonic()
    shares = [delivered(s) - b for s, b in zip(services, before, strict=True)]
    window = answers(vendors, began, ended)
    accepted = sum(1 for r in window if r.status == 200) / (ended - began)
    refused = sum(1 for r in window if r.status == 429) / max(len(window), 1)
    print(
        f"\n{count} processes sharing {LIMIT:.0f}/s: {accepted:.1f}/s accepted "
        f"({accepted / LIMIT:.0%}), {refused:.1%} answered 429, "
        f"deliveries per process {[int(s) for s in shares]}"
    )
    assert accepted >= 0.8 * LIMIT
    assert refused <= 0.05
    assert sum(1 for s in shares if s > 0) >= 2, "the credential was not shared"
    assert vendors.violations() == []


def test_a_429_with_256_waiting_costs_its_retry_after_not_a_stall(
    kafka_bootstrap: str, vendors: FakeVendors, start_service: StartService
) -> None:
    """The issue's stall: after one 429 (Retry-After: 1) a process sent nothing for 12 s
    with 256 deliveries waiting, then took seconds to find the pace again."""
    vendors.webflow.limit_to(TokenBucket(LIMIT, int(LIMIT), announced=int(LIMIT * 60)))
    topic = webflow_backlog(kafka_bootstrap)
    (service,) = start(start_service, topic, 1)
    wait_until(lambda: delivered(service) >= 60, timeout_s=30, message="delivering at pace")
    # someone else using the credential: the next request is refused, once
    vendors.webflow.fail_next(Reply(429, {"Retry-After": "1"}, {"code": "too_many_requests"}))
    wait_until(
        lambda: any(r.status == 429 for r in vendors.webflow.updates()),
        timeout_s=5,
        message="the 429 answered",
    )
    time.sleep(5)
    requests = vendors.webflow.updates()
    refused = next(r.at for r in requests if r.status == 429)
    after = [r.at for r in requests if r.at > refused + 0.2]  # not what was on the wire
    resumed = after[0] - refused
    paces = [
        len(answers(vendors, after[0] + s, after[0] + s + 1)) for s in range(3)
    ]  # requests in each of the 3 seconds after it sent again
    print(f"\nafter a 429 (Retry-After: 1): sent again {resumed:.2f} s later, then {paces}/s")
    assert resumed <= 2.0
    assert min(paces) >= 0.6 * LIMIT
    assert sum(1 for r in requests if r.status == 429) == 1
