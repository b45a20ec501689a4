"""``asset-sync ingest``: signed asset-change webhooks in, events on the topic.

``POST /v1/events`` takes one CloudEvent (``application/cloudevents+json``) or a batch
(``application/cloudevents-batch+json``), signed by the Standard Webhooks scheme
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; verified with the
``standardwebhooks`` library, several secrets accepted for rotation). Every event is
validated against ``schemas/`` before anything is produced; the answer is 202 only once the
broker acknowledged every record (acks=all, idempotent producer). A ``webhook-id`` seen within
the tolerance is answered 200 and not published again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from consumer import metrics
from consumer.config import Config
from consumer.errors import ConfigError
from consumer.events import STRUCTURED_CONTENT_TYPE, Event, Rejection, validate_document
from consumer.health import Health, HealthServer
from consumer.kafka_clients import PublishFailed, Record, make_producer, send_acked
from consumer.logs import get_logger
from consumer.publish import record_key
from consumer.recent import RecentIds

log = get_logger("ingest")
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
RETRY_AFTER_S = "5"


def _answer(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    metrics.INGEST_REQUESTS.labels(str(status)).inc()
    return web.json_response(body, status=status, headers=headers)


class _Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class Ingest:
    def __init__(self, config: Config) -> None:
        settings = config.ingest
        if settings.secrets is None or not settings.secrets.reveal().strip():
            raise ConfigError("ingest.secrets", "is required (one or more whsec_ secrets)")
        try:
            self._verifiers = [
                Webhook(s.strip()) for s in settings.secrets.reveal().split(",") if s.strip()
            ]
        except Exception:  # the library raises bare errors for bad base64
            raise ConfigError("ingest.secrets", "must be base64 secrets (whsec_...)") from None
        self.config = config
        self.settings = settings
        self.seen = RecentIds(settings.tolerance_s)
        self.producer: Any = None

    def _verified(self, body: bytes, headers: dict[str, str]) -> bool:
        for verifier in self._verifiers:
            try:
                verifier.verify(body, headers, json_parse=False)
                return True
            except (WebhookVerificationError, ValueError, UnicodeDecodeError):
                continue
        return False

    async def handle(self, request: web.Request) -> web.Response:
        try:
            webhook_id, events = await self._accept(request)
        except _Refused as refused:
            return _answer(refused.status, refused.body)
        if events is None:
            return _answer(200, {"duplicate": True, "webhook_id": webhook_id})
        return await self._publish(webhook_id, events)

    async def _accept(self, request: web.Request) -> tuple[str, list[tuple[Event, Any]] | None]:
        """Check everything before anything is produced; None events: a replayed webhook."""
        kind = request.content_type
        if kind not in (STRUCTURED_CONTENT_TYPE, BATCH_CONTENT_TYPE):
            raise _Refused(
                415,
                {
                    "error": f"content type must be {STRUCTURED_CONTENT_TYPE} "
                    f"or {BATCH_CONTENT_TYPE}"
                },
            )
        if (request.content_length or 0) > self.settings.max_body_bytes:
            raise _Refused(413, {"error": "body too large"})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(413, {"error": "body too large"}) from None
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not self._verified(body, headers):
            raise _Refused(401, {"error": "missing, invalid or expired webhook signature"})
        webhook_id = headers["webhook-id"]
        if self.seen.seen(webhook_id):
            return webhook_id, None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise _Refused(
                400, {"errors": [{"index": 0, "pointer": "", "message": "not valid JSON"}]}
            ) from None
        documents = document if kind == BATCH_CONTENT_TYPE else [document]
        if not isinstance(documents, list):
            raise _Refused(
                400, {"errors": [{"index": 0, "pointer": "", "message": "a batch is a JSON array"}]}
            )
        if len(documents) > self.settings.max_batch:
            raise _Refused(413, {"error": f"at most {self.settings.max_batch} events a batch"})
        events, errors = [], []
        for index, item in enumerate(documents):
            result = validate_document(item)
            if isinstance(result, Rejection):
                errors += [
                    {"index": index, "pointer": e.pointer, "message": e.message}
                    for e in result.errors
                ]
            else:
                events.append((result, item))
        if errors:
            raise _Refused(400, {"errors": errors})
        return webhook_id, events

    async def _publish(self, webhook_id: str, events: list[tuple[Event, Any]]) -> web.Response:
        started = time.monotonic()
        header = [("content-type", STRUCTURED_CONTENT_TYPE.encode())]
        records: list[Record] = [
            (record_key(event), json.dumps(item).encode(), header) for event, item in events
        ]
        try:
            await asyncio.wait_for(
                send_acked(self.producer, self.config.kafka.topic, records),
                self.settings.publish_timeout_s,
            )
        except (PublishFailed, TimeoutError) as error:
            log.warning(
                "publish failed",
                extra={"fields": {"webhook_id": webhook_id, "error": str(error)[:200]}},
            )
            return _answer(
                503,
                {"error": "the broker did not take the events; retry"},
                **{"Retry-After": RETRY_AFTER_S},
            )
        metrics.INGEST_PUBLISH.observe(time.monotonic() - started)
        self.seen.add(webhook_id)
        return _answer(202, {"ids": [event.id for event, _ in events]})

    async def run(self) -> None:
        health = Health(joined=True)
        self.producer = make_producer(self.config.kafka, "asset-sync-ingest")
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.add_routes([web.post("/v1/events", self.handle)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", self.settings.port).start()  # noqa: S104
        server = HealthServer(health, self.config.metrics.port)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("accepting webhooks", extra={"fields": {"port": self.settings.port}})
        try:
            while not stop.is_set():
                health.polled(broker_ok=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5)
        finally:
            await runner.cleanup()
            await server.stop()
            await loop.run_in_executor(None, self.producer.close, 10)
