"""Where freshness (consumer/state/freshness.py) keeps what it learned: a local SQLite file per
assigned partition, rebuilt from the compacted changelog topic when the partition is assigned.

The changelog is the truth; the files are a cache of it, so they are written without a journal
or fsync and thrown away with the partition or the process. Memory stays bounded whatever the
number of assets: SQLite holds the rows on disk and keeps a fixed page cache.

Changelog records: key ``<vendor>/<connection>/<asset id>`` (none of the three can hold a
``/``: the schemas and the connection-name pattern forbid it), value the asset's field map as
compact JSON, ``{"<field>": "<order key>", …, "*": "<order key of the last reset>"}``. One
record per asset, so compaction keeps exactly one per asset (the restore reads one record per
tracked asset), and one delivery's fields are written together.
"""

from __future__ import annotations

import contextlib
import fcntl
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from consumer import json_codec
from consumer.broker.kafka_clients import (
    BrokerError,
    connection_settings,
    ensure_co_partitioned,
)
from consumer.config import Config
from consumer.telemetry.logs import get_logger

log = get_logger("freshness")
Snapshot = dict[str, str]  # field -> order key
# Topic settings of a changelog asset-sync creates: compacted (one record per asset), with
# segments small enough that compaction keeps up and a restore reads few superseded records.
CHANGELOG_SETTINGS = {
    "cleanup.policy": "compact",
    "segment.bytes": str(64 * 1024 * 1024),
    "min.cleanable.dirty.ratio": "0.2",
}
RESTORE_RETRY_S = 2.0
# A restore reads small fetches a few at a time: what one step decodes is garbage right after,
# and larger steps (2 MB fetches, 5,000 records) left the process 40-60 MB larger for good
# without restoring faster (bench/RESULTS.md, scenario 10).
RESTORE_POLL_RECORDS = 1_000
RESTORE_FETCH_BYTES = 256 * 1024


def changelog_topic(config: Config) -> str:
    return config.freshness.changelog_topic or f"{config.kafka.topic}.freshness"


def ensure_changelog_topic(config: Config) -> int:
    """Create the changelog co-partitioned with the source (what is learned from source
    partition p goes to changelog partition p). Returns the source's partition count."""
    return ensure_co_partitioned(config.kafka, changelog_topic(config), CHANGELOG_SETTINGS)


STARTING_ABANDONED_S = 600  # a directory still being set up this long after its start is left


class StoreDir:
    """This process's directory of store files, inside ``freshness.store_dir``. A directory
    left by a process that died (its lock is free) is removed at start; one whose process
    still runs (another replica sharing the volume) is left alone. The directory is made
    and locked under a name the others do not clean up, then renamed: made under its final
    name, a replica starting at the same moment could remove it between the two steps, and
    the store files then could never be opened (the partitions' restore retried forever)."""

    def __init__(self, parent: str | None) -> None:
        base = Path(parent) if parent else Path(tempfile.gettempdir()) / "asset-sync-freshness"
        base.mkdir(parents=True, exist_ok=True)
        for old in base.glob("p-*"):
            _remove_if_abandoned(old)
        for old in base.glob("new-*"):  # a start that died before its rename
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > STARTING_ABANDONED_S:
                    shutil.rmtree(old, ignore_errors=True)
        name = uuid.uuid4().hex[:12]
        starting = base / f"new-{name}"
        starting.mkdir()
        self._lock = open(starting / "lock", "w")  # noqa: SIM115 - held for the process's life
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = base / f"p-{name}"
        starting.rename(self.path)  # the lock stays held: it is on the open file

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()


def _remove_if_abandoned(path: Path) -> None:
    try:
        with open(path / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path, ignore_errors=True)
    except OSError:  # held by a live process, or not ours to remove
        return


class PartitionStore:
    """One partition's field maps, in one SQLite file used by one thread at a time."""

    def __init__(self, directory: Path, partition: int, cache_kb: int) -> None:
        self.partition = partition
        self.path = directory / f"{partition}-{uuid.uuid4().hex[:8]}.sqlite"
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode=MEMORY",  # the changelog is the truth: no journal file, no fsync
            "synchronous=OFF",
            "locking_mode=EXCLUSIVE",
            "temp_store=MEMORY",
            f"cache_size=-{cache_kb}",
        ):
            self.db.execute(f"PRAGMA {pragma}")
        # v holds the changelog record's value as it is (JSON bytes): nothing to convert on
        # the way in, from a restore or a delivery
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS f (asset TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID"
        )

    def get(self, asset: str) -> Snapshot | None:
        row = self.db.execute("SELECT v FROM f WHERE asset = ?", (asset,)).fetchone()
        return None if row is None else _snapshot(row[0])

    def get_many(self, assets: list[str]) -> dict[str, Snapshot]:
        """The field maps of those of ``assets`` that have one, in one query per 500."""
        found: dict[str, Snapshot] = {}
        for start in range(0, len(assets), 500):
            chunk = assets[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT asset, v FROM f WHERE asset IN ({marks})"  # noqa: S608 - only marks
            for asset, stored in self.db.execute(query, chunk):
                value = _snapshot(stored)
                if value is not None:
                    found[asset] = value
        return found

    def put_many(self, rows: Iterable[tuple[str, bytes]]) -> None:
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT OR REPLACE INTO f VALUES (?, ?)", rows)
        finally:
            self.db.execute("COMMIT")

    def delete_many(self, assets: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM f WHERE asset = ?", ((a,) for a in assets))

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM f").fetchone()[0])

    def discard(self) -> None:
        """Close and delete the file."""
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def _snapshot(stored: bytes) -> Snapshot | None:
    try:  # orjson shares one string per repeated field name among the maps it reads
        value = json_codec.loads(stored)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@dataclass
class _Job:
    partition: int
    generation: int
    kept: tuple[PartitionStore, int] | None  # a store this process had, and the end it knew
    store: PartitionStore | None = None
    end: int = -1
    records: int = 0
    started: float = field(default_factory=time.monotonic)


Installed = Callable[[int, int, PartitionStore, int], None]  # partition, generation, store, end


class Restorer(threading.Thread):
    """Reads changelog partitions from the beginning into fresh stores, on its own thread and
    with its own consumer (no group), while the service's consumer keeps polling."""

    def __init__(
        self, config: Config, directory: Path, cache_kb: int, installed: Installed
    ) -> None:
        super().__init__(name="freshness-restore", daemon=True)
        self.config = config
        self.topic = changelog_topic(config)
        self.directory = directory
        self.cache_kb = cache_kb
        self.installed = installed
        self._commands: queue.Queue[tuple[str, int, int, Any]] = queue.Queue()
        self._jobs: dict[int, _Job] = {}
        self._consumer: KafkaConsumer | None = None
        self._stopping = threading.Event()
        self.connected = threading.Event()

    # --- called from other threads ---------------------------------------------------------
    def restore(
        self, partition: int, generation: int, kept: tuple[PartitionStore, int] | None
    ) -> None:
        self._commands.put(("start", partition, generation, kept))

    def cancel(self, partition: int) -> None:
        self._commands.put(("cancel", partition, 0, None))

    def stop(self) -> None:
        self._stopping.set()
        self._commands.put(("stop", 0, 0, None))
        self.join(15)

    # --- the thread ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            try:  # before the group's first assignment, when the service waits for it
                self._connect()
            except BrokerError as error:
                log.warning(
                    "freshness restore consumer not connected yet",
                    extra={"fields": {"error": str(error)}},
                )
            self.connected.set()
            while not self._stopping.is_set():
                self._take_commands(block=not self._jobs)
                if self._jobs and not self._stopping.is_set():
                    try:
                        self._step()
                    except (KafkaError, BrokerError, sqlite3.Error, OSError) as error:
                        self._failed(error)
        finally:
            for job in self._jobs.values():
                self._abandon(job)
            if self._consumer is not None:
                with contextlib.suppress(KafkaError):
                    self._consumer.close(autocommit=False)

    def _take_commands(self, block: bool) -> None:
        try:
            command = self._commands.get(timeout=1.0) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            self._apply(*command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return

    def _apply(self, kind: str, partition: int, generation: int, kept: Any) -> None:
        if kind == "stop":
            self._stopping.set()
            return
        old = self._jobs.pop(partition, None)
        if old is not None:
            self._abandon(old)
        if kind == "start":
            self._jobs[partition] = _Job(partition, generation, kept)
        self._reassign()

    def _abandon(self, job: _Job) -> None:
        for store in (job.store, job.kept[0] if job.kept else None):
            if store is not None:
                store.discard()

    def _reassign(self) -> None:
        if self._consumer is not None:
            self._consumer.assign([TopicPartition(self.topic, p) for p in self._jobs])

    def _connect(self) -> KafkaConsumer:
        if self._consumer is None:
            kafka = self.config.kafka
            try:
                self._consumer = KafkaConsumer(
                    **connection_settings(kafka),
                    client_id="asset-sync-freshness-restore",
                    group_id=None,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    max_poll_records=RESTORE_POLL_RECORDS,
                    max_partition_fetch_bytes=RESTORE_FETCH_BYTES,
                )
            except KafkaError as exc:
                raise BrokerError(f"cannot connect to {kafka.bootstrap_servers}: {exc}") from None
            self._reassign()
        return self._consumer

    def _step(self) -> None:
        consumer = self._connect()
        for job in list(self._jobs.values()):
            if job.end < 0 and self._begin(consumer, job):
                self._finish(job)
        if not self._jobs:
            return
        batches = consumer.poll(timeout_ms=200)
        for tp, records in batches.items():
            reading = self._jobs.get(tp.partition)
            if reading is None or reading.store is None:
                continue
            live = [(r.key.decode(), r.value) for r in records if r.key and r.value]
            gone = [r.key.decode() for r in records if r.key and r.value is None]
            reading.store.put_many(live)
            if gone:
                reading.store.delete_many(gone)
            reading.records += len(records)
        for job in list(self._jobs.values()):
            tp = TopicPartition(self.topic, job.partition)
            if job.end >= 0 and consumer.position(tp, timeout_ms=5_000) >= job.end:
                self._finish(job)

    def _begin(self, consumer: KafkaConsumer, job: _Job) -> bool:
        """Start reading the job's partition; True when the store it kept is still current."""
        tp = TopicPartition(self.topic, job.partition)
        ends = consumer.end_offsets([tp], timeout_ms=10_000)
        if tp not in ends:
            raise BrokerError(f"{self.topic} has no partition {job.partition}")
        end = ends[tp]
        if job.kept is not None:
            kept, known_end = job.kept
            job.kept = None
            if known_end == end:  # nobody wrote since this process let it go: still current
                job.store, job.end = kept, end
                return True
            kept.discard()
        job.store = PartitionStore(self.directory, job.partition, self.cache_kb)
        job.end = end
        consumer.seek_to_beginning(tp)
        return False

    def _finish(self, job: _Job) -> None:
        del self._jobs[job.partition]
        self._reassign()
        assert job.store is not None
        log.info(
            "freshness restored",
            extra={
                "fields": {
                    "partition": job.partition,
                    "records": job.records,
                    "seconds": round(time.monotonic() - job.started, 3),
                }
            },
        )
        self.installed(job.partition, job.generation, job.store, job.end)

    def _failed(self, error: BaseException) -> None:
        """Start every job again from scratch a little later (the broker may be away)."""
        log.warning(
            "freshness restore failed; retrying",
            extra={"fields": {"error": str(error), "partitions": sorted(self._jobs)}},
        )
        for job in self._jobs.values():
            if job.store is not None:
                job.store.discard()
            job.store, job.end, job.records = None, -1, 0
        self._stopping.wait(RESTORE_RETRY_S)
