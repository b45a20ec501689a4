"""Run ``asset-sync run`` as a real process against the real broker and the vendor fakes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from consumer.local.local_kafka import free_port
from tests.fakes import FakeVendors


def service_config(
    bootstrap: str, topic: str, fakes: FakeVendors, **sections: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "group_id": f"{topic}-group",
            "dead_letter_topic": f"{topic}.dlq",
            "session_timeout_ms": 10_000,
        },
        "retry": {"max_attempts": 4, "max_elapsed_s": 30, "base_delay_s": 0.05, "max_delay_s": 0.2},
        "metrics": {"port": free_port()},
        "dispatch": {"commit_interval_s": 0.2, "shutdown_grace_s": 10},
        "connections": fakes.connections(),
        "log_level": "INFO",
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


class ServiceProcess:
    """One ``asset-sync run`` process; its JSON logs go to a file for later reading."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str = "svc") -> None:
        self.config = config
        self.port = config["metrics"]["port"]
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> ServiceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"service not ready in {timeout_s}s:\n{self.logs()}")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def terminate(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_entries(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.logs().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries


def wait_until(
    predicate: Any, timeout_s: float = 60, interval_s: float = 0.2, message: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {message}")
