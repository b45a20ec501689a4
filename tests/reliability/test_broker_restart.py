"""Broker restart: the broker stops for 15 s mid-stream and starts again. The service
recovers by itself, loses nothing, and says not-ready while the broker is gone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from consumer.broker.kafka_clients import create_topic
from consumer.local.local_kafka import LocalKafka
from tests.fakes import FakeVendors
from tests.kafka_helpers import unique_topic
from tests.reliability.helpers import delivered, updates
from tests.service_helpers import ServiceProcess, service_config, wait_until

OUTAGE_S = 15


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of this test's own: stopping the session's would disturb the others."""
    broker = LocalKafka(tmp_path / "kafka")
    broker.start()
    yield broker
    broker.stop()


def test_service_rides_out_a_broker_restart(
    own_broker: LocalKafka, vendors: FakeVendors, tmp_path: Path
) -> None:
    topic = create_topic(own_broker.bootstrap, unique_topic("restart"), partitions=3)
    config = service_config(
        own_broker.bootstrap, topic, vendors, dispatch={"commit_interval_s": 0.5}
    )
    service = ServiceProcess(config, tmp_path).start()
    try:
        run_through_restart(own_broker, service, vendors, topic)
    finally:
        service.stop()


def run_through_restart(
    own_broker: LocalKafka, service: ServiceProcess, vendors: FakeVendors, topic: str
) -> None:
    records, expected = updates(1_500, assets=300)
    producer = KafkaProducer(
        bootstrap_servers=own_broker.bootstrap,
        acks="all",
        retries=1_000_000,
        request_timeout_ms=5_000,
        delivery_timeout_ms=120_000,
        max_block_ms=120_000,
    )

    # A steady stream of about 50 events/s for about 30 s, across the outage
    def feed() -> None:
        for key, value, _ in records:
            producer.send(topic, key=key, value=value)
            time.sleep(0.02)

    feeding = threading.Thread(target=feed)
    feeding.start()
    time.sleep(8)
    own_broker.stop()
    not_ready = False
    deadline = time.monotonic() + OUTAGE_S
    while time.monotonic() < deadline:
        code, _ = service.get("/readyz")
        not_ready = not_ready or code == 503
        time.sleep(0.5)
    own_broker.start()
    feeding.join()
    producer.flush(120)
    producer.close()
    wait_until(
        lambda: set(delivered(vendors)) >= expected,
        timeout_s=120,
        message="every event delivered after the restart",
    )
    wait_until(lambda: service.get("/readyz")[0] == 200, timeout_s=60, message="ready again")
    counts = delivered(vendors)
    print(
        f"\nbroker restart: down {OUTAGE_S}s, {len(expected)} events all delivered, "
        f"{sum(counts.values()) - len(counts)} duplicates; /readyz 503 during the outage: "
        f"{not_ready}"
    )
    assert not_ready, "/readyz reports not-ready while the broker is gone"
    assert service.proc is not None and service.proc.poll() is None, "no restart needed"
    assert service.terminate() == 0
