"""publish, replay and demo against the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from consumer.broker.dead_letter import SourceRecord, dead_letter_headers
from consumer.broker.kafka_clients import create_topic
from consumer.reasons import Reason
from tests.kafka_helpers import consume_all, produce, unique_topic
from tests.samples import EXAMPLES, event_for


def write_config(tmp_path: Path, bootstrap: str, topic: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap_servers": bootstrap,
                    "topic": topic,
                    "group_id": f"{topic}-g",
                    "dead_letter_topic": f"{topic}.dlq",
                }
            }
        )
    )
    return path


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_publish_uses_the_recommended_key_and_structured_mode(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, kafka_bootstrap, topic)
    done = cli("publish", "--config", str(config), str(EXAMPLES))
    assert done.returncode == 0, done.stderr
    records = consume_all(kafka_bootstrap, topic, expected=5)
    events = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    assert [r.key for r in records] == [
        f"{e['vendor']}:{e['data']['asset_id']}".encode() for e in events
    ]
    assert all(dict(r.headers)["content-type"] == b"application/cloudevents+json" for r in records)


def test_publish_refuses_a_file_with_an_invalid_event(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        json.dumps(event_for("webflow"))
        + "\n"
        + json.dumps(event_for("webflow", asset_id="nope"))
        + "\n"
    )
    done = cli(
        "publish", "--config", str(write_config(tmp_path, kafka_bootstrap, topic)), str(events)
    )
    assert done.returncode == 1
    assert ":2: /data/asset_id" in done.stdout
    assert consume_all(kafka_bootstrap, topic, expected=1, timeout_s=3) == []


def dead_letter(
    topic: str, offset: int, reason: Reason, vendor: str | None, key: bytes
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    value = json.dumps({"n": offset}).encode()
    source = SourceRecord(
        topic, 0, offset, 1_700_000_000_000, key, value, (("trace", b"t-%d" % offset),)
    )
    return key, value, dead_letter_headers(source, reason, "boom", vendor=vendor)


def test_replay_filters_republishes_once_and_dry_run_changes_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic("replay"))
    create_topic(kafka_bootstrap, f"{topic}.dlq")
    config = write_config(tmp_path, kafka_bootstrap, topic)
    records = [
        dead_letter(topic, 0, Reason.RETRIES_EXHAUSTED, "webflow", b"webflow:a"),
        dead_letter(topic, 1, Reason.VENDOR_REJECTED, "lexful", b"lexful:b"),
        dead_letter(topic, 2, Reason.RETRIES_EXHAUSTED, "trelica", b"trelica:c"),
        dead_letter(topic, 3, Reason.RETRIES_EXHAUSTED, "webflow", b"webflow:d"),
    ]
    produce(kafka_bootstrap, f"{topic}.dlq", records)
    # --dry-run lists what would go, and neither produces nor commits
    dry = cli("replay", "--config", str(config), "--reason", "retries_exhausted", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would replay") == 4  # 3 records + the summary line
    assert consume_all(kafka_bootstrap, topic, expected=1, timeout_s=2) == []
    # A filtered replay with a limit republishes the first match only
    first = cli(
        "replay",
        "--config",
        str(config),
        "--reason",
        "retries_exhausted",
        "--vendor",
        "webflow",
        "--limit",
        "1",
    )
    assert first.returncode == 0, first.stderr
    assert "replayed 1 record" in first.stdout
    # The same replay again takes the next match, never the first one twice
    second = cli(
        "replay", "--config", str(config), "--reason", "retries_exhausted", "--vendor", "webflow"
    )
    assert "replayed 1 record" in second.stdout
    third = cli(
        "replay", "--config", str(config), "--reason", "retries_exhausted", "--vendor", "webflow"
    )
    assert "replayed 0 record" in third.stdout
    replayed = consume_all(kafka_bootstrap, topic, expected=2)
    assert [(r.key, r.value) for r in replayed] == [(k, v) for k, v, _ in (records[0], records[3])]
    for record in replayed:
        headers = dict(record.headers)
        assert not any(k.startswith("dlq.") for k in headers)
        assert headers["asset-sync.replays"] == b"1"
        assert headers["trace"].startswith(b"t-")


def test_replay_since_and_bad_since(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic("since"))
    create_topic(kafka_bootstrap, f"{topic}.dlq")
    config = write_config(tmp_path, kafka_bootstrap, topic)
    produce(
        kafka_bootstrap,
        f"{topic}.dlq",
        [dead_letter(topic, 0, Reason.VENDOR_REJECTED, "enos", b"k")],
    )
    future = cli("replay", "--config", str(config), "--since", "2999-01-01T00:00:00Z", "--dry-run")
    assert "would replay 0 record" in future.stdout
    recent = cli("replay", "--config", str(config), "--since", "1h", "--dry-run")
    assert "would replay 1 record" in recent.stdout
    bad = cli("replay", "--config", str(config), "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_demo_runs_end_to_end_and_leaves_nothing_running(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    done = cli(
        "demo",
        "--bootstrap",
        kafka_bootstrap,
        "--events",
        "5",
        "--quiet",
        "--workdir",
        str(tmp_path / "demo"),
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "all 29 records handled" in out
    table = {
        line.split()[0]: line.split()[1:]
        for line in out.splitlines()
        if line.split() and line.split()[0] in ("lexful", "webflow", "autodesk", "trelica", "enos")
    }
    assert {vendor: row[0] for vendor, row in table.items()} == dict.fromkeys(
        ("lexful", "webflow", "autodesk", "trelica", "enos"), "5"
    )
    assert table["lexful"][2] == "1"  # the asset the simulator does not know
    for reason in ("invalid_json", "invalid_event", "unknown_vendor", "vendor_rejected"):
        assert reason in out
    assert "metrics: http://127.0.0.1:" in out
    for pattern in (f"{tmp_path}/demo", "tests.fakes --chaos"):
        leftovers = subprocess.run(
            ["pgrep", "-f", pattern], capture_output=True, text=True, check=False
        )
        assert leftovers.stdout == "", f"still running: {pattern}"
