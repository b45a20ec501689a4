"""Runtime control (issue 17, point 4) with real processes: two ``asset-sync run`` replicas in
one group on a 4-partition topic, the real broker and vendor fakes, driven by
``asset-sync ctl``. Paused, Trelica gets no request from either replica while Lexful flows;
``ctl status`` shows it paused with its events waiting; resumed, every Trelica event arrives
once, in per-asset order, none dead-lettered, although the pause outlasted the retry budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from kafka import KafkaProducer

from consumer.broker.kafka_clients import create_topic
from tests.fakes import FakeVendors, Reply
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, unique_topic
from tests.samples import marked, received_markers
from tests.service_helpers import ServiceProcess, wait_until

PARTITIONS = 4
ASSETS, UPDATES = 8, 4  # Trelica: two assets a partition, four updates each
PAUSED_S = 4.0  # longer than the retry budget below
RETRY = {"max_attempts": 3, "max_elapsed_s": 2, "base_delay_s": 0.05, "max_delay_s": 0.2}
TRELICA = {"vendor": "trelica", "connection": "default"}


def produce(bootstrap: str, topic: str, events: list[tuple[int, dict[str, Any]]]) -> None:
    """(partition, event) pairs, keyed as recommended, acks=all."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for partition, event in events:
            key = f"{event['vendor']}:{event['data']['asset_id']}".encode()
            producer.send(topic, key=key, value=json.dumps(event).encode(), partition=partition)
        producer.flush(30)
    finally:
        producer.close()


def trelica(asset: int, n: int) -> tuple[int, dict[str, Any]]:
    return asset % PARTITIONS, marked("trelica", f"{asset}-{n}", asset_id=f"asset-{asset}")


def lexful(n: int) -> tuple[int, dict[str, Any]]:
    asset = f"019983a9-c4c0-73af-aec9-46{n:010x}"
    return n % PARTITIONS, marked("lexful", f"l{n}", asset_id=asset)


def ctl(service: ServiceProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "ctl", *args, "--config", str(service.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assignment(service: ServiceProcess, topic: str) -> set[str] | None:
    """The partitions of ``topic`` the replica holds now, from its log (its parking topics'
    go with them); None amid a rebalance."""
    entries = [
        e
        for e in service.log_entries()
        if e.get("msg") in ("partitions assigned", "partitions released")
    ]
    if not entries or entries[-1]["msg"] != "partitions assigned":
        return None
    return {p for p in entries[-1]["partitions"] if p.rsplit(":", 1)[0] == topic}


def markers(vendors: FakeVendors, vendor: str) -> list[str]:
    fake = vendors.fakes[vendor]
    return [m for r in fake.succeeded() for m in received_markers(r.body, vendor)]


def status(service: ServiceProcess) -> tuple[str, dict[str, list[str]]]:
    """``ctl status``: its output, and each connection's row split into words."""
    done = ctl(service, "status")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:]}
    return done.stdout, rows


def test_pause_and_resume_a_connection_on_every_replica(
    kafka_bootstrap: str, vendors: FakeVendors, start_service: StartService
) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic("ctl"), partitions=PARTITIONS)
    replicas = [
        start_service(name=f"r{n}", topic=topic, wait_ready=False, retry=RETRY) for n in range(2)
    ]
    for replica in replicas:
        replica.wait_ready()
    wait_until(
        lambda: (
            (held := [assignment(r, topic) for r in replicas])[0] is not None
            and held[1] is not None
            and not held[0] & held[1]
            and len(held[0] | held[1]) == PARTITIONS
        ),
        timeout_s=30,
        message="both replicas holding partitions",
    )

    # A connection that is not configured: named, exit 2, nothing written
    done = ctl(replicas[0], "pause", "trelica/nope")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "asset-sync ctl: unknown connection 'trelica/nope': give VENDOR/CONNECTION as "
        "configured (configured: autodesk/default, enos/default, lexful/default, "
        "trelica/default, webflow/default)"
    ]

    # Given Trelica paused
    done = ctl(replicas[0], "pause", "trelica/default")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("paused trelica/default (by "), done.stdout
    wait_until(
        lambda: all(r.metric("asset_sync_connection_paused", **TRELICA) == 1 for r in replicas),
        timeout_s=10,
        message="every replica paused",
    )
    # When Trelica and Lexful updates come, on every partition
    produce(
        kafka_bootstrap,
        topic,
        [trelica(a, n) for n in range(UPDATES) for a in range(ASSETS)]
        + [lexful(n) for n in range(20)],
    )
    wait_until(lambda: len(markers(vendors, "lexful")) == 20, timeout_s=30, message="lexful")
    # Then nothing goes to Trelica from either replica, while Lexful keeps flowing
    began = time.monotonic()
    produce(kafka_bootstrap, topic, [lexful(n) for n in range(20, 40)])
    wait_until(lambda: len(markers(vendors, "lexful")) == 40, timeout_s=30, message="lexful")
    for replica in replicas:  # each holds Trelica events, and sends none of them
        waiting = replica.metric("asset_sync_connection_waiting_events", **TRELICA)
        assert waiting == ASSETS * UPDATES / 2, replica.logs()[-2000:]
    time.sleep(max(0.0, PAUSED_S - (time.monotonic() - began)))
    assert vendors.trelica.received == [], "a request went to a paused connection"

    # And ctl status shows it paused, its events waiting, both replicas reporting
    def paused_with_all_waiting() -> bool:
        text, rows = status(replicas[1])
        waiting = ["paused", "0", str(ASSETS * UPDATES)]
        return "2 replicas reported" in text and rows["trelica/default"][1:4] == waiting

    wait_until(paused_with_all_waiting, timeout_s=15, interval_s=1, message="ctl status")
    text, rows = status(replicas[1])
    assert float(rows["trelica/default"][4]) >= PAUSED_S - 1, text
    assert rows["trelica/default"][5:7] == ["paused", "by"], text
    assert rows["lexful/default"][1:4] == ["running", "0", "0"], text

    # When resumed (and the vendor fails the first call: retried, the budget is not spent)
    vendors.trelica.fail_next(Reply(503))
    done = ctl(replicas[1], "resume", "trelica/default")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("resumed trelica/default (by "), done.stdout
    wait_until(
        lambda: len(markers(vendors, "trelica")) == ASSETS * UPDATES,
        timeout_s=30,
        message="every trelica event delivered",
    )
    # Then every event arrived exactly once, each asset's in order, none dead-lettered
    got = markers(vendors, "trelica")
    assert Counter(got) == Counter(f"{a}-{n}" for a in range(ASSETS) for n in range(UPDATES))
    for asset in range(ASSETS):
        assert [m for m in got if m.startswith(f"{asset}-")] == [
            f"{asset}-{n}" for n in range(UPDATES)
        ]
    assert consume_all(kafka_bootstrap, f"{topic}.dlq", expected=1, timeout_s=2) == []
    for replica in replicas:
        assert replica.metric("asset_sync_events_delivered_total", vendor="trelica") > 0
        assert replica.metric("asset_sync_connection_paused", **TRELICA) == 0
    # The control topic holds the two commands and the replicas' reports, nothing else
    keys = {r.key for r in consume_all(kafka_bootstrap, f"{topic}.control", 10**6, timeout_s=3)}
    assert b"pause/trelica/default" in keys and b"pause/trelica/nope" not in keys
    assert {k for k in keys if not k.startswith(b"status/")} == {b"pause/trelica/default"}
    assert vendors.violations() == []
