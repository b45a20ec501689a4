"""Test harness: one real Kafka broker per pytest session, fresh topics per test.

Set ``KAFKA_BOOTSTRAP`` to reuse a running broker; otherwise the first integration test
starts one with ``consumer.local.local_kafka`` (the same code CI and ``asset-sync demo`` use).
Tests under ``tests/integration`` are marked ``integration`` automatically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.broker.kafka_clients import create_topic
from consumer.local.local_kafka import LocalKafka
from tests.fakes import FakeVendors
from tests.kafka_helpers import unique_topic


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


SECRETS_KEY = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def vendor_servers(request: pytest.FixtureRequest) -> Iterator[FakeVendors]:
    with FakeVendors() as fakes:
        request.config.stash[SECRETS_KEY] = list(fakes.secrets.values())
        yield fakes


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every log the suites wrote (service processes, demo, simulator) is searched for every
    credential the fakes handed out; one found fails the run."""
    secrets = session.config.stash.get(SECRETS_KEY, [])
    factory = getattr(session.config, "_tmp_path_factory", None)
    if not secrets or factory is None:
        return
    leaks = []
    for path in factory.getbasetemp().rglob("*.log"):
        text = path.read_text(errors="replace")
        leaks += [f"{path}: {secret[:14]}..." for secret in secrets if secret in text]
    if leaks:
        print("\nSECRET LEAK in logs:\n" + "\n".join(leaks))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def vendors(vendor_servers: FakeVendors) -> Iterator[FakeVendors]:
    """The five fake vendors, with nothing received or scripted yet."""
    vendor_servers.reset()
    yield vendor_servers
