"""A compacted Kafka topic that every replica reads into memory: the changelog model of Kafka
Streams, shared by the connection state topic (consumer/state/connection_state.py) and the control
topic (consumer/state/control.py).

Each process follows the topic with a consumer of its own (no group, every partition, from the
beginning), so every replica sees every record in log order; it is ready once it has read the
topic to the end it had at start. Writes go to partition 0 with acks=all, so the log orders
them. The owner keeps the meaning of records: it gives ``apply``, called on the event loop for
each record in log order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from consumer.broker.kafka_clients import (
    BrokerError,
    connection_settings,
    ensure_topic,
    make_producer,
    wait_for_partitions,
)
from consumer.config import KafkaConfig
from consumer.telemetry.logs import get_logger

log = get_logger("compacted_topic")
T = TypeVar("T")

POLL_MS = 200
WRITE_TIMEOUT_S = 10.0
STARTUP_TIMEOUT_S = 60.0

Apply = Callable[[int, int, bytes | None, bytes | None], None]  # partition, offset, key, value


class CompactedTopic:
    """``topic`` read to its end, then followed; ``apply`` hears every record in log order.

    ``role`` names the clients (``<client_id>-<role>``) and the log lines.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        apply: Apply,
        client_id: str,
        *,
        role: str,
        settings: dict[str, str],
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.client_id = client_id
        self.role = role
        self.read_to: dict[int, int] = {}  # partition -> next offset to read
        self._apply = apply
        self._settings = settings
        self._changed: asyncio.Condition | None = None
        self._reader: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"{role}-reader")
        self._follower: asyncio.Task[None] | None = None

    async def start(
        self,
        timeout_s: float = STARTUP_TIMEOUT_S,
        *,
        create: bool = True,
        write: bool = True,
        follow: bool = True,
    ) -> None:
        """Create the topic if missing (``create``), open a producer (``write``), read the
        topic to its end, then follow it in the background (``follow``; a one-off reader such
        as ``ctl status`` does not)."""
        self._changed = asyncio.Condition()
        if create:
            await self._in_thread(ensure_topic, self.kafka, self.topic, 1, self._settings)
        if write:
            self._producer = await self._in_thread(
                make_producer, self.kafka, f"{self.client_id}-{self.role}"
            )
        ends = await self._in_thread(self._open_reader, timeout_s)
        deadline = time.monotonic() + timeout_s
        while any(self.read_to.get(p, 0) < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise BrokerError(f"cannot read {self.topic!r} to its end within {timeout_s:.0f}s")
            try:
                await self.read_once()
            except KafkaError as error:
                log.warning(
                    f"reading the {self.role} topic failed",
                    extra={"fields": {"topic": self.topic, "error": str(error)}},
                )
                await asyncio.sleep(1)
        if follow:
            self._follower = asyncio.create_task(self._follow())

    async def write(self, key: str, value: bytes | None) -> int:
        """Write one record (None: a tombstone) to partition 0; its offset once the broker
        acknowledged it (acks=all). Raises ``KafkaError``."""
        producer = self._producer
        assert producer is not None, "start(write=True) first"

        def send() -> int:
            sent = producer.send(self.topic, key=key.encode(), value=value, partition=0)
            return int(sent.get(timeout=WRITE_TIMEOUT_S).offset)

        return await asyncio.get_running_loop().run_in_executor(None, send)

    async def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate`` holds; it is checked after each read of the topic."""
        if predicate():
            return True
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)
        return predicate()

    async def notify(self) -> None:
        """Wake ``wait``ers: the owner changed what their predicates read."""
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # --- the reader thread --------------------------------------------------------------------
    def _open_reader(self, timeout_s: float) -> dict[int, int]:
        """(Reader thread) Every partition from the beginning; the offsets to reach."""
        try:
            reader = KafkaConsumer(
                **connection_settings(self.kafka),
                client_id=f"{self.client_id}-{self.role}",
                group_id=None,
                enable_auto_commit=False,
                # Kafka's default 500 ms: the broker answers a fetch as soon as a record
                # arrives, so this bounds only how often an idle reader asks (100 ms made
                # the two readers about 40 % of an idle replica's CPU).
                fetch_max_wait_ms=500,
            )
        except KafkaError as exc:
            raise BrokerError(f"cannot connect to {self.kafka.bootstrap_servers}: {exc}") from None
        self._reader = reader
        try:
            wait_for_partitions(reader, self.topic, timeout_s)
            partitions = [
                TopicPartition(self.topic, p)
                for p in sorted(reader.partitions_for_topic(self.topic) or ())
            ]
            reader.assign(partitions)
            reader.seek_to_beginning(*partitions)
            ends: dict[TopicPartition, int] = reader.end_offsets(partitions)
        except KafkaError as exc:
            raise BrokerError(f"cannot read {self.topic!r}: {exc}") from None
        return {tp.partition: end for tp, end in ends.items()}

    def _poll(self) -> tuple[list[Any], dict[int, int]]:
        """(Reader thread) The records since the last call and the position reached."""
        assert self._reader is not None
        batches = self._reader.poll(timeout_ms=POLL_MS)
        records = [r for _, rs in sorted(batches.items(), key=lambda b: b[0].partition) for r in rs]
        positions = {tp.partition: self._reader.position(tp) for tp in self._reader.assignment()}
        return records, positions

    # --- the event loop -----------------------------------------------------------------------
    async def read_once(self) -> None:
        records, positions = await self._in_thread(self._poll)
        for r in records:
            self._apply(r.partition, r.offset, r.key, r.value)
        self.read_to.update(positions)
        await self.notify()

    async def _follow(self) -> None:
        while True:
            try:
                await self.read_once()
            except Exception as error:  # KafkaError: the consumer reconnects by itself
                log.warning(
                    f"reading the {self.role} topic failed",
                    extra={
                        "fields": {
                            "topic": self.topic,
                            "error": f"{type(error).__name__}: {error}"[:200],
                        }
                    },
                )
                await asyncio.sleep(1)

    async def _in_thread(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, func, *args)

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self._reader is not None:
            await self._in_thread(self._reader.close)
        if self._producer is not None:
            await self._in_thread(self._producer.close, 5)
        self._thread.shutdown(wait=False)
