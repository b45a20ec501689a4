"""``asset-sync ingest``: signed webhooks in, events on the topic, against the real broker."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from consumer.broker.kafka_clients import create_topic
from consumer.local.local_kafka import LocalKafka, free_port
from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, unique_topic
from tests.samples import event_for
from tests.service_helpers import wait_until

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class IngestProcess:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        workdir: Path,
        name: str = "ingest",
        secrets: list[str] | None = None,
        **ingest: Any,
    ) -> None:
        # current and previous: rotation; replicas share them
        self.secrets = secrets or [new_secret(), new_secret()]
        self.port, self.metrics_port = free_port(), free_port()
        config = {
            "kafka": {"bootstrap_servers": bootstrap, "topic": topic},
            "metrics": {"port": self.metrics_port},
            "ingest": {
                "port": self.port,
                "secrets": "${WEBHOOK_SECRETS}",
                "max_body_bytes": 64 * 1024,
                "max_batch": 5,
                **ingest,
            },
        }
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = workdir / f"{name}.log"
        with open(self.log, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consumer", "ingest", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "WEBHOOK_SECRETS": ",".join(self.secrets)},
            )
        wait_until(self._ready, timeout_s=30, message="ingest ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1)
            return True
        except OSError:  # HTTPError (503: not ready yet) included
            return False

    def post(
        self,
        body: bytes,
        content_type: str = SINGLE,
        secret: str | None = None,
        webhook_id: str | None = None,
        when: datetime | None = None,
        signature: str | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
        when = when or datetime.now(UTC)
        sign = Webhook(secret or self.secrets[0]).sign(webhook_id, when, body.decode())
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/events",
            data=body,
            method="POST",
            headers={
                "Content-Type": content_type,
                "webhook-id": webhook_id,
                "webhook-timestamp": str(int(when.timestamp())),
                "webhook-signature": signature if signature is not None else sign,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}"), dict(error.headers)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture
def ingest(kafka_bootstrap: str, source_topic: str, tmp_path: Path) -> Iterator[IngestProcess]:
    process = IngestProcess(kafka_bootstrap, source_topic, tmp_path)
    yield process
    process.stop()


def test_signed_webhook_is_published_and_delivered(
    ingest: IngestProcess,
    kafka_bootstrap: str,
    source_topic: str,
    vendors: FakeVendors,
    start_service: StartService,
) -> None:
    event = event_for("trelica", changes={"notes": "from a webhook"})
    status, body, _ = ingest.post(json.dumps(event).encode())
    assert (status, body) == (202, {"ids": [event["id"]]})
    [record] = consume_all(kafka_bootstrap, source_topic, expected=1)
    assert record.key == f"trelica:{event['data']['asset_id']}".encode()
    start_service()
    wait_until(
        lambda: any(r.body.get("notes") == "from a webhook" for r in vendors.trelica.succeeded()),
        message="delivered",
    )


def test_batch_and_rotated_secret(
    ingest: IngestProcess, kafka_bootstrap: str, source_topic: str
) -> None:
    events = [event_for(v) for v in ("lexful", "webflow", "enos")]
    status, body, _ = ingest.post(json.dumps(events).encode(), BATCH, secret=ingest.secrets[1])
    assert status == 202 and body["ids"] == [e["id"] for e in events]
    assert len(consume_all(kafka_bootstrap, source_topic, expected=3)) == 3


def test_rejections_publish_nothing(
    ingest: IngestProcess, kafka_bootstrap: str, source_topic: str
) -> None:
    good = json.dumps(event_for("webflow")).encode()
    bad_event = event_for("webflow", asset_id="nope")
    cases = {
        "no signature": ingest.post(good, signature="")[0],
        "wrong signature": ingest.post(good, signature="v1,AAAA")[0],
        "wrong secret": ingest.post(good, secret=new_secret())[0],
        "too old": ingest.post(good, when=datetime.now(UTC) - timedelta(minutes=6))[0],
        "from the future": ingest.post(good, when=datetime.now(UTC) + timedelta(minutes=6))[0],
        "content type": ingest.post(good, content_type="application/json")[0],
        "too large": ingest.post(json.dumps({"x": "y" * 70_000}).encode())[0],
        "batch too large": ingest.post(json.dumps([event_for("webflow")] * 6).encode(), BATCH)[0],
    }
    assert cases == {
        "no signature": 401,
        "wrong signature": 401,
        "wrong secret": 401,
        "too old": 401,
        "from the future": 401,
        "content type": 415,
        "too large": 413,
        "batch too large": 413,
    }
    status, body, _ = ingest.post(json.dumps([event_for("lexful"), bad_event]).encode(), BATCH)
    assert status == 400
    assert {k: body["errors"][0][k] for k in ("index", "pointer")} == {
        "index": 1,
        "pointer": "/data/asset_id",
    }
    assert consume_all(kafka_bootstrap, source_topic, expected=1, timeout_s=3) == []


@pytest.mark.parametrize(
    ("tolerance_s", "expected"),
    [(5, {120: 401, -120: 401, 2: 202}), (900, {600: 202, -600: 202, 1000: 401})],
    ids=["5s", "900s"],
)
def test_tolerance_setting_bounds_the_timestamp(
    kafka_bootstrap: str,
    source_topic: str,
    tmp_path: Path,
    tolerance_s: float,
    expected: dict[int, int],
) -> None:
    """``ingest.tolerance_s`` decides how old (or early) a signature may be, not the
    library's fixed 5 minutes; expected maps the signature's age in seconds to the status."""
    process = IngestProcess(kafka_bootstrap, source_topic, tmp_path, tolerance_s=tolerance_s)
    try:
        body = json.dumps(event_for("webflow")).encode()
        answers = {
            age: process.post(body, when=datetime.now(UTC) - timedelta(seconds=age))[0]
            for age in expected
        }
        assert answers == expected
        recent = datetime.now(UTC)
        assert process.post(body, when=recent, secret=new_secret())[0] == 401
        assert process.post(body, when=recent, signature="v1,AAAA v2,BBBB")[0] == 401
    finally:
        process.stop()


def test_replayed_webhook_is_published_once(
    ingest: IngestProcess, kafka_bootstrap: str, source_topic: str
) -> None:
    body = json.dumps(event_for("enos")).encode()
    first = ingest.post(body, webhook_id="msg_replayed")
    again = ingest.post(body, webhook_id="msg_replayed")
    assert (first[0], again[0]) == (202, 200)
    assert again[1]["duplicate"] is True
    assert len(consume_all(kafka_bootstrap, source_topic, expected=2, timeout_s=5)) == 1


def test_load_of_1000_signed_requests_loses_nothing(
    ingest: IngestProcess, kafka_bootstrap: str, source_topic: str
) -> None:
    bodies = [json.dumps(event_for("webflow")).encode() for _ in range(1000)]

    async def send_all() -> list[int]:
        limit = asyncio.Semaphore(25)
        async with aiohttp.ClientSession() as session:

            async def one(body: bytes) -> int:
                webhook_id = f"msg_{uuid.uuid4().hex}"
                now = datetime.now(UTC)
                headers = {
                    "Content-Type": SINGLE,
                    "webhook-id": webhook_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": Webhook(ingest.secrets[0]).sign(
                        webhook_id, now, body.decode()
                    ),
                }
                async with (
                    limit,
                    session.post(
                        f"http://127.0.0.1:{ingest.port}/v1/events", data=body, headers=headers
                    ) as response,
                ):
                    return response.status

            return list(await asyncio.gather(*(one(b) for b in bodies)))

    started = time.monotonic()
    statuses = asyncio.run(send_all())
    took = time.monotonic() - started
    assert statuses == [202] * 1000
    records = consume_all(kafka_bootstrap, source_topic, expected=1000, timeout_s=60)
    assert sorted(r.value for r in records) == sorted(bodies)
    print(
        f"\ningest load: 1000 signed requests in {took:.1f}s ({1000 / took:.0f}/s), "
        f"1000 records on the topic"
    )


def test_broker_down_answers_503_never_202_and_stops_cleanly(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka")  # its own: this test stops it
    broker.start()
    topic = create_topic(broker.bootstrap, unique_topic("down"))
    process = IngestProcess(broker.bootstrap, topic, tmp_path, publish_timeout_s=3)
    try:
        assert process.post(json.dumps(event_for("webflow")).encode())[0] == 202
        broker.stop()
        status, _, headers = process.post(json.dumps(event_for("webflow")).encode())
        assert status == 503
        assert headers.get("Retry-After") == "5"
        # SIGTERM while the 503's record is still in the producer's buffer
        process.proc.terminate()
        assert process.proc.wait(30) == 0
    finally:
        process.stop()
        broker.stop()
    output = process.log.read_text()
    assert "Traceback" not in output, output
    [warning] = [
        line
        for line in map(json.loads, output.splitlines())
        if line["level"] == "warning" and "unpublished" in line["msg"]
    ]
    assert warning["records"] == 1 and "503" in warning["msg"], warning


def test_replicas_publish_a_webhook_id_once(
    kafka_bootstrap: str, source_topic: str, tmp_path: Path
) -> None:
    """Two ``asset-sync ingest`` processes share the ids they published through the ids
    topic, and a replica that starts again reads back the ids within the tolerance."""
    first = IngestProcess(kafka_bootstrap, source_topic, tmp_path, name="replica-1")
    replicas = [first]
    body = json.dumps(event_for("lexful")).encode()
    try:
        replicas.append(
            IngestProcess(kafka_bootstrap, source_topic, tmp_path, "replica-2", first.secrets)
        )
        assert first.post(body, webhook_id="msg_shared")[0] == 202
        # a sender's retry comes later than the documented window (the follow latency)
        time.sleep(1)
        status, answer, _ = replicas[1].post(body, webhook_id="msg_shared")  # signed again
        assert (status, answer) == (200, {"duplicate": True, "webhook_id": "msg_shared"})
        for replica in replicas:
            replica.stop()
        restarted = IngestProcess(
            kafka_bootstrap, source_topic, tmp_path, "replica-2-again", first.secrets
        )
        replicas.append(restarted)
        assert restarted.post(body, webhook_id="msg_shared")[0] == 200
        assert restarted.post(body, webhook_id="msg_other")[0] == 202
    finally:
        for replica in replicas:
            replica.stop()
    assert len(consume_all(kafka_bootstrap, source_topic, expected=3, timeout_s=5)) == 2
