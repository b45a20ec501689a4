"""Per-field last-writer-wins: an update never overwrites a field with an older value.

Updates are partial, so the unit is the field (what one is: ``VendorClient.fields``, per
vendor). For every asset (vendor, connection, asset id) of a partition this remembers, per
field, the *order key* of the last value delivered. Before a delivery the fields whose
remembered key is newer are taken out of the update; an update left with none is ``stale``:
counted, logged and finished without a request or a dead-letter record.

Order key: the CloudEvents ``sequence`` extension when the event has one, else its ``time``;
an event with neither is delivered as it is and teaches nothing. Two keys compare only when
they are of the same kind (sequence with sequence, time with time); otherwise neither is
newer. Sequences that are decimal integers compare as numbers and come before every other
sequence; the others compare as strings, by Unicode code point (what the CloudEvents sequence
extension calls lexicographic). Times compare as instants, to the nanosecond, whatever their
offsets. An equal key is not newer: the update is delivered (a redelivery of the same event, or
two updates stamped in the same instant, where the later offset wins as it did before).

Encoded keys are strings that sort like the keys they stand for (``t`` + nanoseconds since
0001-01-01 on 21 digits; ``s0`` + digit count on 3 digits + digits; ``s1`` + the sequence), so
comparing two is one string comparison.

What is learned from source partition p is written, after the vendor's 2xx and before the
record's offset may be committed, to partition p of a compacted changelog topic, and read back
into a local store (consumer/state/freshness_store.py) when p is assigned, before any of p's records
is delivered. A crash between the 2xx and the changelog write delivers the update again.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import date
from functools import partial
from typing import Any, NamedTuple

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from consumer import json_codec
from consumer.broker.kafka_clients import make_producer
from consumer.config import Config
from consumer.events import Event
from consumer.state.freshness_store import (
    PartitionStore,
    Restorer,
    Snapshot,
    StoreDir,
    changelog_topic,
)
from consumer.telemetry import metrics
from consumer.telemetry.logs import get_logger
from consumer.vendors import VENDORS

log = get_logger("freshness")
RESET = "*"  # the field map's entry for "every field", set by an update that resets the asset
# Changelog writes go out at most this often, as one batch: kafka-python spends far more per
# produce request than per record, so fewer, larger writes keep the cost per event low. The
# offsets wait that much longer to be committable (commits go every second anyway).
FLUSH_INTERVAL_S = 0.25
WRITE_RETRY_S = (0.5, 1, 2, 5, 10, 30)
RECENT_ENTRY_KB = 1  # what one remembered field map costs in memory, rounded up
KEEP_S = 300.0  # how long a revoked partition's store is kept in case it comes straight back
READ_AHEAD_MAX = 50_000  # field maps read ahead and not used yet (beyond it the oldest go)
_TIME = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|([+-])(\d\d):(\d\d))$"
)
_EPOCH_DAYS = 1  # keeps 0001-01-01T00:00:00+14:00 (before day one) non-negative


# --- order keys ----------------------------------------------------------------------------
def sequence_key(sequence: str) -> str:
    if sequence.isascii() and sequence.isdigit():
        digits = sequence.lstrip("0") or "0"
        return f"s0{len(digits):03d}{digits}"
    return "s1" + sequence


def time_key(text: str) -> str | None:
    match = _TIME.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - 1 + _EPOCH_DAYS
    except ValueError:
        return None
    offset = 0 if sign is None else (int(off_h) * 60 + int(off_m)) * (1 if sign == "+" else -1)
    seconds = days * 86400 + int(hour) * 3600 + (int(minute) - offset) * 60 + int(second)
    nanos = int((fraction or "")[:9].ljust(9, "0"))
    return f"t{seconds * 1_000_000_000 + nanos:021d}"


def order_key(event: Event) -> str | None:
    """The event's order key, encoded; None when it has neither ``sequence`` nor ``time``."""
    if event.sequence is not None:
        return sequence_key(event.sequence)
    if event.time is not None:
        return time_key(event.time)
    return None


def newer(remembered: str | None, key: str) -> bool:
    """Whether a remembered key is newer than ``key`` (keys of different kinds never are)."""
    return remembered is not None and remembered[0] == key[0] and remembered > key


# --- the rule ------------------------------------------------------------------------------
class Verdict(NamedTuple):
    """What to deliver of an event, and what its delivery teaches (a tuple: one is made per
    event, on the hot path)."""

    event: Event  # the event with the stale fields taken out
    key: str
    asset: str  # vendor/connection/asset id: the changelog key
    fields: list[str]  # the fields delivered
    stale: list[str]  # the fields taken out
    reset: bool  # delivered as an update that resets every field of the asset
    snapshot: Snapshot | None  # what was remembered when it was decided

    @property
    def nothing_left(self) -> bool:
        return bool(self.stale) and not self.fields


def asset_of(event: Event) -> str:
    return f"{event.vendor}/{event.connection}/{event.data['asset_id']}"


def decide(event: Event, key: str, snapshot: Snapshot | None, asset: str | None = None) -> Verdict:
    """Take out of ``event`` the fields whose remembered key is newer than ``key``. A
    resetting update (EnOS ``replace``) would also clear fields it does not name: when any
    field of the asset is newer, it goes as a patch of its own fields instead."""
    client = VENDORS[event.vendor]
    data = event.data
    fields = client.fields(data)
    reset = client.resets(data)
    asset = asset or asset_of(event)
    if not snapshot:
        return Verdict(event, key, asset, fields, [], reset, snapshot)
    kind = key[0]  # newer(), inlined: this runs for every field of every event
    everything = newer(snapshot.get(RESET), key)
    stale = (
        fields
        if everything
        else [
            f
            for f in fields
            if (remembered := snapshot.get(f)) is not None
            and remembered[0] == kind
            and remembered > key
        ]
    )
    if reset and (stale or any(newer(k, key) for k in snapshot.values())):
        data, reset = client.as_patch(data), False
    if stale:
        gone = set(stale)
        data = client.without(data, gone)
        fields = [f for f in fields if f not in gone]
    if data is not event.data:
        event = replace(event, data=data)
    return Verdict(event, key, asset, fields, stale, reset, snapshot)


def learn(snapshot: Snapshot | None, verdict: Verdict) -> Snapshot:
    """The asset's field map once ``verdict`` was delivered."""
    if verdict.reset:
        return {RESET: verdict.key}
    learned = dict(snapshot or {})
    for name in verdict.fields:
        learned[name] = verdict.key
    return learned


# --- the service's side ----------------------------------------------------------------------
Asset = tuple[int, str]  # partition, vendor/connection/asset id
Finish = Callable[[TopicPartition, int], None]


class Freshness:
    """The pipeline asks ``check`` before a delivery and calls ``learned`` after a 2xx; the
    record's offset is finished once the changelog has what it taught. The rebalance listener
    calls ``assign`` and ``revoke``; the poll loop keeps ``not_ready`` partitions paused."""

    def __init__(self, config: Config, partitions: int) -> None:
        self.config = config
        self.topic = changelog_topic(config)
        self.producer: KafkaProducer | None = None  # made by start()
        self._loop = asyncio.get_running_loop()
        self._dir = StoreDir(config.freshness.store_dir)
        # A quarter of cache_mb is SQLite's page cache, shared out among the partitions; the
        # rest holds the field maps used last, so that an asset updated again soon costs no
        # SQLite call (each one lets the other threads take the GIL: measured, the look-ups
        # cost eight times as much in the service as alone).
        cache_kb = max(256, config.freshness.cache_mb * 256 // max(1, partitions))
        self._recent_max = config.freshness.cache_mb * 1024 * 3 // 4 // RECENT_ENTRY_KB
        self._recent: dict[Asset, Snapshot] = {}  # written field maps, oldest first
        self._restorer = Restorer(config, self._dir.path, cache_kb, self._restored_threadsafe)
        self._stores: dict[int, PartitionStore] = {}
        self._ends: dict[int, int] = {}  # per partition, the changelog end this process knows
        self._epochs: dict[int, int] = {}  # bumped when a partition is let go
        self._kept: dict[int, tuple[PartitionStore, int, float]] = {}
        self._ready: dict[int, asyncio.Event] = {}
        self._lock = threading.Lock()
        self._not_ready: dict[int, int] = {}  # partition -> generation being restored
        self._generation = 0
        self._overlay: dict[Asset, Snapshot] = {}  # learned, not yet in the store
        # read from the store for a polled batch; None: the store had nothing
        self._ahead: dict[Asset, Snapshot | None] = {}
        self._dirty: dict[Asset, list[tuple[TopicPartition, int]]] = {}  # waiting to be written
        self._writing: set[int] = set()  # partitions with records in the write under way
        self._finish: Finish | None = None
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._stale = {v: metrics.EVENTS_STALE.labels(v) for v in VENDORS}
        self._stale_fields = {v: metrics.STALE_FIELDS.labels(v) for v in VENDORS}

    async def start(self, finish: Finish) -> None:
        """Start writing and restoring; returns once the restore consumer is connected, so
        that connecting it never overlaps the group's first rebalance."""
        self._finish = finish
        # A producer of its own, lingering: writes come as a batch every FLUSH_INTERVAL_S,
        # sent in as few requests as fit (measured: 26% against 37% throughput cost with the
        # service's producer, whose 5 ms linger split each batch into many requests).
        self.producer = await self._loop.run_in_executor(
            None,
            partial(
                make_producer,
                self.config.kafka,
                "asset-sync-changelog",
                linger_ms=50,
                batch_size=1 << 20,
            ),
        )
        self._restorer.start()
        self._flusher = asyncio.ensure_future(self._flush_forever())
        await self._loop.run_in_executor(None, self._restorer.connected.wait, 30.0)

    # --- delivery (event loop) ---------------------------------------------------------------
    def read_ahead(self, partition: int, events: Iterable[Event | Any]) -> None:
        """Read the field maps of a polled batch's assets from the store in one query (loop).

        One SQLite call per event would let the other threads take the GIL once per event
        (measured: 55 µs an event in the service against 4 µs alone). What is read stays
        current: an asset learned later is dropped from here, and one learned before and
        not written yet is not read (``check`` finds it in the overlay)."""
        store = self._stores.get(partition)
        if store is None:  # not restored yet: check() reads it one by one
            return
        wanted = []
        for event in events:
            if isinstance(event, Event) and order_key(event) is not None:
                asset = (partition, asset_of(event))
                if asset not in self._overlay and asset not in self._recent:
                    wanted.append(asset[1])
        if not wanted:
            return
        found = store.get_many(wanted)
        ahead = self._ahead
        for name in wanted:
            ahead[(partition, name)] = found.get(name)
        while len(ahead) > READ_AHEAD_MAX:
            del ahead[next(iter(ahead))]

    async def check(
        self, partition: int, event: Event, after: Verdict | None = None
    ) -> Verdict | None:
        """None: the event has no order key and goes as it is. ``after``: the verdict of the
        asset's update that goes in the same request just before this one (coalescing,
        consumer/delivery/pipeline.py), not learned yet: this one is decided as if it had
        been."""
        key = order_key(event)
        if key is None:
            return None
        store = self._stores.get(partition)
        while store is None:  # its records are held until the restore is done: a safety net
            ready = self._ready.setdefault(partition, asyncio.Event())
            await ready.wait()
            store = self._stores.get(partition)
        asset = asset_of(event)
        held = (partition, asset)
        snapshot = learn(after.snapshot, after) if after is not None else self._overlay.get(held)
        if snapshot is None and after is None:
            snapshot = self._recent.get(held)
            if snapshot is None:
                ahead = self._ahead
                snapshot = ahead.pop(held) if held in ahead else store.get(asset)
        verdict = decide(event, key, snapshot, asset)
        if verdict.stale:
            self._stale_fields[event.vendor].inc(len(verdict.stale))
            if verdict.nothing_left:
                self._stale[event.vendor].inc()
            else:
                fields = {
                    "event_id": event.id,
                    "vendor": event.vendor,
                    "partition": partition,
                    "stale_fields": verdict.stale[:20],
                    "delivered_fields": verdict.fields[:20],
                }
                log.info("stale fields taken out", extra={"fields": fields})
        return verdict

    def learned(self, tp: TopicPartition, offset: int, verdict: Verdict) -> None:
        """The vendor accepted ``verdict.event``: remember it; the offset is finished once the
        changelog has it."""
        partition = tp.partition
        store = self._stores.get(partition)
        if store is None:  # revoked meanwhile: the new owner delivers it again
            return
        if not verdict.fields and not verdict.reset:  # it set nothing that can be remembered
            assert self._finish is not None
            self._finish(tp, offset)
            return
        asset = (partition, verdict.asset)
        # what check() read is still current: an asset's updates are delivered one at a time
        self._overlay[asset] = learn(verdict.snapshot, verdict)
        self._ahead.pop(asset, None)  # read before this was learned
        waiting = self._dirty.get(asset)
        if waiting is None:
            self._dirty[asset] = [(tp, offset)]
            self._wake.set()
        else:
            waiting.append((tp, offset))

    async def _flush_forever(self) -> None:
        attempt = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_INTERVAL_S)
            while self._dirty:
                try:
                    written = await self._flush()
                except Exception as error:  # a bug of ours must not stop every later write
                    log.error("freshness changelog write failed unexpectedly", exc_info=error)
                    written = False
                if written:
                    attempt = 0
                else:
                    await asyncio.sleep(WRITE_RETRY_S[min(attempt, len(WRITE_RETRY_S) - 1)])
                    attempt += 1

    async def _flush(self) -> bool:
        """Write the dirty assets to their stores and the changelog; finish the offsets of
        those acknowledged (acks=all). Failed ones stay dirty: their current map is written
        again, so a retry never puts an older map after a newer one."""
        batch, self._dirty = self._dirty, {}
        try:
            owners, records = self._store_batch(batch)
        except sqlite3.Error as error:  # e.g. a full disk: keep it all and try again later
            log.error("freshness store write failed", extra={"fields": {"error": str(error)}})
            for asset, waiters in batch.items():
                self._dirty.setdefault(asset, [])[:0] = waiters
            return False
        epochs = {p: self._epochs.get(p, 0) for p, _ in owners}
        self._writing = set(epochs)
        try:
            answers = await self._send(records)
        finally:
            self._writing = set()
        failed = 0
        finish = self._finish
        assert finish is not None
        for asset, answer in zip(owners, answers, strict=True):
            partition = asset[0]
            if self._epochs.get(partition, 0) != epochs[partition]:
                continue  # revoked meanwhile: those offsets belong to the next owner now
            if not answer.succeeded():
                failed += 1
                self._dirty.setdefault(asset, [])[:0] = batch[asset]
                continue
            end = answer.value.offset + 1
            if end > self._ends.get(partition, 0):
                self._ends[partition] = end
            for tp, record_offset in batch[asset]:
                finish(tp, record_offset)
        if failed:
            log.warning(
                "freshness changelog write failed; retrying",
                extra={"fields": {"records": failed, "topic": self.topic}},
            )
        return not failed

    def _store_batch(
        self, batch: dict[Asset, list[tuple[TopicPartition, int]]]
    ) -> tuple[list[Asset], list[tuple[int, bytes, bytes]]]:
        """Put the assets' current maps into their stores; the changelog records to send."""
        owners: list[Asset] = []
        records: list[tuple[int, bytes, bytes]] = []
        rows: dict[int, list[tuple[str, bytes]]] = {}
        for asset in batch:
            partition, name = asset
            store = self._stores.get(partition)
            if store is None:  # revoked: its offsets were given up
                continue
            snapshot = self._overlay.get(asset)
            if snapshot is None:
                snapshot = store.get(name) or {}
            value = json_codec.dumps(snapshot)
            rows.setdefault(partition, []).append((name, value))
            records.append((partition, name.encode(), value))
            owners.append(asset)
        for partition, partition_rows in rows.items():
            self._stores[partition].put_many(partition_rows)
        recent = self._recent
        for asset in owners:
            snapshot = self._overlay.pop(asset, None)
            if snapshot is not None:
                recent.pop(asset, None)
                recent[asset] = snapshot  # newest last
        while len(recent) > self._recent_max:
            del recent[next(iter(recent))]
        return owners, records

    async def _send(self, records: list[tuple[int, bytes, bytes]]) -> list[Any]:
        """Produce the records; their futures, every one done (acknowledged or failed).

        Only the last record of each partition reports back by callback (one callback per
        record costs a third as much as the send itself); the others are read from their
        futures once those are done."""
        if not records:
            return []
        done: asyncio.Future[None] = self._loop.create_future()
        futures: list[Any] = []
        left = [0]
        lock = threading.Lock()

        def answered(_: Any) -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self._loop.call_soon_threadsafe(_settle, done)

        producer = self.producer
        assert producer is not None

        def send_all() -> None:
            last: dict[int, Any] = {}
            for partition, key, value in records:
                future = producer.send(self.topic, key=key, value=value, partition=partition)
                futures.append(future)
                last[partition] = future
            left[0] = len(last)
            for future in last.values():  # one already done calls back at once
                future.add_callback(answered)
                future.add_errback(answered)

        try:
            await self._loop.run_in_executor(None, send_all)
        except (KafkaError, ValueError, AssertionError) as error:  # e.g. no metadata in time
            log.warning("freshness changelog send failed", extra={"fields": {"error": str(error)}})
            return [_FAILED] * len(records)  # those sent before may land: rewritten anyway
        await done
        while not all(f.is_done for f in futures):  # a batch retried behind a later one
            await asyncio.sleep(0.005)
        return futures

    # --- rebalances ----------------------------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> None:
        """Rebalance listener: these partitions' records wait until their restore is done."""
        with self._lock:
            started = []
            for partition in partitions:
                self._generation += 1
                self._not_ready[partition] = self._generation
                started.append((partition, self._generation))
        for partition, generation in started:
            self._loop.call_soon_threadsafe(self._start_restore, partition, generation)

    def not_ready(self) -> frozenset[int]:
        """Partitions assigned whose store is not restored yet (any thread)."""
        with self._lock:
            return frozenset(self._not_ready)

    async def settle(self, partitions: set[int], timeout_s: float) -> None:
        """Partitions are about to be revoked: write what they learned, so that their
        finished offsets can be committed (up to ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (
            any(p in partitions for p, _ in self._dirty) or self._writing & partitions
        ):
            await asyncio.sleep(0.005)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Rebalance listener: forget these partitions (after their work was dropped). They
        stay held (paused) until assigned again: nothing of theirs is read in between."""
        gone = set(partitions)
        with self._lock:
            for partition in gone:
                self._not_ready[partition] = 0  # no restore is under way for generation 0
        self._loop.call_soon_threadsafe(self._drop, gone)

    def pending(self, partitions: set[int]) -> bool:
        """Whether these partitions have learned something not written yet (any thread)."""
        dirty = list(self._dirty)  # one C-level copy: safe while the loop changes it
        return bool(self._writing & partitions) or any(p in partitions for p, _ in dirty)

    def _drop(self, partitions: set[int]) -> None:
        """Loop: unwritten knowledge of these partitions goes (the new owner delivers those
        records again); a store that is fully written is kept a while in case it comes back."""
        for asset in [a for a in self._dirty if a[0] in partitions]:
            del self._dirty[asset]
        for held in (self._overlay, self._recent, self._ahead):
            for asset in [a for a in held if a[0] in partitions]:
                del held[asset]
        for partition in partitions:
            self._epochs[partition] = self._epochs.get(partition, 0) + 1
            self._restorer.cancel(partition)
            store = self._stores.pop(partition, None)
            end = self._ends.pop(partition, None)
            if store is None:
                continue
            # Kept only while the changelog ends where this process last saw it: the restore
            # then reuses it; a write anyone made since (a late one of ours included) moved
            # the end, and the partition is read again.
            if end is not None:
                self._kept[partition] = (store, end, time.monotonic())
            else:
                store.discard()
        self._expire_kept()

    def _start_restore(self, partition: int, generation: int) -> None:
        with self._lock:
            if self._not_ready.get(partition) != generation:
                return  # revoked again already
        self._expire_kept()
        kept = self._kept.pop(partition, None)
        self._restorer.restore(partition, generation, kept[:2] if kept else None)

    def _expire_kept(self) -> None:
        now = time.monotonic()
        for partition, (store, _, since) in list(self._kept.items()):
            if now - since > KEEP_S:
                del self._kept[partition]
                store.discard()

    def _restored_threadsafe(
        self, partition: int, generation: int, store: PartitionStore, end: int
    ) -> None:
        self._loop.call_soon_threadsafe(self._restored, partition, generation, store, end)

    def _restored(self, partition: int, generation: int, store: PartitionStore, end: int) -> None:
        with self._lock:
            current = self._not_ready.get(partition) == generation
            if current:
                del self._not_ready[partition]
        if not current:
            store.discard()
            return
        self._stores[partition] = store
        self._ends[partition] = end
        ready = self._ready.pop(partition, None)
        if ready is not None:
            ready.set()

    # --- shutdown ------------------------------------------------------------------------------
    async def close(self, timeout_s: float) -> None:
        """Write what was learned (up to ``timeout_s``), then let everything go."""
        deadline = time.monotonic() + timeout_s
        while (self._dirty or self._writing) and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.01)
        if self._flusher is not None:
            self._flusher.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self._restorer.stop)
        if self.producer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.producer.close, 5)
        for store in self._stores.values():
            store.discard()
        for store, _, _ in self._kept.values():
            store.discard()
        self._dir.close()


class _Failed:
    """The answer of a record that could not be sent at all."""

    def succeeded(self) -> bool:
        return False


_FAILED = _Failed()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
