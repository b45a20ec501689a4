"""After a rebalance a member shows lag only for the partitions it owns: a revoked partition's
series would keep the summed lag high and could fire a false AssetSyncNoProgress."""

from __future__ import annotations

from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.service_helpers import ServiceProcess, wait_until


def lag_partitions(service: ServiceProcess) -> set[str]:
    _, text = service.get("/metrics")
    return {
        line.split('partition="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("asset_sync_consumer_lag{")
    }


def test_revoked_partitions_lose_their_lag_series(
    source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    first = start_service("first")
    wait_until(lambda: lag_partitions(first) == {"0", "1", "2"}, message="lag of all three")
    second = start_service("second")
    wait_until(lambda: bool(lag_partitions(second)), message="the second member's share")
    wait_until(
        lambda: (
            lag_partitions(first) | lag_partitions(second) == {"0", "1", "2"}
            and not lag_partitions(first) & lag_partitions(second)
        ),
        timeout_s=30,
        message="each partition's lag shown by its owner alone",
    )
    assert second.terminate() == 0
    wait_until(lambda: lag_partitions(first) == {"0", "1", "2"}, message="all three back")
    assert first.terminate() == 0
