"""Runtime control without a broker: the pause in the breaker's state machine and its waiting,
the control records read the same way by every replica and by ``ctl status``, the command's
argument checks, and the config section."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.config import BreakerConfig, load_config, parse_config
from consumer.delivery.breaker import Admission, Breaker, CircuitBreaker, State
from consumer.errors import ConfigError, UsageError
from consumer.state.control import (
    STATUS_FRESH_S,
    ControlView,
    Pause,
    connection_arg,
    summarize,
    topic_name,
)

CONFIG = BreakerConfig(failure_threshold=1, open_s=1.0, max_open_s=4.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the gate ---------------------------------------------------------------------------------
def test_a_paused_breaker_admits_nothing_and_its_budget_clock_stands_still() -> None:
    clock = Clock()
    breaker = Breaker(CONFIG, clock)
    clock.now += 2
    assert breaker.closed_seconds() == 2
    breaker.pause(True)
    assert breaker.admit() is Admission.WAIT
    clock.now += 50  # paused: no budget spent
    assert breaker.closed_seconds() == 2
    breaker.pause(False)
    clock.now += 1
    assert breaker.closed_seconds() == 3
    assert breaker.admit() is Admission.GO


def test_a_pause_holds_the_probe_of_an_open_breaker_and_changes_no_state() -> None:
    clock, changes = Clock(), list[State]()
    breaker = Breaker(CONFIG, clock, changes.append)
    breaker.failed(probe=False)  # threshold 1: open
    breaker.pause(True)
    clock.now += 1  # the open wait is over, but paused: no probe
    assert breaker.state is State.HALF_OPEN
    assert breaker.admit() is Admission.WAIT
    clock.now += 30
    assert breaker.closed_seconds() == 0
    breaker.pause(False)
    assert breaker.admit() is Admission.PROBE
    assert changes == [State.OPEN, State.HALF_OPEN]  # the pause is no breaker state


def test_resume_lets_the_waiters_go_in_arrival_order_and_counts_attempts() -> None:
    async def run() -> None:
        breaker = CircuitBreaker(CONFIG)
        assert await breaker.acquire() is False
        assert breaker.attempts == 1
        breaker.pause(True)
        order: list[int] = []

        async def attempt(n: int) -> None:
            await breaker.acquire()
            order.append(n)

        waiters = [asyncio.create_task(attempt(n)) for n in range(5)]
        await asyncio.sleep(0.05)
        assert order == [] and breaker.attempts == 1  # the one let go before still runs
        assert breaker.release(False, None) is True
        assert breaker.attempts == 0
        breaker.pause(False)
        await asyncio.gather(*waiters)
        assert order == [0, 1, 2, 3, 4] and breaker.attempts == 5

    asyncio.run(run())


# --- records and the status summary -----------------------------------------------------------
def config(**control: Any) -> Any:
    raw: dict[str, Any] = {
        "kafka": {"topic": "changes"},
        "connections": {
            "webflow": {"default": {"base_url": "https://w.example", "token": "t"}},
            "trelica": {
                "default": {"base_url": "https://t.example", "client_id": "c", "client_secret": "s"}
            },
        },
    }
    if control:
        raw["control"] = control
    return parse_config(raw, {})


def figures(
    breaker: str = "closed", paused: bool = False, in_flight: int = 0, waiting: int = 0
) -> dict[str, Any]:
    return {
        "breaker": breaker,
        "paused": paused,
        "in_flight": in_flight,
        "waiting": waiting,
        "oldest_s": float(waiting),
    }


def report(at: float, **connections: dict[str, Any]) -> bytes:
    named = {name.replace("__", "/"): f for name, f in connections.items()}
    return json.dumps({"at": at, "connections": named}).encode()


def test_status_sums_fresh_reports_and_tells_paused_from_pausing() -> None:
    view = ControlView("changes.control")
    now = 1000.0
    view.apply(0, 0, b"pause/trelica/default", Pause(True, "ops@h", "t1").to_json())
    view.apply(0, 1, b"status/a", report(now - 1, trelica__default=figures(paused=True, waiting=3)))
    view.apply(0, 2, b"status/b", report(now - 2, trelica__default=figures(waiting=4)))
    view.apply(0, 3, b"status/gone", report(now - STATUS_FRESH_S - 1, trelica__default=figures()))
    view.apply(
        0,
        4,
        b"status/c",
        report(now, webflow__default=figures(breaker="open", in_flight=1, waiting=9)),
    )
    rows, replicas = summarize(config(), view, now)
    assert replicas == 3  # "gone" reported too long ago
    by_name = {r.connection: r for r in rows}
    trelica = by_name["trelica/default"]
    assert (trelica.state, trelica.waiting, trelica.oldest_s) == ("pausing", 7, 4.0)
    assert trelica.note == "paused by ops@h at t1"
    webflow = by_name["webflow/default"]
    assert (webflow.state, webflow.in_flight, webflow.waiting) == ("circuit open", 1, 9)
    # b obeys, then stops cleanly (a tombstone): every replica left reports the pause
    view.apply(0, 5, b"status/b", report(now, trelica__default=figures(paused=True)))
    view.apply(0, 6, b"status/c", None)
    rows, replicas = summarize(config(), view, now)
    assert replicas == 2 and rows[0].connection == "trelica/default"
    assert rows[0].state == "paused"
    view.apply(0, 7, b"pause/trelica/default", None)  # a tombstone is a resume
    assert summarize(config(), view, now)[0][0].state == "resuming"


def test_a_pause_no_replica_reported_yet_is_pausing() -> None:
    view = ControlView("changes.control")
    view.apply(0, 0, b"pause/trelica/default", Pause(True, "ops@h", "t1").to_json())
    rows, replicas = summarize(config(), view, 1000.0)
    assert replicas == 0
    assert {r.connection: r.state for r in rows}["trelica/default"] == "pausing"


def test_unreadable_records_are_ignored() -> None:
    view = ControlView("changes.control")
    view.apply(0, 0, b"pause/trelica/default", b"{not json")
    view.apply(0, 1, b"pause/trelica/default", b'{"paused": "yes"}')
    view.apply(0, 2, b"status/x", b'{"at": 1}')
    view.apply(0, 3, None, b"{}")
    assert view.pauses == {} and view.reports == {}


# --- the command ------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["webflow/nope", "acme/default", "webflow", "/default", ""])
def test_an_unknown_connection_is_named(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        connection_arg(config(), text)
    assert repr(text) in str(caught.value)
    assert "trelica/default, webflow/default" in str(caught.value)
    assert connection_arg(config(), "webflow/default") == ("webflow", "default")


def test_ctl_with_an_unknown_connection_exits_2_before_any_broker_call(tmp_path: Path) -> None:
    """The broker is unreachable: a command that got as far as a write would exit 1."""
    path = tmp_path / "config.yaml"
    raw = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "topic": "changes"},
        "connections": {"webflow": {"default": {"base_url": "https://w.example", "token": "t"}}},
    }
    path.write_text(yaml.safe_dump(raw))
    for action in ("pause", "resume"):
        done = subprocess.run(
            [sys.executable, "-m", "consumer", "ctl", action, "--config", str(path), "webflow/x"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert done.stderr.strip().splitlines() == [
            "asset-sync ctl: unknown connection 'webflow/x': give VENDOR/CONNECTION as "
            "configured (configured: webflow/default)"
        ]


def test_ctl_needs_no_vendor_credential(tmp_path: Path) -> None:
    """Whoever may pause need not hold the vendors' secrets: unset ${NAME}s and unreadable
    secret files under ``connections`` do not stop ``ctl`` (it goes on to the broker, which
    is unreachable here: exit 1 naming it), while they do stop ``run``'s configuration."""
    path = tmp_path / "config.yaml"
    raw = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "topic": "changes"},
        "connections": {
            "webflow": {"default": {"base_url": "https://w.example", "token": "${WF_TOKEN}"}},
            "trelica": {
                "default": {
                    "base_url": "https://t.example",
                    "client_id": "id",
                    "client_secret_file": str(tmp_path / "missing"),
                }
            },
        },
    }
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="WF_TOKEN"):
        load_config(path, {})
    loaded = load_config(path, {}, credentials=False)
    assert loaded.connection("trelica", "default") is not None
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "ctl", "pause", "--config", str(path), "webflow/x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "WF_TOKEN"},
    )
    assert done.returncode == 2, done.stderr  # got past the configuration to the argument
    assert "unknown connection 'webflow/x'" in done.stderr


def test_the_control_topic_is_named_after_the_source_unless_set() -> None:
    assert topic_name(config()) == "changes.control"
    assert topic_name(config(topic="ops.control")) == "ops.control"
    with pytest.raises(ConfigError, match=r"control\.topic"):
        config(topic="changes")
    with pytest.raises(ConfigError, match=r"control\.nope"):
        config(nope=1)
