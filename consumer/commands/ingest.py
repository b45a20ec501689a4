"""``asset-sync ingest``: signed asset-change webhooks in, events on the topic.

``POST /v1/events`` takes one CloudEvent (``application/cloudevents+json``) or a batch
(``application/cloudevents-batch+json``), signed by the Standard Webhooks scheme
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; several secrets accepted for
rotation). The signature is computed by the ``standardwebhooks`` library, but the timestamp is
checked here against ``ingest.tolerance_s``: the library's ``verify()`` fixes the window at 5
minutes. Every event is validated against ``schemas/`` before anything is produced; the answer
is 202 only once the broker acknowledged every record (acks=all, idempotent producer).

Replays: a ``webhook-id`` published within the tolerance is answered 200 and not published
again, by any replica. After its events are acknowledged, a replica produces the id (acks=all)
to a compacted topic (``ingest.ids_topic``, default ``<kafka.topic>.ingest-ids``, retention =
the tolerance) before answering 202; every replica follows that topic into its memory, and at
start reads it from the first record within the tolerance before it says ready. What remains:
two replicas that receive the same id within the follow latency (a few milliseconds on a
local broker, well under a second), or while the other is still publishing it, both publish it.

A request answered 503 may leave its records in the producer's buffer; they are stored if the
broker comes back within a few seconds, otherwise dropped (delivery timeout). At shutdown the
ones still not stored are counted in one warning line: their senders were told 503.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import math
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from standardwebhooks.webhooks import Webhook

from consumer.broker.kafka_clients import (
    BrokerError,
    PublishFailed,
    Record,
    connection_settings,
    ensure_topic,
    make_producer,
    send_acked,
    wait_for_partitions,
)
from consumer.commands.publish import record_key
from consumer.config import Config
from consumer.delivery.recent import RecentIds
from consumer.errors import ConfigError
from consumer.events import STRUCTURED_CONTENT_TYPE, Event, Rejection, validate_document
from consumer.telemetry import metrics
from consumer.telemetry.health import Health, HealthServer
from consumer.telemetry.logs import get_logger

log = get_logger("ingest")
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
RETRY_AFTER_S = "5"
STARTUP_TIMEOUT_S = 60.0
IDS_POLL_MS = 500
# A record whose request was answered 503 is stored if the broker takes it within this much
# more; then the producer drops it. Bounds both "stored after a 503" and the shutdown wait.
LATE_DELIVERY_S = 5.0


def _answer(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    metrics.INGEST_REQUESTS.labels(str(status)).inc()
    return web.json_response(body, status=status, headers=headers)


def _duplicate(webhook_id: str) -> web.Response:
    return _answer(200, {"duplicate": True, "webhook_id": webhook_id})


def _id_bytes(webhook_id: str) -> bytes:
    return webhook_id.encode("utf-8", "surrogateescape")  # aiohttp's decoding of headers


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
            self._signers = [
                Webhook(s.strip()) for s in settings.secrets.reveal().split(",") if s.strip()
            ]
        except Exception:  # the library raises bare errors for bad base64
            raise ConfigError("ingest.secrets", "must be base64 secrets (whsec_...)") from None
        self.config = config
        self.settings = settings
        self.ids_topic = settings.ids_topic or f"{config.kafka.topic}.ingest-ids"
        self.seen = RecentIds(settings.tolerance_s)
        self.health = Health(joined=False)  # "joined": caught up with the ids topic
        self.producer: Any = None
        self._reader: KafkaConsumer | None = None
        self._kafka = ThreadPoolExecutor(1, thread_name_prefix="ingest-ids")
        self._publishing: dict[str, asyncio.Future[bool]] = {}  # id -> published?
        self._answered_503: dict[asyncio.Task[None], int] = {}  # still buffered: record count
        self._stopping = False

    # --- authentication -----------------------------------------------------------------------
    def _verified(self, body: bytes, headers: dict[str, str]) -> bool:
        """Standard Webhooks with ``ingest.tolerance_s`` as the timestamp window."""
        webhook_id = headers.get("webhook-id")
        stamp = headers.get("webhook-timestamp")
        offered = headers.get("webhook-signature")
        if not (webhook_id and stamp and offered):
            return False
        try:
            signed_at = float(stamp)
            text = body.decode()
        except (ValueError, UnicodeDecodeError):
            return False
        if not math.isfinite(signed_at) or abs(time.time() - signed_at) > self.settings.tolerance_s:
            return False
        candidates = []
        for item in offered.split(" "):
            version, _, signature = item.partition(",")
            if version == "v1":
                with contextlib.suppress(binascii.Error):
                    candidates.append(base64.b64decode(signature, validate=True))
        when = datetime.fromtimestamp(signed_at, UTC)
        for signer in self._signers:
            expected = base64.b64decode(signer.sign(webhook_id, when, text).partition(",")[2])
            if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
                return True
        return False

    # --- requests -----------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        try:
            webhook_id, events = await self._accept(request)
        except _Refused as refused:
            return _answer(refused.status, refused.body)
        while events is not None and (earlier := self._publishing.get(webhook_id)) is not None:
            if await asyncio.shield(earlier):  # this replica is publishing the same id now
                events = None
        if events is None or self.seen.seen(webhook_id):
            return _duplicate(webhook_id)
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._publishing[webhook_id] = outcome
        published = False
        try:
            response, published = await self._publish(webhook_id, events)
        finally:
            del self._publishing[webhook_id]
            outcome.set_result(published)
        return response

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

    async def _publish(
        self, webhook_id: str, events: list[tuple[Event, Any]]
    ) -> tuple[web.Response, bool]:
        started = time.monotonic()
        header = [("content-type", STRUCTURED_CONTENT_TYPE.encode())]
        records: list[Record] = [
            (record_key(event), json.dumps(item).encode(), header) for event, item in events
        ]
        # Not cancelled on timeout: what the producer still holds is tracked until it settles.
        sending = asyncio.ensure_future(send_acked(self.producer, self.config.kafka.topic, records))
        await asyncio.wait([sending], timeout=self.settings.publish_timeout_s)
        error: str | None
        if not sending.done():
            self._answered_503[sending] = len(records)
            sending.add_done_callback(lambda _: self._settled_after_503(webhook_id, sending))
            error = f"no acknowledgement within {self.settings.publish_timeout_s:g}s"
        else:
            failure = sending.exception()
            error = None if failure is None else str(failure)
        if error is not None:
            log.warning(
                "publish failed", extra={"fields": {"webhook_id": webhook_id, "error": error[:200]}}
            )
            response = _answer(
                503,
                {"error": "the broker did not take the events; retry"},
                **{"Retry-After": RETRY_AFTER_S},
            )
            return response, False
        metrics.INGEST_PUBLISH.observe(time.monotonic() - started)
        self.seen.add(webhook_id)
        await self._share(webhook_id, started)
        return _answer(202, {"ids": [event.id for event, _ in events]}), True

    def _settled_after_503(self, webhook_id: str, sending: asyncio.Task[None]) -> None:
        count = self._answered_503.pop(sending)
        failure = None if sending.cancelled() else sending.exception()
        if not self._stopping:
            outcome = "dropped" if failure is not None else "stored late; a retry publishes again"
            log.info(
                f"records answered 503 {outcome}",
                extra={"fields": {"webhook_id": webhook_id, "records": count}},
            )

    async def _share(self, webhook_id: str, started: float) -> None:
        """Tell the other replicas, and later starts of this one, that this id is published."""
        budget = max(1.0, started + self.settings.publish_timeout_s - time.monotonic())
        try:
            await asyncio.wait_for(
                send_acked(self.producer, self.ids_topic, [(_id_bytes(webhook_id), b"", [])]),
                budget,
            )
        except (PublishFailed, TimeoutError) as error:
            # the events are stored: still a 202; only the other replicas may not know the id
            log.warning(
                "webhook id not shared with the other replicas",
                extra={"fields": {"webhook_id": webhook_id, "error": str(error)[:200]}},
            )

    # --- the ids topic ------------------------------------------------------------------------
    def _ids_topic_settings(self) -> dict[str, str]:
        """Ids older than the tolerance are never needed: compacted, and deleted after it."""
        keep_ms = str(max(1000, int(self.settings.tolerance_s * 1000)))
        return {"cleanup.policy": "compact,delete", "retention.ms": keep_ms, "segment.ms": keep_ms}

    def _open_ids(self) -> dict[TopicPartition, int]:
        """(Kafka thread) Position on the first id within the tolerance; return the end
        offsets this replica must reach before it is ready."""
        try:
            reader = KafkaConsumer(
                **connection_settings(self.config.kafka),
                client_id="asset-sync-ingest-ids",
                group_id=None,
                enable_auto_commit=False,
            )
        except KafkaError as exc:
            raise BrokerError(
                f"cannot connect to {self.config.kafka.bootstrap_servers}: {exc}"
            ) from None
        self._reader = reader
        try:
            wait_for_partitions(reader, self.ids_topic, STARTUP_TIMEOUT_S)
            partitions = [
                TopicPartition(self.ids_topic, p)
                for p in sorted(reader.partitions_for_topic(self.ids_topic) or ())
            ]
            reader.assign(partitions)
            since = int((time.time() - self.settings.tolerance_s) * 1000)
            starts = reader.offsets_for_times(dict.fromkeys(partitions, since))
            ends: dict[TopicPartition, int] = reader.end_offsets(partitions)
        except KafkaError as exc:
            raise BrokerError(f"cannot read {self.ids_topic!r}: {exc}") from None
        for partition in partitions:
            found = starts.get(partition)
            reader.seek(partition, found.offset if found is not None else ends[partition])
        return ends

    def _read_ids(self, ends: dict[TopicPartition, int]) -> tuple[list[str], bool]:
        """(Kafka thread) The ids published since the last call, and whether ``ends`` is
        reached."""
        assert self._reader is not None
        batches = self._reader.poll(timeout_ms=IDS_POLL_MS)
        horizon_ms = (time.time() - self.settings.tolerance_s) * 1000
        ids = [
            r.key.decode("utf-8", "surrogateescape")
            for records in batches.values()
            for r in records
            if r.key is not None and r.timestamp >= horizon_ms
        ]
        caught_up = all(self._reader.position(p) >= end for p, end in ends.items())
        return ids, caught_up

    async def _follow_ids(self, ends: dict[TopicPartition, int], ready: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                ids, caught_up = await loop.run_in_executor(self._kafka, self._read_ids, ends)
            except KafkaError as error:  # the consumer reconnects by itself
                log.warning("reading webhook ids failed", extra={"fields": {"error": str(error)}})
                await asyncio.sleep(1)
                continue
            for webhook_id in ids:
                self.seen.add(webhook_id)
            if caught_up:
                ends = {}
                ready.set()

    # --- the process --------------------------------------------------------------------------
    async def _in_kafka(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._kafka, func, *args)

    async def _start_kafka(self, stop: asyncio.Event) -> dict[TopicPartition, int]:
        kafka = self.config.kafka
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                await self._in_kafka(
                    ensure_topic, kafka, self.ids_topic, 1, self._ids_topic_settings()
                )
                break
            except BrokerError as error:
                if time.monotonic() > deadline or stop.is_set():
                    raise
                log.warning("broker not reachable yet", extra={"fields": {"error": str(error)}})
                await asyncio.sleep(2)
        request_timeout_ms = max(1000, int(self.settings.publish_timeout_s * 1000))
        self.producer = await self._in_kafka(
            lambda: make_producer(
                kafka,
                "asset-sync-ingest",
                request_timeout_ms=request_timeout_ms,
                delivery_timeout_ms=request_timeout_ms + int(LATE_DELIVERY_S * 1000),
            )
        )
        with contextlib.suppress(KafkaError):  # metadata now, not in the first request
            await self._in_kafka(self.producer.partitions_for, self.ids_topic)
        ends: dict[TopicPartition, int] = await self._in_kafka(self._open_ids)
        return ends

    async def _turn_until(self, *events: asyncio.Event) -> None:
        """Keep ``/healthz`` alive until one of ``events`` is set."""
        while not any(e.is_set() for e in events):
            self.health.polled(broker_ok=True)
            waits = [asyncio.ensure_future(e.wait()) for e in events]
            await asyncio.wait(waits, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = HealthServer(self.health, self.config.metrics.port)
        await server.start()
        runner: web.AppRunner | None = None
        follower: asyncio.Task[None] | None = None
        try:
            ends = await self._start_kafka(stop)
            caught_up = asyncio.Event()
            follower = asyncio.create_task(self._follow_ids(ends, caught_up))
            follower.add_done_callback(lambda _: stop.set())  # it ends only on a bug: stop too
            await self._turn_until(caught_up, stop)
            if stop.is_set():
                return
            app = web.Application(client_max_size=self.settings.max_body_bytes)
            app.add_routes([web.post("/v1/events", self.handle)])
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "0.0.0.0", self.settings.port).start()  # noqa: S104
            self.health.joined = True
            log.info(
                "accepting webhooks",
                extra={"fields": {"port": self.settings.port, "ids_topic": self.ids_topic}},
            )
            await self._turn_until(stop)
        finally:
            self.health.joined = False
            if runner is not None:
                await runner.cleanup()  # requests in progress are answered first
            self._stopping = True
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            if self._reader is not None:
                await self._in_kafka(self._reader.close)
            if self.producer is not None:
                await self._close_producer()
            await server.stop()
            self._kafka.shutdown(wait=False)

    async def _close_producer(self) -> None:
        """Wait for what the producer holds (bounded by its delivery timeout), say what was
        left unpublished, then close: never an exception for records the broker did not take."""
        loop = asyncio.get_running_loop()
        held = dict(self._answered_503)
        with contextlib.suppress(KafkaError):  # KafkaTimeoutError: counted below
            await loop.run_in_executor(
                None, self.producer.flush, self.settings.publish_timeout_s + LATE_DELIVERY_S + 2
            )
        if held:
            await asyncio.wait(list(held), timeout=2)  # their callbacks come through the loop
        unpublished = sum(
            count
            for sending, count in held.items()
            if not sending.done() or sending.cancelled() or sending.exception() is not None
        )
        if unpublished:
            log.warning(
                f"{unpublished} record(s) left unpublished at shutdown: the broker did not take "
                "them, and their senders were answered 503 (they retry)",
                extra={"fields": {"records": unpublished}},
            )
        try:
            await loop.run_in_executor(None, self.producer.close, 5)
        except KafkaError as error:
            log.warning("producer did not close cleanly", extra={"fields": {"error": str(error)}})
