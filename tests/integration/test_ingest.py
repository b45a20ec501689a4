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

from consumer.kafka_clients import create_topic
from consumer.local_kafka import LocalKafka, free_port
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
    def __init__(self, bootstrap: str, topic: str, workdir: Path, **ingest: Any) -> None:
        self.secrets = [new_secret(), new_secret()]  # current and previous: rotation
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
        path = workdir / "ingest.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = workdir / "ingest.log"
        with open(self.log, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consumer", "ingest", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "WEBHOOK_SECRETS": ",".join(self.secrets)},
            )
        wait_until(self._up, timeout_s=30, message="ingest listening")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1)
            return True
        except OSError:
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


def test_broker_down_answers_503_never_202(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka")
    broker.start()
    topic = create_topic(broker.bootstrap, unique_topic("down"))
    process = IngestProcess(broker.bootstrap, topic, tmp_path, publish_timeout_s=3)
    try:
        assert process.post(json.dumps(event_for("webflow")).encode())[0] == 202
        broker.stop()
        status, _, headers = process.post(json.dumps(event_for("webflow")).encode())
        assert status == 503
        assert headers.get("Retry-After") == "5"
    finally:
        process.stop()
        broker.stop()
