"""Fixtures for tests that run the service as a real process against the real broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.broker.kafka_clients import create_topic
from tests.fakes import FakeVendors
from tests.kafka_helpers import unique_topic
from tests.service_helpers import ServiceProcess, service_config

StartService = Callable[..., ServiceProcess]


@pytest.fixture
def source_topic(kafka_bootstrap: str) -> str:
    """A fresh 3-partition source topic."""
    return create_topic(kafka_bootstrap, unique_topic("src"), partitions=3)


@pytest.fixture
def start_service(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, tmp_path: Path
) -> Iterator[StartService]:
    """Start ``asset-sync run`` processes (all killed at teardown)."""
    started: list[ServiceProcess] = []

    def start(
        name: str = "svc", wait_ready: bool = True, topic: str | None = None, **sections: Any
    ) -> ServiceProcess:
        config = service_config(kafka_bootstrap, topic or source_topic, vendors, **sections)
        service = ServiceProcess(config, tmp_path, name)
        started.append(service)
        return service.start(wait_ready=wait_ready)

    yield start
    for service in started:
        service.stop()
