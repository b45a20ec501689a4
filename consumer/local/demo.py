"""``asset-sync demo``: the whole system on one machine, then a summary.

Starts (or reuses) the local Kafka broker, the vendor simulator (the contract-enforcing fakes
of ``tests/fakes``, answering some requests 429/409/500), and the service with a generated
config; publishes sample events for every vendor plus a few invalid ones; shows progress;
prints per-vendor figures, the dead-letter records and where the metrics are. Ctrl-C stops
everything it started. Needs a source checkout (the simulator lives beside the tests).
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from consumer.broker.kafka_clients import create_topic
from consumer.commands.publish import publish_events
from consumer.config import parse_config
from consumer.errors import UsageError
from consumer.local.local_kafka import LocalKafka, free_port, is_running
from consumer.local.samples import invalid_records, sample_events

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Started:
    """What the demo started, so that it stops exactly that."""

    broker: LocalKafka | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.broker is not None:
            self.broker.stop()


def run_demo(
    workdir: Path,
    *,
    bootstrap: str | None,
    per_vendor: int,
    keep_running: bool,
    quiet: bool,
    out: IO[str],
) -> int:
    if not (REPO / "tests" / "fakes" / "__main__.py").is_file():
        raise UsageError("the demo needs a source checkout (tests/fakes is the simulator)")
    workdir.mkdir(parents=True, exist_ok=True)
    started = Started()
    try:
        bootstrap = bootstrap or _broker(workdir, started, out)
        connections = _simulator(workdir, started, quiet, out)
        topic = f"demo-{uuid.uuid4().hex[:6]}"
        create_topic(bootstrap, topic, partitions=3)
        raw = {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic": topic,
                "group_id": f"{topic}-sync",
                "dead_letter_topic": f"{topic}.dlq",
            },
            "retry": {"max_attempts": 5, "base_delay_s": 0.2, "max_delay_s": 2},
            "metrics": {"port": _metrics_port()},
            "connections": connections,
        }
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(raw))
        config = parse_config(raw, environ={})
        metrics_url = f"http://127.0.0.1:{config.metrics.port}"
        print(
            f"service: asset-sync run --config {config_path} (log: {workdir}/service.log)", file=out
        )
        service_log = open(workdir / "service.log", "wb")  # noqa: SIM115 - the child owns it
        started.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "consumer", "run", "--config", str(config_path)],
                stdout=service_log,
                stderr=service_log,
                cwd=REPO,
            )
        )
        _wait_ready(metrics_url, started.processes[-1])
        events = sample_events(per_vendor)
        junk = invalid_records()
        print(
            f"publishing {len(events)} events for 5 vendors and {len(junk)} invalid records "
            f"to {topic}",
            file=out,
        )
        started_at = time.monotonic()
        publish_events(config, events)
        _produce_raw(config, junk)
        total = len(events) + len(junk)
        families = _progress(metrics_url, total, out)
        print(f"\nall {total} records handled in {time.monotonic() - started_at:.1f}s\n", file=out)
        _summary(families, out)
        _dead_letters(bootstrap, f"{topic}.dlq", out)
        print(
            f"\nmetrics: {metrics_url}/metrics   health: {metrics_url}/healthz  "
            f"{metrics_url}/readyz",
            file=out,
        )
        if keep_running:
            print("running; Ctrl-C stops everything the demo started", file=out)
            while started.processes[-1].poll() is None:
                time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", file=out)
        return 0
    finally:
        started.stop()


def _broker(workdir: Path, started: Started, out: IO[str]) -> str:
    shared = Path(".local/kafka")
    if is_running(shared):
        broker = LocalKafka(shared)
        broker._read_ports()
        print(f"kafka: reusing the broker at {broker.bootstrap}", file=out)
        return broker.bootstrap
    print(
        "kafka: starting a local broker (first run fetches it from Maven Central)",
        file=out,
        flush=True,
    )
    broker = LocalKafka(workdir / f"kafka-{uuid.uuid4().hex[:6]}")
    started.broker = broker
    begun = time.monotonic()
    broker.start()
    print(f"kafka: ready at {broker.bootstrap} in {time.monotonic() - begun:.1f}s", file=out)
    return broker.bootstrap


def _simulator(workdir: Path, started: Started, quiet: bool, out: IO[str]) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "--chaos"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    started.processes.append(proc)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    if not first:
        raise UsageError("the vendor simulator did not start")
    log = open(workdir / "vendors.log", "wb")  # noqa: SIM115 - closed by the thread

    def pump(stream: IO[bytes]) -> None:
        with log:
            for line in stream:
                log.write(line)
                if not quiet:
                    out.write("  vendor " + line.decode(errors="replace"))

    threading.Thread(target=pump, args=(proc.stderr,), daemon=True).start()
    print(
        f"vendors: simulator for lexful, webflow, autodesk, trelica, enos "
        f"(live log: {workdir}/vendors.log)",
        file=out,
    )
    connections: dict[str, Any] = json.loads(first)["connections"]
    return connections


def _metrics_port() -> int:
    with contextlib.suppress(OSError):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 8000))
            return 8000
    return free_port()


def _produce_raw(config: Any, records: list[tuple[bytes, bytes]]) -> None:
    from consumer.broker.kafka_clients import make_producer

    producer = make_producer(config.kafka, "asset-sync-demo")
    try:
        for key, value in records:
            producer.send(config.kafka.topic, key=key, value=value)
        producer.flush(30)
    finally:
        producer.close(5)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UsageError("the service exited during start-up; see its log")
        with contextlib.suppress(OSError):
            if _get(f"{url}/readyz")[0] == 200:
                return
        time.sleep(0.3)
    raise UsageError("the service did not become ready")


def _get(url: str) -> tuple[int, str]:
    """GET from the local service (always an http://127.0.0.1 URL the demo made)."""
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        return response.status, response.read().decode()


def _scrape(url: str) -> dict[str, list[Any]]:
    text = _get(f"{url}/metrics")[1]
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _sum(samples: list[Any], name: str, **labels: str) -> float:
    return float(
        sum(
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )
    )


def _progress(url: str, total: int, out: IO[str], timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    families: dict[str, list[Any]] = {}
    while time.monotonic() < deadline:
        families = _scrape(url)
        delivered = _sum(
            families.get("asset_sync_events_delivered", []), "asset_sync_events_delivered_total"
        )
        dead = _sum(
            families.get("asset_sync_events_dead_lettered", []),
            "asset_sync_events_dead_lettered_total",
        )
        retries = _sum(families.get("asset_sync_retries", []), "asset_sync_retries_total")
        print(
            f"progress: {int(delivered + dead)}/{total} done  delivered={int(delivered)}  "
            f"dead-lettered={int(dead)}  retries={int(retries)}",
            file=out,
            flush=True,
        )
        if delivered + dead >= total:
            return families
        time.sleep(1)
    raise UsageError(f"not every record was handled within {timeout_s:.0f}s")


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """histogram_quantile over cumulative ``(upper bound, count)`` buckets, in seconds."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            share = (rank - below) / (count - below) if count > below else 0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


def _summary(families: dict[str, list[Any]], out: IO[str]) -> None:
    delivered = families.get("asset_sync_events_delivered", [])
    dead = families.get("asset_sync_events_dead_lettered", [])
    retries = families.get("asset_sync_retries", [])
    latency = families.get("asset_sync_event_delivery_seconds", [])
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in latency:
        if s.name.endswith("_bucket"):
            buckets[s.labels["vendor"]].append((float(s.labels["le"]), s.value))
    print(
        f"{'vendor':10} {'delivered':>9} {'retried':>8} {'dead':>6} {'p50 ms':>8} {'p99 ms':>8}",
        file=out,
    )
    for vendor in ("lexful", "webflow", "autodesk", "trelica", "enos"):
        p50, p99 = (quantile(buckets[vendor], q) * 1000 for q in (0.5, 0.99))
        ok = _sum(delivered, "asset_sync_events_delivered_total", vendor=vendor)
        retried = _sum(retries, "asset_sync_retries_total", vendor=vendor)
        failed = _sum(dead, "asset_sync_events_dead_lettered_total", vendor=vendor)
        print(
            f"{vendor:10} {int(ok):>9} {int(retried):>8} {int(failed):>6} {p50:>8.0f} {p99:>8.0f}",
            file=out,
        )
    unknown = _sum(dead, "asset_sync_events_dead_lettered_total", vendor="unknown")
    print(f"{'(invalid)':10} {'':>9} {'':>8} {int(unknown):>6}", file=out)


def _dead_letters(bootstrap: str, topic: str, out: IO[str]) -> None:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    print(f"\ndead-letter records in {topic}:", file=out)
    try:
        for record in consumer:
            headers = {k: v.decode(errors="replace") for k, v in record.headers}
            print(
                f"  {headers.get('dlq.reason', '?'):18} vendor={headers.get('dlq.vendor', '-'):9}"
                f" {headers.get('dlq.error', '')[:110]}",
                file=out,
            )
    finally:
        consumer.close()
