"""Scenario 12: one vendor down for 30 minutes (2 with --quick) under steady traffic for all
five, with parking on (consumer/delivery/parking.py).

Targets (issue "A vendor down for hours"): none of the down vendor's events dead-lettered, all
delivered after it is back with per-asset order kept, the other vendors at 90% or more of
their normal throughput throughout, RSS flat while the vendor is down (parked events wait in
Kafka) and under scenario 7's bound while they are caught up, the consumer never leaving its
group.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kafka import KafkaProducer

from bench.harness import Bench, Service, Simulator, set_top_level
from bench.scenarios import VENDORS, Row
from consumer.local.samples import event

RATE = 20  # events a second per vendor
WINDOW_S = 10.0
DOWN = "trelica"


def long_outage(bench: Bench, quick: bool) -> list[Row]:
    outage_s = 120.0 if quick else 1800.0
    duration_s = outage_s + 30
    topic = bench.topic(6)
    with Simulator(["--trelica-503-for", str(outage_s)]) as sim:
        config = bench.config(
            topic,
            sim.connections,
            parking={"enabled": True},
            breaker={"max_open_s": 5},
        )
        set_top_level(config, log_level="INFO")
        service = Service(config)
        producer = KafkaProducer(bootstrap_servers=bench.broker.bootstrap, linger_ms=5)
        produced = dict.fromkeys(VENDORS, 0)
        shares: dict[str, list[float]] = {v: [] for v in VENDORS if v != DOWN}
        rss: list[float] = []  # a sample each window while the vendor is down
        rss_after: list[float] = []  # and each second while its parked events are caught up
        before = {v: sim.stats(v)["ok_updates"] for v in VENDORS}
        made_before = dict(produced)
        started = time.monotonic()
        n, tick = 0, 0
        while time.monotonic() - started < duration_s:
            for vendor in VENDORS:
                for _ in range(RATE // 4):
                    ev = event(vendor, n, assets=100)
                    key = f"{vendor}:{ev['data']['asset_id']}".encode()
                    producer.send(topic, json.dumps(ev).encode(), key=key)
                    produced[vendor] += 1
                    n += 1
            producer.flush()
            tick += 1
            if tick % int(WINDOW_S * 4) == 0:  # a window: what each other vendor got of it
                now = {v: sim.stats(v)["ok_updates"] for v in VENDORS}
                in_outage = time.monotonic() - started < outage_s - WINDOW_S
                (rss if in_outage else rss_after).append(service.rss_mb())
                for vendor, share in shares.items():
                    made = produced[vendor] - made_before[vendor]
                    if in_outage and tick > 8:  # after the first two seconds
                        share.append((now[vendor] - before[vendor]) / max(made, 1))
                before, made_before = now, dict(produced)
            time.sleep(max(0.0, started + tick * 0.25 - time.monotonic()))
        producer.close()
        deadline = time.monotonic() + 900
        while sim.stats(DOWN)["ok"] < produced[DOWN] and time.monotonic() < deadline:
            rss_after.append(service.rss_mb())
            time.sleep(1)
        caught_up = time.monotonic() - started - outage_s
        down = sim.stats(DOWN)
        dead = service.total("asset_sync_events_dead_lettered_total")
        parked = service.total("asset_sync_events_parked_total", vendor=DOWN)
        joins = _count(Path(f"{config}.log"), "partitions assigned")
        service.stop()
    worst = min(min(s) for s in shares.values()) * 100
    label = f"12 {DOWN} down {outage_s / 60:.0f} min, {RATE}/s per vendor"
    return [
        Row(
            label,
            "others: worst 10-s window, delivered / produced",
            worst,
            "%",
            None,
            ">= 90%",
            worst >= 90,
        ),
        Row(label, f"{DOWN}: dead-lettered", dead, "events", None, "0", dead == 0),
        Row(
            label,
            f"{DOWN}: delivered after the outage",
            down["ok"],
            "events",
            produced[DOWN],
            f"all {produced[DOWN]:,}; caught up {caught_up:.0f} s after",
            down["ok"] >= produced[DOWN],
        ),
        Row(label, f"{DOWN}: parked", parked, "events", None, "for scale", None),
        Row(
            label,
            f"{DOWN}: per-asset order inversions",
            down["inversions"],
            "",
            None,
            "0",
            down["inversions"] == 0,
        ),
        # Parked events wait in Kafka, not in memory: flat while the vendor is down. Catching
        # up holds up to dispatch.max_buffered of them, the bound of scenario 7.
        Row(
            label,
            "RSS while down: last window (baseline: first)",
            rss[-1],
            "MB",
            rss[0],
            f"flat (max {max(rss):.0f} MB)",
            max(rss) <= rss[0] * 1.1 + 10,
        ),
        Row(
            label,
            "RSS catching up: max",
            max(rss_after, default=0.0),
            "MB",
            None,
            "< 250 MB",
            max(rss_after, default=0.0) < 250,
        ),
        Row(label, "group joins", joins, "", None, "1: never left its group", joins == 1),
    ]


def _count(log: Path, message: str) -> int:
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        count += entry.get("msg") == message and bool(entry.get("partitions"))
    return count
