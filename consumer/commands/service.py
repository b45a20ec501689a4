"""``asset-sync run``: the long-lived service (SPEC sections 4-6).

Threads: the asyncio loop (validation, pipeline, HTTP to vendors, health endpoints) and one
"kafka" thread that alone touches the ``KafkaConsumer`` (poll, pause/resume, commit), since
the consumer is not for concurrent use. kafka-python runs rebalance callbacks on its own IO
thread; they only use the thread-safe offset tracker and ``commit_async``.

The poll loop never stops while deliveries back off: when too many records are unfinished,
partitions are paused, so memory stays bounded and ``max.poll.interval.ms`` is never exceeded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumer.broker.dead_letter import DeadLetterWriter, SourceRecord
from consumer.broker.kafka_clients import (
    BrokerError,
    ensure_dead_letter_topic,
    make_consumer,
    make_producer,
    rejoin_if_join_dropped,
    rejoin_workaround_applies,
    wait_for_partitions,
)
from consumer.broker.offsets import OffsetTracker
from consumer.config import Config
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.parking import Parking, ensure_parking_topics
from consumer.delivery.pipeline import Pipeline
from consumer.events import parse_record
from consumer.state import connection_state
from consumer.state.connection_state import ConnectionStateStore
from consumer.state.control import Control
from consumer.state.freshness import Freshness
from consumer.state.freshness_store import ensure_changelog_topic
from consumer.telemetry import metrics
from consumer.telemetry.health import Health, HealthServer
from consumer.telemetry.logs import get_logger

log = get_logger("service")
T = TypeVar("T")
RESUME_FRACTION = 0.8
LAG_REFRESH_S = 10.0
STARTUP_TIMEOUT_S = 60.0
# Blocking consumer calls get a deadline: without one kafka-python waits for a broker that is
# gone for as long as it is gone, and the poll loop (the group heartbeat's partner) stops.
BROKER_CALL_MS = 5_000
# On revocation, how long requests already on the wire may take to finish before they are
# cancelled: finished work is committed, not sent again by the partition's next owner. The
# rebalance waits this long at most (kafka-python holds the group's heartbeat meanwhile).
REVOKE_GRACE_S = 3.0
FRESHNESS_CLOSE_S = 5.0  # at shutdown, how long the last changelog writes may take


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's IO thread: commit what is finished, drop what is revoked."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.service.release(set(revoked), commit=True)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.service.release(set(lost), commit=False)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.service.health.joined = True
        self.service.hold(set(assigned))  # freshness: paused until their state is restored
        self.service.resume(set(assigned))
        self.service.refresh_lag_soon()
        log.info(
            "partitions assigned",
            extra={
                "fields": {"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)}
            },
        )


class Service:
    def __init__(self, config: Config, client_id: str = "asset-sync") -> None:
        self.config = config
        self.client_id = client_id
        self.health = Health()
        self.tracker = OffsetTracker()
        self._resume_at: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()
        self._kafka = ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: KafkaConsumer | None = None
        self._pipeline: Pipeline | None = None
        self._freshness: Freshness | None = None
        self._parking: Parking | None = None
        self._parking_task: asyncio.Task[None] | None = None
        self._control: Control | None = None
        self._last_commit = 0.0
        self._last_lag = 0.0

    # --- lifecycle ----------------------------------------------------------------------------
    def stop(self) -> None:
        if not self._stopping.is_set():
            log.info("stopping: finishing in-flight deliveries")
            self._stopping.set()

    async def run(self) -> None:
        connection_state.check(self.config)  # a missing state key stops the start, named
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.stop)
        server = HealthServer(self.health, self.config.metrics.port)
        await server.start()
        try:
            await self._start_clients()
            await self._consume()
        finally:
            await server.stop()
            self._kafka.shutdown(wait=True)

    async def _in_kafka(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._kafka, func, *args)

    async def _start_clients(self) -> None:
        kafka = self.config.kafka
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                await self._in_kafka(ensure_dead_letter_topic, kafka)
                break
            except BrokerError as error:
                if time.monotonic() > deadline or self._stopping.is_set():
                    raise
                log.warning("broker not reachable yet", extra={"fields": {"error": str(error)}})
                await asyncio.sleep(2)
        self._producer = await self._in_kafka(make_producer, kafka, f"{self.client_id}-dlq")
        if connection_state.needing_state(self.config):  # read to its end before consuming
            self._state = await ConnectionStateStore.open(self.config, self.client_id)
            connection_state.use(self._state)
        # the pauses of ``asset-sync ctl`` are known before the first record is consumed
        self._control = await Control.open(self.config, self.client_id)
        consumer = await self._in_kafka(make_consumer, kafka, self.client_id)
        await self._in_kafka(
            wait_for_partitions, consumer, kafka.topic, max(1.0, deadline - time.monotonic())
        )
        self._freshness = await self._start_freshness()  # before the first assignment
        topics = [kafka.topic]
        if self.config.parking.enabled:  # co-partitioned: the range assignor keeps p together
            topics += await self._in_kafka(ensure_parking_topics, self.config)
        await self._in_kafka(consumer.subscribe, topics, None, Rebalance(self))
        self._consumer = consumer
        if not rejoin_workaround_applies(consumer):
            log.warning(
                "this kafka-python has changed: a rebalance it drops is not recovered "
                "(consumer/broker/kafka_clients.py rejoin_if_join_dropped)"
            )
        self._dispatcher = Dispatcher(self.config)
        self._pipeline = Pipeline(
            self.config,
            self._dispatcher,
            DeadLetterWriter(self._producer, kafka.dead_letter_topic),
            self.tracker,
        )
        self._pipeline.freshness = self._freshness
        if self.config.parking.enabled:
            self._parking = Parking(
                self.config, self._producer, self.tracker, self._dispatcher.breakers
            )
            self._pipeline.parking = self._parking
            pipeline = self._pipeline
            self._parking_task = asyncio.ensure_future(
                self._parking.run(pipeline.waiting_of, pipeline.take_queued)
            )
        self._control.attach(self._dispatcher.breakers, self._pipeline)
        log.info("consuming", extra={"fields": {"topic": kafka.topic, "group": kafka.group_id}})

    # --- the poll loop ------------------------------------------------------------------------
    async def _consume(self) -> None:
        assert self._consumer is not None and self._pipeline is not None
        consumed = metrics.EVENTS_CONSUMED.labels(self.config.kafka.topic)
        try:
            while not self._stopping.is_set():
                batches = await self._in_kafka(self._poll_once)
                parking = self._parking
                if parking is not None:  # parked records first: they are older than the rest
                    first = [tp for tp in batches if parking.is_parking_topic(tp.topic)]
                    batches = {tp: batches[tp] for tp in [*first, *batches.keys() - set(first)]}
                for tp, records in batches.items():
                    if parking is not None and parking.is_parking_topic(tp.topic):
                        parking.read(tp, records[-1].timestamp)
                    else:
                        consumed.inc(len(records))
                    parsed = [parse_record(r.value, r.headers) for r in records]
                    if self._freshness is not None:  # one store read for the whole batch
                        self._freshness.read_ahead(tp.partition, parsed)
                    for r, event in zip(records, parsed, strict=True):
                        source = SourceRecord(
                            r.topic,
                            r.partition,
                            r.offset,
                            r.timestamp,
                            r.key,
                            r.value,
                            tuple(r.headers or ()),
                        )
                        self._pipeline.submit(source, event, tp)
                await self._maybe_commit()
                await asyncio.sleep(0)
        finally:
            await self._shutdown()

    def _poll_once(self) -> dict[TopicPartition, list[Any]]:
        """Kafka thread: poll, then pause or resume by how much is unfinished."""
        assert self._consumer is not None
        try:
            batches: dict[TopicPartition, list[Any]] = self._consumer.poll(timeout_ms=100)
            self.health.polled(self._coordinator_known())
        except KafkaError as error:
            log.warning("poll failed", extra={"fields": {"error": str(error)}})
            time.sleep(0.5)
            return {}
        if rejoin_if_join_dropped(self._consumer):
            log.warning("kafka-python dropped a finished rebalance; joining the group again")
        held = self._held()
        self._flow_control(held)
        self._put_back_held(batches, held)
        if self._parking is not None:
            self._parking.take_probe(batches, self._consumer)
            self._parking.refresh(self._consumer)
        if time.monotonic() - self._last_lag > LAG_REFRESH_S:
            self._refresh_lag()
        return batches

    def _put_back_held(
        self, batches: dict[TopicPartition, list[Any]], held: set[TopicPartition]
    ) -> None:
        """Records of a partition held now were fetched before it was (a connection started
        parking while a fetch of its parking partition was under way): they are not taken,
        and the partition is read from the first of them once it is let go. Taken, parked
        events came straight back and waited in memory, and never expired."""
        assert self._consumer is not None
        for tp in [tp for tp in batches if tp in held]:
            self._consumer.seek(tp, batches.pop(tp)[0].offset)

    def _coordinator_known(self) -> bool:
        """Whether the group coordinator answers. poll() returns quietly while the broker is
        gone, so readiness asks the coordinator (kafka-python has no public call for it)."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        unknown = getattr(coordinator, "coordinator_unknown", None)
        return not unknown() if callable(unknown) else True

    def _flow_control(self, held: set[TopicPartition]) -> None:
        """Pause what is ``held`` (``_held``), and everything while the buffer is full."""
        assert self._consumer is not None
        dispatch = self.config.dispatch
        unfinished, uncommitted = self.tracker.unfinished(), self.tracker.uncommitted()
        # Memory follows the unfinished records; the uncommitted span (one slow record
        # holding the commit point while the rest finish) costs an offset each and bounds
        # what a restart re-delivers.
        load = max(unfinished / dispatch.max_buffered, uncommitted / dispatch.max_uncommitted)
        paused = self._consumer.paused()
        if hold := (held & self._consumer.assignment()) - paused:  # e.g. a connection parks
            self._consumer.pause(*hold)
            paused = paused | hold
        if load >= 1:
            unpaused = self._consumer.assignment() - paused
            if unpaused:
                self._consumer.pause(*unpaused)
                fields = {"unfinished": unfinished, "uncommitted": uncommitted}
                log.info("buffer full, fetching paused", extra={"fields": fields})
        elif (resumable := paused - held) and load <= RESUME_FRACTION:
            self._consumer.resume(*resumable)
        metrics.PAUSED_PARTITIONS.set(len(self._consumer.paused()))
        metrics.BUFFERED_EVENTS.set(unfinished)

    def _refresh_lag(self) -> None:
        assert self._consumer is not None
        self._last_lag = time.monotonic()
        assignment = self._consumer.assignment()
        try:
            ends = (
                self._consumer.end_offsets(list(assignment), timeout_ms=BROKER_CALL_MS)
                if assignment
                else {}
            )
        except KafkaError:  # readiness is the poll's to tell (coordinator known or not)
            return
        committed = self.tracker.last_committed()
        for tp, end in ends.items():
            position = committed.get(tp)
            if position is None:
                try:
                    position = self._consumer.committed(tp, timeout_ms=BROKER_CALL_MS) or 0
                except KafkaError:
                    continue
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - position))

    def resume(self, assigned: set[TopicPartition]) -> None:
        """Rebalance (IO thread): a partition that comes straight back keeps kafka-python's
        fetch position, past the work dropped at revocation; fetch that work again."""
        assert self._consumer is not None
        for tp in assigned:
            offset = self._resume_at.get(tp)
            if offset is not None:
                self._consumer.seek(tp, offset)
        self._resume_at.clear()

    def refresh_lag_soon(self) -> None:
        self._last_lag = 0.0

    # --- freshness (consumer/state/freshness.py) -----------------------------------------------
    async def _start_freshness(self) -> Freshness | None:
        """The changelog topic exists, and the state of assigned partitions can be restored."""
        if not self.config.freshness.enabled:
            return None
        partitions = await self._in_kafka(ensure_changelog_topic, self.config)
        freshness = Freshness(self.config, partitions)
        await freshness.start(self.tracker.finish)
        return freshness

    def hold(self, assigned: set[TopicPartition]) -> None:
        """Rebalance (IO thread): pause new partitions until their state is restored; the
        poll loop resumes each once it is (``_held``)."""
        if self._consumer is None or not assigned:
            return
        if self._parking is not None:  # held until their parking partitions were looked at
            self._parking.assigned(assigned)
        if self._freshness is not None:
            topic = self.config.kafka.topic
            self._freshness.assign(tp.partition for tp in assigned if tp.topic == topic)
        if self._freshness is not None or self._parking is not None:
            self._consumer.pause(*assigned)

    def _held(self) -> set[TopicPartition]:
        """What stays paused whatever the load: partitions whose freshness state is being
        restored, and what parking holds (consumer/delivery/parking.py)."""
        held = set() if self._parking is None else self._parking.held()
        if self._freshness is not None:
            topic = self.config.kafka.topic
            held |= {TopicPartition(topic, p) for p in self._freshness.not_ready()}
        return held

    # --- commits ------------------------------------------------------------------------------
    async def _maybe_commit(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_commit < (
            self.config.dispatch.commit_interval_s
        ):
            return
        self._last_commit = time.monotonic()
        offsets = self.tracker.to_commit()
        if offsets:
            await self._in_kafka(self._commit, offsets)

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(offsets, timeout_ms=BROKER_CALL_MS)
            self.tracker.committed(offsets)
        except (CommitFailedError, KafkaError) as error:
            log.warning("commit failed; will retry", extra={"fields": {"error": str(error)}})

    def release(self, partitions: set[TopicPartition], *, commit: bool) -> None:
        """Rebalance (IO thread): let in-flight work of these partitions finish (briefly),
        commit what is finished, drop the rest; the new owner consumes it again."""
        if commit and self._loop is not None and self._pipeline is not None:
            settled = asyncio.run_coroutine_threadsafe(
                self._pipeline.settle(partitions, REVOKE_GRACE_S), self._loop
            )
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                settled.result(REVOKE_GRACE_S + 1)
        if (
            commit
            and self._loop is not None
            and self._freshness is not None
            and self._freshness.pending(source := self._source_partitions(partitions))
        ):
            written = asyncio.run_coroutine_threadsafe(  # freshness: finish what was learned
                self._freshness.settle(source, 1.0), self._loop
            )
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                written.result(2.0)
        if commit and self._consumer is not None:
            offsets = self.tracker.to_commit(partitions)
            if offsets:
                self._consumer.commit_async(offsets)
        for tp in partitions:
            offset = self.tracker.first_unfinished(tp)
            if offset is not None:
                self._resume_at[tp] = offset
        self.tracker.drop(partitions)
        for tp in partitions:  # a lag this member no longer measures must not stay behind
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        if self._loop is not None and self._pipeline is not None:
            self._loop.call_soon_threadsafe(self._pipeline.drop, partitions)
        if self._freshness is not None:  # after the drop: nothing of theirs is learned then
            topic = self.config.kafka.topic
            self._freshness.revoke(tp.partition for tp in partitions if tp.topic == topic)
        if self._parking is not None:
            self._parking.revoked(partitions)
        log.info(
            "partitions released",
            extra={
                "fields": {
                    "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in partitions),
                    "committed": commit,
                }
            },
        )

    def _source_partitions(self, partitions: set[TopicPartition]) -> set[int]:
        return {tp.partition for tp in partitions if tp.topic == self.config.kafka.topic}

    # --- shutdown -----------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        """Finish in-flight work within the grace period, commit, close. Nothing is
        dead-lettered merely because of the shutdown: unfinished records stay uncommitted."""
        if self._pipeline is not None:
            grace = self.config.dispatch.shutdown_grace_s
            if not await self._pipeline.wait_stoppable(grace):
                log.warning(
                    "grace period over; unfinished records will be consumed again",
                    extra={"fields": {"unfinished": self.tracker.unfinished()}},
                )
            await self._pipeline.cancel_all()
            if self._parking_task is not None:  # what is not parked yet stays uncommitted
                self._parking_task.cancel()
            if self._freshness is not None:  # what was learned is written, then committed
                await self._freshness.close(FRESHNESS_CLOSE_S)
            await self._maybe_commit(force=True)
            await self._dispatcher.close()
        if self._consumer is not None:
            await self._in_kafka(self._close_consumer)
        if getattr(self, "_producer", None) is not None:
            await self._in_kafka(self._producer.close, 10)
        if self._control is not None:  # its report removed: this replica is gone
            await self._control.close()
        if getattr(self, "_state", None) is not None:
            connection_state.use(None)
            await self._state.close()
        log.info("stopped")

    def _close_consumer(self) -> None:
        assert self._consumer is not None
        self._consumer.close(autocommit=False)
