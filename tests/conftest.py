"""Test harness: one real Kafka broker per pytest session, fresh topics per test.

Set ``KAFKA_BOOTSTRAP`` to reuse a running broker; otherwise the first integration test
starts one with ``consumer.local_kafka`` (the same code CI and ``asset-sync demo`` use).
Tests under ``tests/integration`` are marked ``integration`` automatically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.local_kafka import LocalKafka
from tests.fakes import FakeVendors
from tests.kafka_helpers import create_topic, unique_topic


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka | None]:
    """The broker this session started, or None when ``KAFKA_BOOTSTRAP`` names one."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield None
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(local_kafka: LocalKafka | None) -> str:
    return local_kafka.bootstrap if local_kafka else os.environ["KAFKA_BOOTSTRAP"]


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    """A fresh single-partition topic."""
    return create_topic(kafka_bootstrap, unique_topic())


@pytest.fixture(scope="session")
def vendor_servers() -> Iterator[FakeVendors]:
    with FakeVendors() as fakes:
        yield fakes


@pytest.fixture
def vendors(vendor_servers: FakeVendors) -> Iterator[FakeVendors]:
    """The five fake vendors, with nothing received or scripted yet."""
    vendor_servers.reset()
    yield vendor_servers
