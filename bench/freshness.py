"""Scenario 10: what per-field last-writer-wins (consumer/state/freshness.py) costs.

Three targets: scenario 1 with an order key on every event loses at most 15% of its rate to
freshness; a partition holding 100,000 assets is restored from the changelog in under 10 s;
1,000,000 tracked assets keep the service under 300 MB RSS while it delivers.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from bench.harness import Bench, Service, Simulator, set_top_level, wait_delivered
from bench.scenarios import VENDORS, Row, drain, stop
from consumer.local.samples import event

SNAPSHOT = {"notes": "s0001000", "status": "s0001000", "customFields.cost": "s0001000"}


def freshness(bench: Bench, repeat: int, quick: bool) -> list[Row]:
    return [
        *throughput_cost(bench, repeat, quick),
        restore_time(bench),
        *tracked_memory(bench, quick),
    ]


def throughput_cost(bench: Bench, repeat: int, quick: bool) -> list[Row]:
    """Scenario 1's drain, every event with a ``sequence``, freshness on and off."""
    per_vendor = 10_000 if quick else 40_000
    data = []
    for n in range(per_vendor):
        for vendor in VENDORS:
            ev = event(vendor, n, assets=5000)
            ev["sequence"] = str(n)
            data.append((f"{vendor}:{ev['data']['asset_id']}".encode(), json.dumps(ev).encode()))
    on, off = [], []
    with Simulator([]) as sim:
        for _ in range(repeat):
            rate, services, _ = drain(bench, sim, data)
            stop(services)
            on.append(rate)
            rate, services, _ = drain(bench, sim, data, freshness={"enabled": False})
            stop(services)
            off.append(rate)
    with_it, without = statistics.median(on), statistics.median(off)
    cost = (1 - with_it / without) * 100
    return [
        Row(
            f"10 freshness: scenario 1 with sequence ({len(data):,} events)",
            "delivered, freshness on (baseline: off)",
            with_it,
            "events/s",
            without,
            "cost <= 15%",
            cost <= 15,
        ),
        Row("10 freshness", "throughput cost", cost, "%", None, "<= 15%", cost <= 15),
    ]


def restore_time(bench: Bench, assets: int = 100_000) -> Row:
    """A one-partition changelog of ``assets`` assets, read back when the service starts."""
    topic = bench.topic(1)
    changelog = _changelog(bench, topic, 1)
    _fill(bench, changelog, assets, partitions=1)
    with Simulator([]) as sim:
        config = bench.config(topic, sim.connections)
        set_top_level(config, log_level="INFO")
        service = Service(config)
        _restored(Path(f"{config}.log"), partitions=1)
        time.sleep(3)  # a start-up rebalance may read it again: the longest read counts
        seconds = max(_restored(Path(f"{config}.log"), partitions=1))
        service.stop()
    return Row(
        f"10 freshness: restore a partition of {assets:,} assets",
        "from assignment to ready",
        seconds,
        "s",
        None,
        "< 10 s",
        seconds < 10,
    )


def tracked_memory(bench: Bench, quick: bool) -> list[Row]:
    """1,000,000 assets in a 6-partition changelog; the service restores them, then delivers
    updates of random ones (each a look-up and a write); RSS sampled throughout."""
    assets, updates = (250_000, 20_000) if quick else (1_000_000, 60_000)
    topic = bench.topic(6)
    changelog = _changelog(bench, topic, 6)
    _fill(bench, changelog, assets, partitions=6)
    picks = random.Random(7).sample(range(assets), updates)
    producer = KafkaProducer(bootstrap_servers=bench.broker.bootstrap, acks="all", linger_ms=20)
    for n, asset in enumerate(picks):
        ev = event("trelica", n)
        ev["data"]["asset_id"] = f"asset-{asset}"
        ev["sequence"] = str(2000 + n)
        producer.send(topic, json.dumps(ev).encode(), partition=asset % 6)
    producer.flush(600)
    producer.close()
    with Simulator([]) as sim:
        config = bench.config(topic, sim.connections)
        set_top_level(config, log_level="INFO")
        service = Service(config)
        log = Path(f"{config}.log")
        restoring: list[float] = []  # RSS while restoring
        delivering: list[float] = []  # then while delivering
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done = log.exists() and log.read_text(errors="replace").count('"freshness restored"')
            (delivering if done and done >= 6 else restoring).append(service.rss_mb())
            if service.total("asset_sync_events_delivered_total") >= updates:
                break
            time.sleep(0.5)
        delivering.append(service.rss_mb())
        samples = restoring + delivering
        restore = max(_restored(Path(f"{config}.log"), partitions=6, timeout_s=5))
        wait_delivered([service], updates, {}, timeout_s=5)
        service.stop()
    peak = max(samples)
    return [
        Row(
            f"10 freshness: {assets:,} assets tracked, {updates:,} updates",
            "peak RSS",
            peak,
            "MB",
            None,
            "< 300 MB",
            peak < 300,
        ),
        Row(
            "10 freshness",
            "peak RSS restoring / delivering",
            max(restoring, default=0),
            f"MB / {max(delivering):.0f} MB",
            None,
            "for scale",
            None,
        ),
        Row(
            "10 freshness",
            f"restore of 6 partitions, {assets // 6:,} assets each",
            restore,
            "s",
            None,
            "for scale",
            None,
        ),
    ]


def _changelog(bench: Bench, topic: str, partitions: int) -> str:
    name = f"{topic}.freshness"
    admin = KafkaAdminClient(bootstrap_servers=bench.broker.bootstrap)
    try:
        settings = {"cleanup.policy": "compact"}
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=settings)])
        admin.wait_for_topics([name], timeout_ms=10_000)
    finally:
        admin.close()
    return name


def _fill(bench: Bench, changelog: str, assets: int, partitions: int) -> None:
    """One record per asset, as the service writes them: asset i in partition i % n."""
    producer = KafkaProducer(
        bootstrap_servers=bench.broker.bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024
    )
    value = json.dumps(SNAPSHOT, separators=(",", ":")).encode()
    for asset in range(assets):
        key = f"trelica/default/asset-{asset}".encode()
        producer.send(changelog, key=key, value=value, partition=asset % partitions)
    producer.flush(600)
    producer.close()


def _restored(log: Path, partitions: int, timeout_s: float = 600) -> list[float]:
    """The seconds each partition's restore took, from the service's log."""
    deadline = time.monotonic() + timeout_s
    while True:
        seconds = []
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if '"freshness restored"' in line:
                    seconds.append(float(json.loads(line)["seconds"]))
        if len(seconds) >= partitions or time.monotonic() > deadline:
            if len(seconds) < partitions:
                raise TimeoutError(f"{len(seconds)} of {partitions} partitions restored")
            return seconds
        time.sleep(0.2)
