"""``asset-sync replay`` against the real broker: repeated runs, id filters, failed sends."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from consumer.broker.dead_letter import SourceRecord, dead_letter_headers
from consumer.broker.kafka_clients import create_topic
from consumer.cli import main
from consumer.reasons import Reason
from tests.integration.test_tools import cli, write_config
from tests.kafka_helpers import consume_all, produce, unique_topic
from tests.samples import event_for

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def dead_lettered(
    topic: str, key: bytes, value: bytes, headers: tuple[tuple[str, bytes], ...] = ()
) -> Record:
    source = SourceRecord(topic, 0, 0, 1_700_000_000_000, key, value, headers)
    return key, value, dead_letter_headers(source, Reason.VENDOR_REJECTED, "no", vendor="webflow")


def structured(topic: str, event: dict[str, object]) -> Record:
    return dead_lettered(topic, b"k", json.dumps(event).encode())


def binary(topic: str, event_id: str, value: bytes) -> Record:
    headers = (
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_type", b"com.example.asset.changed"),
        ("ce_source", b"/test"),
        ("ce_vendor", b"webflow"),
        ("content-type", b"application/json"),
    )
    return dead_lettered(topic, b"k", value, headers)


def offsets(stdout: str) -> set[int]:
    """The dead-letter offsets a run listed (``replay topic:partition:offset ...``)."""
    return {int(m) for m in re.findall(r"^(?:would )?replay \S+:\d+:(\d+) ", stdout, re.M)}


def test_the_same_since_command_twice_replays_each_record_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic("again"))
    dlq = create_topic(kafka_bootstrap, f"{topic}.dlq")
    config = str(write_config(tmp_path, kafka_bootstrap, topic))
    first_two = [dead_lettered(topic, b"k%d" % n, b'{"n": %d}' % n) for n in range(2)]
    produce(kafka_bootstrap, dlq, first_two)

    dry = cli("replay", "--config", config, "--since", "2h", "--dry-run")
    assert "would replay 2 record(s)" in dry.stdout, dry.stderr
    first = cli("replay", "--config", config, "--since", "2h")
    assert "replayed 2 record(s)" in first.stdout, first.stderr  # the dry run committed nothing
    second = cli("replay", "--config", config, "--since", "2h")
    assert "replayed 0 record(s)" in second.stdout, second.stderr

    produce(kafka_bootstrap, dlq, [dead_lettered(topic, b"k2", b'{"n": 2}')])
    third = cli("replay", "--config", config, "--since", "2h")
    assert "replayed 1 record(s)" in third.stdout, third.stderr
    assert offsets(third.stdout) == {2}
    republished = consume_all(kafka_bootstrap, topic, expected=4, timeout_s=5)
    assert [r.key for r in republished] == [b"k0", b"k1", b"k2"]

    # another filter set is another group: it starts from the beginning
    other = cli("replay", "--config", config, "--since", "3h", "--dry-run")
    assert offsets(other.stdout) == {0, 1, 2}
    # --limit commits up to the last record it replayed; the same filters go on from there
    limited = cli("replay", "--config", config, "--since", "3h", "--limit", "1")
    assert offsets(limited.stdout) == {0}
    rest = cli("replay", "--config", config, "--since", "3h")
    assert offsets(rest.stdout) == {1, 2}


def test_asset_and_event_id_select_exactly_the_matching_records(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic("ids"))
    dlq = create_topic(kafka_bootstrap, f"{topic}.dlq")
    config = str(write_config(tmp_path, kafka_bootstrap, topic))
    one, two = "a" * 24, "b" * 24
    s0 = event_for("webflow", asset_id=one)
    s1 = event_for("webflow", asset_id=two)
    s2 = event_for("webflow")
    data = json.dumps({**s2.pop("data"), "asset_id": one}).encode()
    s2["data_base64"] = base64.b64encode(data).decode()
    e3, e4 = "ev-3", f"{s0['id']}0"  # e4: s0's id with one more character
    records = [
        structured(topic, s0),  # 0
        structured(topic, s1),  # 1
        structured(topic, s2),  # 2: data_base64
        binary(topic, e3, json.dumps({"asset_id": one}).encode()),  # 3
        binary(topic, e4, json.dumps({"asset_id": two}).encode()),  # 4
        dead_lettered(topic, b"k", b"\xff not json"),  # 5: structured, unreadable
        binary(topic, "ev-6", b"not json"),  # 6: binary, unreadable value
        structured(topic, {"id": 7, "data": {"asset_id": 1}}),  # 7: ids of the wrong type
    ]
    produce(kafka_bootstrap, dlq, records)

    def listed(*filters: str) -> set[int]:
        done = cli("replay", "--config", config, "--dry-run", *filters)
        assert done.returncode == 0, done.stderr
        return offsets(done.stdout)

    assert listed("--asset", one) == {0, 2, 3}
    assert listed("--asset", two) == {1, 4}
    assert listed("--event-id", str(s0["id"])) == {0}  # exact: not e4, which starts with it
    assert listed("--event-id", e4) == {4}
    assert listed("--event-id", e3, "--asset", one) == {3}
    assert listed("--event-id", "ev-6") == {6}  # the header says it, the value need not
    assert listed("--event-id", str(s0["id"])[:-1]) == set()
    assert listed("--asset", "1") == set()

    done = cli("replay", "--config", config, "--asset", two)
    assert "replayed 2 record(s)" in done.stdout, done.stderr
    republished = consume_all(kafka_bootstrap, topic, expected=3, timeout_s=5)
    assert [r.value for r in republished] == [records[1][1], records[4][1]]
    assert dict(republished[1].headers)["ce_id"] == e4.encode()


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--asset", ""], "--asset"),
        (["--event-id", " ev-1"], "--event-id"),
        (["--limit", "0"], "--limit"),
        (["--limit", "ten"], "--limit"),
        (["--since", "99999999d"], "--since"),
        (["--since", "yesterday"], "--since"),
        (["--reason", "retries-exhausted"], "--reason"),
        (["--vendor", "Webflow"], "--vendor"),
    ],
)
def test_bad_filter_values_are_one_line_usage_errors(
    flags: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "never-read.yaml"
    assert main(["replay", "--config", str(config), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"asset-sync replay: {flag} ") and err.count("\n") == 1, err


def test_a_record_the_broker_refuses_is_not_committed(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = unique_topic("refuse")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "50000"})])
        admin.wait_for_topics([topic], timeout_ms=10_000)
    finally:
        admin.close()
    dlq = create_topic(kafka_bootstrap, f"{topic}.dlq")
    config = str(write_config(tmp_path, kafka_bootstrap, topic))
    big = b'{"pad": "%s"}' % (b"x" * 100_000)
    produce(
        kafka_bootstrap,
        dlq,
        [dead_lettered(topic, b"a", b"{}"), dead_lettered(topic, b"big", big)],
    )
    refused = cli("replay", "--config", config)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and f"{dlq}:0:1" in refused.stderr, refused.stderr

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": "500000"}
        )
        admin.alter_configs([resource])
    finally:
        admin.close()
    retried = cli("replay", "--config", config)
    assert retried.returncode == 0, retried.stderr
    assert offsets(retried.stdout) == {1}  # the refused record, and only it, goes again
    republished = consume_all(kafka_bootstrap, topic, expected=3, timeout_s=5)
    assert [r.key for r in republished] == [b"a", b"big"]
