"""Parking: a connection that is down for hours neither fills memory nor dead-letters.

When a connection is unavailable (its breaker is not closed, or an operator paused it) and
more than ``parking.backlog`` of its events wait, its queued events move to the connection's
parking topic (``<prefix>.<vendor>.<connection>``), co-partitioned with the source: an event
of source partition p goes to parking partition p with its key, value and headers byte for
byte, plus ``parked.*`` headers saying why and where from. Its source offset is finished once
the parked copy is acknowledged (acks=all). From then on, until every parked event of that
partition was read back, the connection's new events of that partition are parked too, so an
asset's events keep their order. The event under way for an asset stays (it waits for the
breaker, costing no retry budget), and is delivered before its parked successors.

The service's consumer subscribes to the source and every parking topic; the range assignor
gives partition p of all of them to one member, so parked events move with their partition
on a rebalance. A parking partition is paused while its connection parks and is read like the
source once the connection is available: its events go through the pipeline (and freshness)
like any, each finished by its own offset. An event parked longer than
``parking.max_age_s`` is dead-lettered as ``expired`` when it is read back.

While a connection parks with none of its events left in memory, nothing would probe its
vendor: once a probe is due, one live parked event is read back (with the expired ones ahead
of it, which are dead-lettered) to be that probe; the rest stay parked until it succeeds.

Whether a partition's parked events were all read back is the consumer's position against the
partition's end: nothing else has to outlive a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from consumer.broker.dead_letter import SourceRecord
from consumer.broker.kafka_clients import PublishFailed, ensure_co_partitioned, send_acked
from consumer.broker.offsets import OffsetTracker
from consumer.config import Config
from consumer.delivery.breaker import CircuitBreaker
from consumer.telemetry import metrics
from consumer.telemetry.logs import get_logger

log = get_logger("parking")
Connection = tuple[str, str]  # vendor, connection name
PARKED_FROM = "parked.from"  # <topic>:<partition>:<offset> of the source record
PARKED_REASON = "parked.reason"
TICK_S = 0.5  # how often each connection's availability and backlog are looked at
PARK_RETRY_S = (0.5, 1, 2, 5, 10, 30)
DAY_S = 86400.0
REPORT_S = 1.0  # how often the gauges are set (from what the consumer knows: no broker call)
PROBE_SETTLE_S = 1.0  # a probe event taken is in the pipeline's count well within this


def parking_topics(config: Config) -> dict[str, Connection]:
    """Each configured connection's parking topic."""
    prefix = config.parking.topic_prefix or f"{config.kafka.topic}.parked"
    return {
        f"{prefix}.{vendor}.{name}": (vendor, name)
        for vendor, named in config.connections.items()
        for name in named
    }


def ensure_parking_topics(config: Config) -> list[str]:
    """Create the parking topics, co-partitioned with the source; kept a day longer than a
    parked event may wait."""
    retention_ms = int((config.parking.max_age_s + DAY_S) * 1000)
    topics = list(parking_topics(config))
    for name in topics:
        ensure_co_partitioned(config.kafka, name, {"retention.ms": str(retention_ms)})
    return topics


class Parking:
    """The pipeline asks ``diverts`` for each source event and hands what it takes to
    ``park``; the poll loop (Kafka thread) asks ``held`` what to keep paused and calls
    ``refresh`` after each poll; ``run`` decides, per connection, when parking starts and
    ends."""

    def __init__(
        self,
        config: Config,
        producer: KafkaProducer,
        tracker: OffsetTracker,
        breakers: dict[Connection, CircuitBreaker],
    ) -> None:
        self.config = config
        self.source = config.kafka.topic
        self.topics = parking_topics(config)
        self._topic_of = {connection: topic for topic, connection in self.topics.items()}
        self.producer = producer
        self.tracker = tracker
        self.breakers = breakers
        self._parking: set[Connection] = set()  # unavailable: their new events are parked
        self._probing: set[Connection] = set()  # parking: one parked event may be read back
        self._probe_taken: dict[Connection, float] = {}  # when one was (monotonic)
        self._assigned: set[TopicPartition] = set()  # parking partitions of this member
        self._checked: set[TopicPartition] = set()  # looked at since they were assigned
        self._clear: set[TopicPartition] = set()  # every parked event read back
        self._moved: set[TopicPartition] = set()  # parked to since their end was last read
        self._lock = threading.Lock()  # the sets above: loop, Kafka and IO threads
        self._sending: dict[TopicPartition, int] = {}  # events on their way to parking
        self._oldest: dict[TopicPartition, float] = {}  # when the oldest unread was parked
        self._ends: dict[TopicPartition, int] = {}  # the last end read (paused: no fetch)
        self._queue: list[tuple[TopicPartition, SourceRecord, str]] = []
        self._reported = 0.0
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._parked = {c: metrics.EVENTS_PARKED.labels(*c) for c in self._topic_of}
        for connection in self._topic_of:
            metrics.CONNECTION_PARKING.labels(*connection).set(0)
            metrics.PARKED_EVENTS.labels(*connection).set(0)
            metrics.PARKED_OLDEST_AGE.labels(*connection).set(0)

    # --- the pipeline's side (event loop) ------------------------------------------------------
    def is_parking_topic(self, topic: str) -> bool:
        return topic in self.topics

    def diverts(self, tp: TopicPartition, vendor: str, connection: str) -> bool:
        """Whether this source event must be parked: its connection parks, or parked events
        of its partition were not all read back yet (it must come after them)."""
        if tp.topic != self.source:
            return False
        topic = self._topic_of.get((vendor, connection))
        if topic is None:  # not configured: the dispatcher dead-letters it
            return False
        # a plain tuple finds the TopicPartition (a named one) at a third of the cost
        return (vendor, connection) in self._parking or (topic, tp.partition) not in self._clear

    def park(self, tp: TopicPartition, record: SourceRecord, connection: Connection) -> None:
        """Queue a source event for its connection's parking partition; its offset is
        finished once the parked copy is acknowledged."""
        parked = TopicPartition(self._topic_of[connection], tp.partition)
        reason = "unavailable" if connection in self._parking else "behind_parked"
        with self._lock:
            self._clear.discard(parked)
            self._sending[parked] = self._sending.get(parked, 0) + 1
            self._queue.append((parked, record, reason))
        self._wake.set()

    def expired(self, timestamp_ms: int) -> bool:
        """Whether a parked event (its record's timestamp: when it was parked) is too old."""
        return time.time() - timestamp_ms / 1000 > self.config.parking.max_age_s

    def read(self, tp: TopicPartition, last_timestamp_ms: int) -> None:
        """Events of a parking partition were read back (the next unread is at least as
        recent as the last read)."""
        self._oldest[tp] = last_timestamp_ms / 1000

    async def run(
        self,
        waiting: Callable[[Connection], tuple[int, float]],
        take: Callable[[Connection, Callable[[str], bool]], list[tuple[TopicPartition, Any]]],
    ) -> None:
        """Start and end parking per connection: it starts when the connection is
        unavailable and more than ``parking.backlog`` of its events wait (``waiting``: how
        many, and the oldest one's seconds; ``take`` hands over those of the source), and
        ends when the connection is available again."""
        self._sender = asyncio.ensure_future(self._send_forever())
        try:
            while True:
                for connection in self._topic_of:
                    try:
                        self._decide(connection, waiting, take)
                    except Exception as error:  # a bug of ours must not end parking for all
                        log.error("parking decision failed", exc_info=error)
                await asyncio.sleep(TICK_S)
        finally:
            self._sender.cancel()

    def _decide(
        self,
        connection: Connection,
        waiting: Callable[[Connection], tuple[int, float]],
        take: Callable[[Connection, Callable[[str], bool]], list[tuple[TopicPartition, Any]]],
    ) -> None:
        """Unavailable: the breaker is not closed, or the connection is paused, or it is
        rate-limited beyond a bound (its oldest waiting event waited ``parking.max_wait_s``).
        Parking ends once it is available and less than half the backlog bound waits here.
        With none of its events left here nothing would probe a vendor that is down: once a
        probe is due, one parked event is read back to be the probe (``take_probe``); if
        nothing of it is parked on this member, parking ends and new events probe."""
        settings = self.config.parking
        breaker = self.breakers.get(connection)
        available = breaker is None or breaker.available
        count, oldest_s = waiting(connection)
        if connection in self._parking:
            if available and count <= settings.backlog // 2:
                self._end(connection, "connection available: reading its parked events back")
            elif count == 0 and breaker is not None and breaker.probe_due:
                self._probe(connection)
            return
        if count <= settings.backlog or (available and oldest_s <= settings.max_wait_s):
            return
        self._parking.add(connection)
        metrics.CONNECTION_PARKING.labels(*connection).set(1)
        taken = take(connection, lambda topic: topic == self.source)
        for tp, record in sorted(taken, key=lambda t: (t[0].partition, t[1].offset)):
            self.park(tp, record, connection)
        fields = {**_about(connection)["fields"], "moved": len(taken)}
        log.warning("connection unavailable: parking its events", extra={"fields": fields})

    def _end(self, connection: Connection, message: str) -> None:
        with self._lock:
            self._parking.discard(connection)
            self._probing.discard(connection)
        metrics.CONNECTION_PARKING.labels(*connection).set(0)
        log.info(message, extra=_about(connection))

    def _probe(self, connection: Connection) -> None:
        """A probe is due and none of the connection's events is here to be it."""
        topic = self._topic_of[connection]
        with self._lock:
            if connection in self._probing:
                return
            taken = self._probe_taken.get(connection)
            if taken is not None and time.monotonic() - taken < PROBE_SETTLE_S:
                return  # the one taken is on its way to the pipeline
            unread = any(tp.topic == topic and tp not in self._clear for tp in self._assigned)
            if unread:
                self._probing.add(connection)
        if unread:
            log.info("probing the vendor with a parked event", extra=_about(connection))
        else:
            self._end(connection, "nothing of the connection parked here: new events probe")

    async def _send_forever(self) -> None:
        attempt = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                with self._lock:
                    batch, self._queue = self._queue, []
                failed = await self._send(batch)
                if failed:
                    with self._lock:  # those of partitions revoked meanwhile are let go
                        kept = [f for f in failed if f[0] in self._assigned]
                        self._queue[:0] = kept
                        self._count_gone(failed, kept)
                    await asyncio.sleep(PARK_RETRY_S[min(attempt, len(PARK_RETRY_S) - 1)])
                    attempt += 1
                else:
                    attempt = 0

    async def _send(
        self, batch: list[tuple[TopicPartition, SourceRecord, str]]
    ) -> list[tuple[TopicPartition, SourceRecord, str]]:
        """Produce a batch, partition by partition in order; what failed, to send again."""
        by_partition: dict[TopicPartition, list[tuple[SourceRecord, str]]] = {}
        for parked, record, reason in batch:
            by_partition.setdefault(parked, []).append((record, reason))
        failed: list[tuple[TopicPartition, SourceRecord, str]] = []
        for parked, items in by_partition.items():
            records = [
                (record.key, record.value, [*record.headers, *_headers(record, reason)])
                for record, reason in items
            ]
            try:
                await send_acked(self.producer, parked.topic, records, partition=parked.partition)
            except Exception as error:  # refused by the broker, or a bug of ours: again
                log.log(
                    logging.WARNING if isinstance(error, PublishFailed) else logging.ERROR,
                    "parking failed; retrying",
                    extra={"fields": {"topic": parked.topic, "error": str(error)}},
                )
                failed.extend((parked, record, reason) for record, reason in items)
                continue
            connection = self.topics[parked.topic]
            with self._lock:
                self._sending[parked] -= len(items)
                self._moved.add(parked)  # its end moved: read it before calling it clear
                self._oldest.setdefault(parked, time.time())
            self._parked[connection].inc(len(items))
            for record, _ in items:
                self.tracker.finish(TopicPartition(record.topic, record.partition), record.offset)
        return failed

    def _count_gone(self, before: list[Any], kept: list[Any]) -> None:
        """Under the lock: what left the queue without being sent is no longer on its way."""
        for parked, _, _ in before:
            self._sending[parked] -= 1
        for parked, _, _ in kept:
            self._sending[parked] += 1

    # --- the poll loop's side (Kafka thread) -------------------------------------------------
    def assigned(self, tps: Iterable[TopicPartition]) -> None:
        """Rebalance: parking partitions of this member, not looked at yet."""
        with self._lock:
            for tp in tps:
                if tp.topic in self.topics:
                    self._assigned.add(tp)
                    self._checked.discard(tp)
                    self._clear.discard(tp)

    def revoked(self, tps: Iterable[TopicPartition]) -> None:
        """Rebalance: what waits to be parked from these partitions is let go (its source
        offsets are not finished: the new owner consumes them again), so that no late copy
        lands behind what the new owner delivers."""
        with self._lock:
            gone = {tp.partition for tp in tps if tp.topic == self.source}
            kept = [q for q in self._queue if q[0].partition not in gone]
            self._count_gone(self._queue, kept)
            self._queue = kept
            for tp in tps:
                self._assigned.discard(tp)
                self._checked.discard(tp)
                self._clear.discard(tp)
                self._moved.discard(tp)
                self._oldest.pop(tp, None)
                self._ends.pop(tp, None)

    def held(self) -> set[TopicPartition]:
        """What the poll loop keeps paused: the parking partitions of connections that park,
        and the source partitions whose parking partitions were not looked at yet."""
        with self._lock:
            assigned, unchecked = set(self._assigned), self._assigned - self._checked
            parking = self._parking - self._probing
        held = {tp for tp in assigned if self.topics[tp.topic] in parking}
        held |= {TopicPartition(self.source, tp.partition) for tp in unchecked}
        return held

    def take_probe(self, batches: dict[TopicPartition, list[Any]], consumer: KafkaConsumer) -> None:
        """After a poll: of a probing connection's parking partitions, only the first live
        record is taken (and the expired ones ahead of it, to be dead-lettered); every
        partition is read from its first record not taken once it is let go."""
        with self._lock:
            probing = {self._topic_of[c]: c for c in self._probing}
        if not probing:
            return
        live_taken: set[Connection] = set()
        for tp in sorted((tp for tp in batches if tp.topic in probing), key=lambda t: t.partition):
            connection = probing[tp.topic]
            records = batches[tp]
            kept = 0
            while kept < len(records) and self.expired(records[kept].timestamp):
                kept += 1
            if kept < len(records) and connection not in live_taken:
                kept += 1
                live_taken.add(connection)
            if kept < len(records):
                consumer.seek(tp, records[kept].offset)
            if kept:
                batches[tp] = records[:kept]
            else:
                del batches[tp]
        if live_taken:  # held again from now: no later fetch of them is taken
            topics = {self._topic_of[c] for c in live_taken}
            with self._lock:
                self._probing -= live_taken
                for connection in live_taken:
                    self._probe_taken[connection] = time.monotonic()
                held = [tp for tp in self._assigned if tp.topic in topics]
            consumer.pause(*held)

    def refresh(self, consumer: KafkaConsumer) -> None:
        """After a poll: which parking partitions were read back to their end. The end is
        asked of the broker for a partition not looked at yet or parked to since; otherwise
        the last fetch's high watermark tells it."""
        with self._lock:
            open_ = [tp for tp in self._assigned - self._clear if not self._sending.get(tp)]
            ask = [tp for tp in open_ if tp not in self._checked or tp in self._moved]
            self._moved.difference_update(ask)
        try:
            ends = consumer.end_offsets(ask, timeout_ms=5_000) if ask else {}
            positions = {tp: consumer.position(tp, timeout_ms=5_000) for tp in open_}
        except KafkaError as error:
            with self._lock:
                self._moved.update(ask)
            log.warning("parking partitions not looked at", extra={"fields": {"error": str(error)}})
            return
        now = time.time()
        with self._lock:
            for tp in open_:
                if tp in self._moved or tp not in self._assigned or self._sending.get(tp):
                    continue  # parked to meanwhile: the end read is out of date
                # The largest end known: a paused partition's high watermark is that of its
                # last fetch, however much was parked since.
                known = [e for e in (ends.get(tp), self._ends.get(tp), consumer.highwater(tp)) if e]
                if not known and tp not in ends:
                    continue  # nothing known of it yet
                end = max(known, default=0)
                self._ends[tp] = end
                self._checked.add(tp)
                position = positions.get(tp)
                if position is not None and position >= end:
                    self._clear.add(tp)
                    if self._oldest.pop(tp, None) is not None:  # there was something to read
                        fields = {"partition": f"{tp.topic}:{tp.partition}", "end": end}
                        log.info("parked events all read back", extra={"fields": fields})
                else:
                    self._oldest.setdefault(tp, now)  # parked before this member had it
        if time.monotonic() - self._reported > REPORT_S:
            self._report(consumer)

    def _report(self, consumer: KafkaConsumer) -> None:
        """Gauges: events not read back, and the oldest one's age, per connection."""
        unread: dict[Connection, int] = dict.fromkeys(self._topic_of, 0)
        oldest: dict[Connection, float] = {}
        now, self._reported = time.time(), time.monotonic()
        with self._lock:
            assigned, clear, ends = set(self._assigned), set(self._clear), dict(self._ends)
            sending, since = dict(self._sending), dict(self._oldest)
        for tp in assigned:
            connection = self.topics[tp.topic]
            unread[connection] += sending.get(tp, 0)
            if tp in clear:
                continue
            with contextlib.suppress(KafkaError):  # the gauge stays as it was
                end = max(consumer.highwater(tp) or 0, ends.get(tp, 0))
                position = consumer.position(tp, timeout_ms=1_000) or 0
                unread[connection] += max(0, end - position)
            if tp in since:
                oldest[connection] = max(oldest.get(connection, 0.0), now - since[tp])
        for connection, count in unread.items():
            metrics.PARKED_EVENTS.labels(*connection).set(count)
            metrics.PARKED_OLDEST_AGE.labels(*connection).set(oldest.get(connection, 0.0))


def _headers(record: SourceRecord, reason: str) -> list[tuple[str, bytes]]:
    where = f"{record.topic}:{record.partition}:{record.offset}"
    return [(PARKED_FROM, where.encode()), (PARKED_REASON, reason.encode())]


def _about(connection: Connection) -> dict[str, Any]:
    return {"fields": {"vendor": connection[0], "connection": connection[1]}}
