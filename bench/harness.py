"""What every scenario needs: the real broker, the vendor simulator in its own process, a
pre-loaded topic, and the service (or the baseline) as a process to time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from consumer.broker.kafka_clients import create_topic
from consumer.local.local_kafka import LocalKafka, free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Simulator:
    """``python -m tests.fakes`` with the scenario's latency, rate limit and outages, or
    another simulator ``command`` that speaks the same (bench/simulator: Webflow only)."""

    args: list[str]
    command: list[str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    connections: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> Simulator:
        command = self.command or [sys.executable, "-m", "tests.fakes", "--quiet"]
        self.proc = subprocess.Popen(
            [*command, *self.args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.connections = json.loads(self.proc.stdout.readline())["connections"]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)

    def cpu_s(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def stats(self, vendor: str) -> dict[str, Any]:
        url = self.connections[vendor]["default"]["base_url"] + "/_stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            stats: dict[str, Any] = json.loads(response.read())
        return stats


def set_top_level(config: Path, **values: object) -> None:
    """Set top-level keys of a written configuration (``log_level``)."""
    tree = yaml.safe_load(config.read_text())
    tree.update(values)
    config.write_text(yaml.safe_dump(tree))


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def go_binary(name: str) -> Path:
    """A Go binary of the bench (Makefile ``bench-tools``), built once into .local/bin."""
    subprocess.run(["make", "-s", f".local/bin/{name}"], cwd=ROOT, check=True)
    return ROOT / ".local" / "bin" / name


class Bench:
    """One broker for the whole run; a fresh topic per measurement."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="asset-sync-bench-"))
        # A new group waits 10 s for its members (Kafka's default 3 s, the tests' broker 0):
        # processes started together join one generation instead of the first taking every
        # partition and handing half back mid-drain. With 3 s, 2 of 6 two-process drains
        # rebalanced (one start-up was slower than the window); with 10 s, none of 6.
        self.broker = LocalKafka(
            self.workdir / "kafka",
            heap="1g",
            extra_properties={"group.initial.rebalance.delay.ms": "10000"},
        )

    def __enter__(self) -> Bench:
        self.broker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.broker.stop()

    def topic(self, partitions: int = 6) -> str:
        return create_topic(self.broker.bootstrap, f"bench-{uuid.uuid4().hex[:8]}", partitions)

    def preload(self, topic: str, records: list[tuple[bytes, bytes]]) -> float:
        """Produce the records (acks=all); returns seconds taken."""
        producer = KafkaProducer(
            bootstrap_servers=self.broker.bootstrap,
            acks="all",
            linger_ms=20,
            batch_size=512 * 1024,
        )
        started = time.monotonic()
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(600)
        producer.close()
        return time.monotonic() - started

    def config(self, topic: str, connections: dict[str, Any], **sections: Any) -> Path:
        config: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": self.broker.bootstrap,
                "topic": topic,
                "group_id": f"{topic}-g",
                "dead_letter_topic": f"{topic}.dlq",
                "max_poll_records": 2000,
            },
            "retry": {
                "max_attempts": 50,
                "max_elapsed_s": 600,
                "base_delay_s": 0.2,
                "max_delay_s": 5,
            },
            "metrics": {"port": free_port()},
            "dispatch": {"dedup_window_s": 0},
            "connections": connections,
            "log_level": "WARNING",
        }
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        path = self.workdir / f"{topic}-{config['metrics']['port']}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path


class Service:
    """An ``asset-sync run`` process and its metrics."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.port = yaml.safe_load(config.read_text())["metrics"]["port"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(f"{config}.log", "wb"),  # noqa: SIM115
            env={**os.environ},
        )
        self.profiler: subprocess.Popen[bytes] | None = None
        if profile := os.environ.get("BENCH_PROFILE"):  # py-spy collapsed stacks per process
            out = f"{profile}/{config.stem}.folded"
            spy = ["py-spy", "record", "--rate", "100", "--nonblocking", "--format", "raw"]
            self.profiler = subprocess.Popen(
                [*spy, "--pid", str(self.proc.pid), "--output", out], stdout=subprocess.DEVNULL
            )

    def samples(self) -> list[Any]:
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return []
        return [s for f in text_string_to_metric_families(text) for s in f.samples]

    def total(self, name: str, **labels: str) -> float:
        wanted = [
            s.value
            for s in self.samples()
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return float(sum(wanted))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the service was not ready in {timeout_s}s")

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            self.profiler.wait(60)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_delivered(
    services: list[Service], expected: int, labels: dict[str, str], timeout_s: float = 900
) -> tuple[float, float]:
    """Poll until ``expected`` deliveries; returns (first delivery, last) monotonic times."""
    first = 0.0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sum(s.total("asset_sync_events_delivered_total", **labels) for s in services)
        now = time.monotonic()
        if done and not first:
            first = now
        if done >= expected:
            return first, now
        time.sleep(0.1)
    raise TimeoutError(f"only {done} of {expected} delivered in {timeout_s}s")


def run_baseline(config: Path, max_events: int, max_seconds: float) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.baseline", str(config), str(max_events), str(max_seconds)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=max_seconds + 120,
    )
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result
