"""From consumed records to finished offsets: per-asset order, parallel everything else.

Each asset (vendor, connection, asset id) has a queue delivered strictly in arrival order;
different assets run concurrently. Each connection (vendor + connection name: one tenant)
has a lane, a bounded set of workers, each delivering one asset's queue at a time, back-off
included, and each delivery also holds a slot of the whole service: a connection that is
slow, rate-limited or down can only ever take its own share, so its sibling connections and
the other vendors keep flowing (a batched vendor's share counts calls, not deliveries).
Assets waiting for a worker cost no task, only their queued records. Every record ends
delivered or dead-lettered (the dead-letter acknowledged), and only then is its offset
finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from kafka.structs import TopicPartition

from consumer.broker.dead_letter import DeadLetterWriter, SourceRecord
from consumer.broker.kafka_clients import PublishFailed
from consumer.broker.offsets import OffsetTracker
from consumer.config import Config
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.parking import Parking
from consumer.delivery.recent import RecentIds
from consumer.events import Event, Rejection
from consumer.outcome import Outcome
from consumer.reasons import Reason
from consumer.state.freshness import Freshness
from consumer.telemetry import metrics
from consumer.telemetry.logs import about_event, get_logger, reset_event
from consumer.telemetry.tracing import finish
from consumer.vendors import VENDORS

if TYPE_CHECKING:
    from consumer.state.freshness import Verdict
    from consumer.telemetry.tracing import Span, Tracing

log = get_logger("pipeline")
DEAD_LETTER_RETRY_S = (0.5, 1, 2, 5, 10, 30)
Asset = tuple[str, str, str]  # vendor, connection, asset id


@dataclass(eq=False)
class Lane:
    """One connection's share of the service: at most ``limit`` workers, and the assets that
    wait for one. What the connection's vendor does (hang, fail, refuse) stays in here."""

    connection: tuple[str, str]  # vendor, connection name
    limit: int
    slots: AbstractAsyncContextManager[Any]  # the all-vendors count, or none (batched)
    counted: bool  # configured: its deliveries under way show in asset_sync_inflight_events
    coalesce: bool = False  # the connection's ``coalesce``: see Pipeline._deliver_run
    ready: deque[Asset] = field(default_factory=deque)  # queued work, no worker yet
    workers: int = 0


@dataclass(eq=False, slots=True)
class Work:
    record: SourceRecord
    event: Event
    tp: TopicPartition
    dropped: bool = False
    waiting: Waiting | None = None  # its connection's, while it is unfinished here
    span: Span | None = None  # its ``consume`` span while tracing is on (telemetry/tracing.py)
    held: bool = False  # waiting for its connection to be resumed: nothing of it is sent
    # coalescing (Pipeline._deliver_run):
    riding: bool = False  # on the wire in the request of an update queued before it
    finished: bool = False  # its offset finished while it was part of a run
    alone: bool = False  # its run was refused: it goes in a request of its own


class Merged(NamedTuple):
    """A run of an asset's queue as one request (Pipeline._merge)."""

    event: Event | None  # the update sent: the run's merged; None when all were skipped
    sent: list[tuple[Work, Verdict | None]]  # the events it delivers, each with its verdict
    skipped: list[tuple[Work, str]]  # skipped for one of those ("duplicate", "stale")
    used: int  # how many of the run, from its head, it settles


# One configured connection's unfinished events (queued or in flight), each with when it was
# accepted, oldest first: a dict keeps insertion order and forgets any entry in O(1), so the
# count and the oldest age are read at scrape time from its size and first entry, without
# walking the events (consumer/telemetry/metrics.py).
Waiting = dict[Work, float]


class Pipeline:
    freshness: Freshness | None = None  # set by the service when freshness.enabled
    parking: Parking | None = None  # set by the service when parking.enabled

    def __init__(
        self,
        config: Config,
        dispatcher: Dispatcher,
        dead_letters: DeadLetterWriter,
        tracker: OffsetTracker,
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.dead_letters = dead_letters
        self.tracker = tracker
        self.recent = RecentIds(config.dispatch.dedup_window_s)
        dispatch = config.dispatch
        self._all_slots = asyncio.Semaphore(dispatch.max_in_flight)
        if dispatch.max_in_flight_per_vendor is not None:
            log.warning(
                "dispatch.max_in_flight_per_vendor is deprecated: it now sets "
                "dispatch.max_in_flight_per_connection; rename it",
                extra={"fields": {"per_connection": dispatch.max_in_flight_per_connection}},
            )
        # One lane per connection (vendor, connection name), made when its first record
        # comes and let go when it is idle, so that connection names an event makes up cost
        # nothing lasting. Gauge children exist for configured connections only: a label
        # value is never taken from an event.
        self._lanes: dict[tuple[str, str], Lane] = {}
        # Deliveries under way per configured connection, read when /metrics is scraped: a
        # gauge's inc() and dec() take a lock each, twice per event (bench/RESULTS.md).
        self._in_flight = {
            (v, name): 0 for v, named in config.connections.items() for name in named
        }
        for key in self._in_flight:
            metrics.INFLIGHT.labels(*key).set_function(partial(self._in_flight.__getitem__, key))
        self._waiting: dict[tuple[str, str], Waiting] = {key: {} for key in self._in_flight}
        metrics.CONNECTION_BACKLOG.watch(self)
        self._queues: dict[Asset, deque[Work]] = {}
        self._drains: dict[Asset, asyncio.Task[None]] = {}  # asset -> worker
        self._closing = False
        # label children looked up once: labels() costs more than the increment itself
        self._delivered = {v: metrics.EVENTS_DELIVERED.labels(v) for v in VENDORS}
        self._latency = {v: metrics.EVENT_DELIVERY.labels(v) for v in VENDORS}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    # --- intake -----------------------------------------------------------------------------
    def submit(
        self, record: SourceRecord, parsed: Event | Rejection, tp: TopicPartition | None = None
    ) -> None:
        """Take a record (``tp``: its partition, when the caller has it: the poll loop's is
        one per batch)."""
        if tp is None:
            tp = TopicPartition(record.topic, record.partition)
        self.tracker.add(tp, record.offset)
        self._idle.clear()
        if isinstance(parsed, Rejection):
            self._spawn(
                self._dead_letter(
                    record,
                    tp,
                    parsed.reason,
                    parsed.message(),
                    vendor=parsed.vendor,
                    event_id=parsed.event_id,
                    trace=(parsed.traceparent, parsed.tracestate),
                )
            )
            return
        parking = self.parking
        if parking is not None:  # parking hook (consumer/delivery/parking.py)
            if parking.diverts(tp, parsed.vendor, parsed.connection):
                parking.park(tp, record, (parsed.vendor, parsed.connection))
                return
            if parking.is_parking_topic(tp.topic) and parking.expired(record.timestamp):
                self._spawn(self._expire(record, tp, parsed))
                return
        work = Work(record, parsed, tp)
        key = parsed.asset_key
        waiting = self._waiting.get(key[:2])
        if waiting is not None:  # a configured connection: counted until finished
            work.waiting = waiting
            waiting[work] = time.monotonic()
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(work)
        else:
            self._queues[key] = deque([work])
            lane = self._lanes.get(key[:2]) or self._open_lane(parsed.vendor, parsed.connection)
            lane.ready.append(key)
            self._start_worker(lane)

    def take_queued(
        self, connection: tuple[str, str], movable: Callable[[str], bool]
    ) -> list[tuple[TopicPartition, SourceRecord]]:
        """Parking starts (consumer/delivery/parking.py): hand over the connection's records
        of ``movable`` topics, the ones under way included (an update on the wire then may
        arrive twice). Per asset only the tail after the last record that stays (one read
        back from parking) goes, so order is kept; and the source's commit point is not held
        by a connection that is down."""
        taken: list[tuple[TopicPartition, SourceRecord]] = []
        lane = self._lanes.get(connection)
        for key, queue in list(self._queues.items()):
            if key[:2] != connection:
                continue
            keep = len(queue)
            while keep and movable(queue[keep - 1].tp.topic):
                keep -= 1
            for work in list(queue)[keep:]:
                work.dropped = True
                self._unwait(work)
                taken.append((work.tp, work.record))
            worker = self._drains.get(key)
            if keep == 0 and worker is not None and queue:  # its head is being delivered:
                while len(queue) > 1:  # the worker lets it go once cancelled
                    queue.pop()
                worker.cancel()
                continue
            while len(queue) > keep:
                queue.pop()
            if not queue:  # none under way: it waited for a worker
                del self._queues[key]
                if lane is not None:
                    with contextlib.suppress(ValueError):
                        lane.ready.remove(key)
        return taken

    async def _expire(self, record: SourceRecord, tp: TopicPartition, event: Event) -> None:
        age_s = time.time() - record.timestamp / 1000
        await self._dead_letter(
            record,
            tp,
            Reason.EXPIRED,
            f"parked for {age_s:.0f} s, longer than parking.max_age_s",
            vendor=event.vendor,
            event_id=event.id,
            trace=(event.traceparent, event.tracestate),
        )

    def drop(self, partitions: set[TopicPartition]) -> None:
        """Partitions were revoked: stop their work; the new owner will consume it again."""
        for key, queue in self._queues.items():
            for work in queue:
                if work.tp in partitions:
                    work.dropped = True
                    self._unwait(work)  # the new owner counts it
            worker = self._drains.get(key)
            if worker is not None and queue and queue[0].dropped:  # being delivered: cancel
                worker.cancel()

    async def settle(self, partitions: set[TopicPartition], grace_s: float) -> None:
        """Partitions are about to be revoked: start nothing more of theirs, and give what is
        already on the wire up to ``grace_s`` to finish. A request cancelled on the wire may
        still be applied, and the new owner would send it again (a rebalance right after a
        start or a deploy made one duplicate nearly every time)."""
        in_flight = []
        for key, queue in self._queues.items():
            for index, work in enumerate(queue):
                if work.tp not in partitions:
                    continue
                if (index == 0 and key in self._drains and not work.held) or work.riding:
                    in_flight.append((key, work))
                else:
                    work.dropped = True
                    self._unwait(work)
            worker = self._drains.get(key)
            if worker is not None and queue and queue[0].dropped:  # held by a pause: cancel
                worker.cancel()
        deadline = time.monotonic() + grace_s
        while in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            in_flight = [(k, w) for k, w in in_flight if (q := self._queues.get(k)) and w in q]

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is queued or in flight; False when time ran out."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def wait_stoppable(self, timeout_s: float) -> bool:
        """Shutdown: wait until nothing is in flight, and what is left is only work of paused
        connections, which would wait for the resume (it stays uncommitted for the next
        owner); False when time ran out first."""
        deadline = time.monotonic() + timeout_s
        while not self._idle.is_set() and not self._only_paused_left():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _only_paused_left(self) -> bool:
        breakers = self.dispatcher.breakers
        for key, queue in self._queues.items():
            head = queue[0] if queue else None
            if head is not None and head.held:
                continue
            breaker = breakers.get(key[:2])
            if key in self._drains or breaker is None or not breaker.paused:
                return False  # on its way, or of a connection that is not paused
        return True

    async def cancel_all(self) -> None:
        """Shutdown: stop what is left without dead-lettering it; it stays uncommitted."""
        self._closing = True
        for queue in self._queues.values():
            for work in queue:
                work.dropped = True
        for waiting in self._waiting.values():
            waiting.clear()  # nothing waits here any more: the next owner has it
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def waiting_of(self, connection: tuple[str, str]) -> tuple[int, float]:
        """A configured connection's unfinished events (queued or in flight): how many, and
        the seconds the oldest has waited since it was accepted."""
        waiting = self._waiting.get(connection)
        if not waiting:
            return 0, 0.0
        return len(waiting), time.monotonic() - next(iter(waiting.values()))

    def backlog(self) -> Iterator[tuple[str, str, int, float]]:
        """Each configured connection's unfinished events: (vendor, connection, how many,
        seconds the oldest has waited since it was accepted). 0 and 0 when none waits."""
        for vendor, connection in self._waiting:
            yield vendor, connection, *self.waiting_of((vendor, connection))

    @staticmethod
    def _unwait(work: Work) -> None:
        if work.waiting is not None:
            work.waiting.pop(work, None)

    # --- work -------------------------------------------------------------------------------
    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pipeline task failed", exc_info=task.exception())
        if not self._tasks:
            self._idle.set()

    def _open_lane(self, vendor: str, connection: str) -> Lane:
        """A connection's share: ``max_in_flight_per_connection`` workers, each holding a
        slot of the whole service while it delivers. A batched vendor's call carries up to
        ``batch_max`` deliveries, so its lane counts calls (that many workers per call),
        outside the all-vendors count; counting deliveries would cap a call at a few."""
        dispatch = self.config.dispatch
        batched = VENDORS[vendor].batched
        settings = self.config.connection(vendor, connection)
        lane = Lane(
            connection=(vendor, connection),
            limit=dispatch.max_in_flight_per_connection * (dispatch.batch_max if batched else 1),
            slots=contextlib.nullcontext() if batched else self._all_slots,
            counted=(vendor, connection) in self._in_flight,
            coalesce=settings is not None and bool(settings.get("coalesce")),
        )
        self._lanes[(vendor, connection)] = lane
        return lane

    def _start_worker(self, lane: Lane) -> None:
        if lane.ready and lane.workers < lane.limit:
            lane.workers += 1
            self._spawn(self._work(lane))

    async def _work(self, lane: Lane) -> None:
        """One worker: drain the lane's ready assets one at a time, then end."""
        ready = lane.ready
        try:
            task = asyncio.current_task()
            assert task is not None
            while ready:
                key = ready.popleft()
                self._drains[key] = task
                await self._drain(key, lane)
        finally:
            lane.workers -= 1
            if not self._closing:
                self._start_worker(lane)  # a worker that failed is replaced
            if not (lane.workers or lane.ready) and self._lanes.get(lane.connection) is lane:
                del self._lanes[lane.connection]  # idle: the next record opens a new lane

    async def _drain(self, key: Asset, lane: Lane) -> None:
        """Deliver one asset's queue in order. ``drop`` cancels the worker to stop the work
        being delivered; that cancellation is absorbed here, and the queue goes on."""
        queue = self._queues[key]
        tracing = self.dispatcher.tracing  # None when off: then no span, no extra step
        coalesce = lane.coalesce and tracing is None  # a traced event keeps a span of its own
        try:
            while queue:
                work = queue[0]
                if not (work.dropped or work.finished):
                    try:
                        if tracing is not None:
                            await self._deliver_traced(work, lane, tracing)
                        elif not coalesce or work.alone:
                            await self._deliver(work, lane)
                        elif not await self._deliver_run(queue, lane):
                            continue  # refused together: now one at a time
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if task is not None and task.uncancel() > 0:
                            raise  # cancelled by someone else as well
                        if not work.dropped:
                            continue  # the cancel was meant for work that finished: again
                self._unwait(queue.popleft())
        finally:
            for work in queue:  # cancelled by someone else: none of it is waiting any more
                self._unwait(work)
            del self._queues[key]
            self._drains.pop(key, None)

    async def _deliver(self, work: Work, lane: Lane) -> None:
        """Deliver one record; a bug of ours ends in a dead-letter record, never in an
        offset that waits forever (the worker would otherwise drop its whole queue). Lines
        logged meanwhile about the event carry its asset id and source (telemetry/logs.py)."""
        token = about_event(work.event)
        try:
            await self._deliver_or_raise(work, lane)
        except Exception as error:  # CancelledError (a drop, a shutdown) is not one
            log.error(
                "delivery failed unexpectedly",
                exc_info=error,
                extra={"fields": {"event_id": work.event.id, "vendor": work.event.vendor}},
            )
            await self._dead_letter(
                work.record,
                work.tp,
                Reason.INTERNAL_ERROR,
                self.dispatcher.redact(f"{type(error).__name__}: {error}"),
                vendor=work.event.vendor,
                event_id=work.event.id,
                trace=(work.event.traceparent, work.event.tracestate),
                span=work.span,
            )
        finally:
            reset_event(token)

    async def _deliver_traced(self, work: Work, lane: Lane, tracing: Tracing) -> None:
        """``_deliver`` in the event's ``consume`` span (consumer/telemetry/tracing.py)."""
        record = work.record
        with tracing.consume(work.event, record.topic, record.partition, record.offset) as span:
            work.span = span
            try:
                await self._deliver(work, lane)
            finally:
                work.span = None

    async def _wait_while_paused(self, work: Work, lane: Lane) -> None:
        """An operator paused the connection (consumer/state/control.py): wait here, before
        taking a slot of the all-vendors count, so that paused work holds none of it."""
        breaker = self.dispatcher.breakers.get(lane.connection)
        if breaker is not None and breaker.paused:
            work.held = True
            try:
                await breaker.resumed()
            finally:
                work.held = False

    async def _deliver_or_raise(self, work: Work, lane: Lane) -> None:
        event = work.event
        if self._duplicate(work):
            return
        # freshness hook (consumer/state/freshness.py): take out the fields a newer update set
        freshness = self.freshness
        verdict = None if freshness is None else await freshness.check(work.tp.partition, event)
        if verdict is not None:
            if self._stale(work, verdict):
                return
            event = verdict.event
        await self._wait_while_paused(work, lane)
        outcome = await self._send(event, lane, 1)
        if work.dropped:
            return
        if outcome.delivered:
            self._delivered[event.vendor].inc()
            self._finish_delivered(work, verdict, outcome.attempts)
        else:
            await self._finish_failed(work, outcome)

    def _duplicate(self, work: Work) -> bool:
        """Skip (and finish) an event whose source and id were delivered recently."""
        event = work.event
        if not self.recent.seen((event.source, event.id)):  # CloudEvents identity
            return False
        self._skip(work, "duplicate")
        return True

    def _stale(self, work: Work, verdict: Verdict) -> bool:
        """Skip (and finish) an event of which freshness left nothing to deliver."""
        if not verdict.nothing_left:
            return False
        self._skip(work, "stale")
        return True

    def _skip(self, work: Work, why: str) -> None:
        """Finish an event that is not sent: a ``duplicate`` or a ``stale`` one."""
        if why == "duplicate":
            metrics.EVENTS_DUPLICATE.labels(work.event.vendor).inc()
        self._log(f"{why} skipped", work, why, 0)
        self.tracker.finish(work.tp, work.record.offset)

    async def _send(self, event: Event, lane: Lane, events: int) -> Outcome:
        """One delivery through the connection's share; ``events``: how many it carries."""
        async with lane.slots:
            if not lane.counted:  # no such connection: the dispatcher refuses it at once
                return await self.dispatcher.deliver(event)
            in_flight, connection = self._in_flight, lane.connection
            in_flight[connection] += events
            try:
                return await self.dispatcher.deliver(event)
            finally:
                in_flight[connection] -= events

    def _finish_delivered(self, work: Work, verdict: Verdict | None, attempts: int) -> None:
        """Everything a delivered event needs but the count (the caller's: one per run)."""
        event = work.event
        self.recent.add((event.source, event.id))  # CloudEvents identity: source and id
        if work.record.timestamp > 0:
            self._latency[event.vendor].observe(
                max(0.0, time.time() - work.record.timestamp / 1000)
            )
        self._log("delivered", work, "delivered", attempts)
        if self.freshness is not None and verdict is not None:  # freshness hook: finished
            self.freshness.learned(work.tp, work.record.offset, verdict)  # once it is written
        else:
            self.tracker.finish(work.tp, work.record.offset)

    async def _finish_failed(self, work: Work, outcome: Outcome) -> None:
        event = work.event
        await self._dead_letter(
            work.record,
            work.tp,
            outcome.reason or Reason.VENDOR_REJECTED,
            outcome.error,
            outcome=outcome,
            vendor=event.vendor,
            event_id=event.id,
            trace=(event.traceparent, event.tracestate),
            span=work.span,
        )

    # --- coalescing -------------------------------------------------------------------------
    async def _deliver_run(self, queue: deque[Work], lane: Lane) -> bool:
        """The connection coalesces (its ``coalesce`` key): the head of an asset's queue and
        the updates queued right behind it that one update can stand for (the vendor
        module's ``follows`` and ``fold``: later fields win) go in one request, as Kafka
        Streams' record cache folds a table's updates, so a drain or a replay sends one
        request where it would send several. Each event is still finished, skipped or
        dead-lettered by itself, and the riders are taken off the queue here (the caller
        takes the head). False when the vendor refused the merged update: each then goes in
        a request of its own, so that one bad update never takes its neighbours with it."""
        await self._wait_while_paused(queue[0], lane)  # what comes meanwhile joins the run
        run = self._run(queue)
        if len(run) == 1:
            await self._deliver(run[0], lane)
            return True
        token = about_event(run[0].event)
        try:
            used = await self._deliver_together(run, lane)
        except Exception as error:  # a bug of ours: each goes alone, through _deliver's net
            log.error(
                "coalesced delivery failed unexpectedly",
                exc_info=error,
                extra={"fields": {"event_id": run[0].event.id, "vendor": run[0].event.vendor}},
            )
            used = 0
        finally:
            reset_event(token)
            for work in run:
                work.riding = False
        if not used:
            for work in run:
                work.alone = True
            return False
        for rider in run[1:used]:
            if len(queue) > 1 and queue[1] is rider:
                self._unwait(rider)
                del queue[1]
        return True

    def _run(self, queue: deque[Work]) -> list[Work]:
        """The head and the updates right behind it that may share its request: from the
        same partition, none refused together before, at most ``dispatch.batch_max``, each
        one the vendor module says ``follows`` the head's target."""
        head = queue[0]
        client = VENDORS[head.event.vendor]
        target = client.target(head.event.data)
        run = [head]
        limit = self.config.dispatch.batch_max
        for work in itertools.islice(queue, 1, limit):
            if (
                work.tp != head.tp
                or work.dropped
                or work.alone
                or not client.follows(target, work.event.data)
            ):
                break
            run.append(work)
        return run

    async def _deliver_together(self, run: list[Work], lane: Lane) -> int:
        """Deliver a run as one request: how many of it (from its head) are settled, 0 when
        the vendor refused the merged update (none is)."""
        merged = await self._merge(run)
        if merged.event is None:  # every one of them skipped
            return merged.used
        for work, _ in merged.sent:
            work.riding = True
        outcome = await self._send(merged.event, lane, len(merged.sent))
        together = len(merged.sent) + len(merged.skipped) > 1
        if not outcome.delivered and outcome.reason is Reason.VENDOR_REJECTED and together:
            return 0
        if outcome.delivered and len(merged.sent) > 1:
            metrics.EVENTS_COALESCED.labels(merged.event.vendor).inc(len(merged.sent) - 1)
        settle = [*merged.sent, *((work, None) for work, _ in merged.skipped)]
        skipped = dict(merged.skipped)
        delivered = 0
        try:
            for work, verdict in settle:
                if work.dropped:
                    continue
                token = about_event(work.event)
                try:
                    if not outcome.delivered:
                        await self._finish_failed(work, outcome)
                    elif work in skipped:
                        self._skip(work, skipped[work])
                    else:
                        self._finish_delivered(work, verdict, outcome.attempts)
                        delivered += 1
                finally:
                    reset_event(token)
                work.finished = True
        finally:
            if delivered:  # one count for the run
                self._delivered[merged.event.vendor].inc(delivered)
        return merged.used

    async def _check(self, work: Work, previous: Verdict | None) -> Verdict | None:
        """The freshness verdict of a run's event (``previous``: of what goes before it in
        the request), what freshness logs meanwhile carrying the event's asset id."""
        assert self.freshness is not None
        token = about_event(work.event)
        try:
            return await self.freshness.check(work.tp.partition, work.event, previous)
        finally:
            reset_event(token)

    async def _merge(self, run: list[Work]) -> Merged:
        """The run as one update, in order: each event checked as if the ones before it
        were delivered (freshness, duplicates), merged by the vendor module's rule, up to
        the first one it cannot merge. An event skipped for one that goes in this request
        (its duplicate, or one it makes stale) shares that request's fate; one skipped for
        what was delivered before is finished here."""
        freshness = self.freshness
        client = VENDORS[run[0].event.vendor]
        sent: list[tuple[Work, Verdict | None]] = []
        skipped: list[tuple[Work, str]] = []
        going: set[tuple[str, str]] = set()
        previous: Verdict | None = None  # the last verdict of what is sent
        first: Event | None = None
        data: dict[str, Any] = {}
        used = len(run)
        for index, work in enumerate(run):
            if work.dropped:  # parked or revoked meanwhile, and so is the rest
                used = index
                break
            event = work.event
            identity = (event.source, event.id)  # CloudEvents identity
            if identity in going:
                skipped.append((work, "duplicate"))
                continue
            if self._duplicate(work):
                work.finished = True
                continue
            verdict = None if freshness is None else await self._check(work, previous)
            if verdict is not None:
                if verdict.nothing_left:
                    if previous is not None:
                        skipped.append((work, "stale"))
                    else:
                        self._skip(work, "stale")
                        work.finished = True
                    continue
                event = verdict.event
            if first is None:
                first, data = event, event.data
            else:
                merged = client.fold(data, event.data)  # _run: each follows the head
                if merged is None:  # e.g. a map set whole, then entry by entry: the rest waits
                    used = index
                    break
                data = merged
            going.add(identity)
            sent.append((work, verdict))
            if verdict is not None:
                previous = verdict
        return Merged(first and replace(first, data=data), sent, skipped, used)

    async def _dead_letter(
        self,
        record: SourceRecord,
        tp: TopicPartition,
        reason: Reason,
        error: str,
        *,
        outcome: Outcome | None = None,
        vendor: str | None = None,
        event_id: str | None = None,
        trace: tuple[str | None, str | None] = (None, None),
        span: Span | None = None,
    ) -> None:
        """Write the dead-letter record, retrying until the broker acknowledges it; it
        carries the event's trace context (``trace``: traceparent, tracestate) as headers."""
        if span is not None:
            finish(span, "dead_lettered", outcome.attempts if outcome else 0, str(reason))
        for attempt in range(10**9):
            try:
                await self.dead_letters.write(
                    record,
                    reason,
                    error,
                    vendor=vendor,
                    status=outcome.status if outcome else None,
                    attempts=outcome.attempts if outcome else None,
                    traceparent=trace[0],
                    tracestate=trace[1],
                )
                break
            except PublishFailed as failure:
                log.warning(
                    "dead-letter write failed, retrying",
                    extra={"fields": {"offset": record.offset, "error": str(failure)}},
                )
                await asyncio.sleep(DEAD_LETTER_RETRY_S[min(attempt, len(DEAD_LETTER_RETRY_S) - 1)])
        metrics.EVENTS_DEAD_LETTERED.labels(vendor or "unknown", str(reason)).inc()
        fields: dict[str, Any] = {
            "event_id": event_id,
            "vendor": vendor,
            "outcome": "dead_lettered",
            "reason": str(reason),
            "attempts": outcome.attempts if outcome else 0,
            "status": outcome.status if outcome else None,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "error": error[:300],
        }
        log.warning("dead-lettered", extra={"fields": fields})
        self.tracker.finish(tp, record.offset)

    def _log(self, message: str, work: Work, outcome: str, attempts: int) -> None:
        if work.span is not None:
            finish(work.span, outcome, attempts)
        if not log.isEnabledFor(logging.INFO):  # one line per event: skip building it
            return
        log.info(
            message,
            extra={
                "fields": {
                    "event_id": work.event.id,
                    "vendor": work.event.vendor,
                    "outcome": outcome,
                    "attempts": attempts,
                    "topic": work.record.topic,
                    "partition": work.record.partition,
                    "offset": work.record.offset,
                }
            },
        )
