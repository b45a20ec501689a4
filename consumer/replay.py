"""``asset-sync replay --config FILE``: republish dead-letter records to the source topic.

The original key, value and headers go back (``dlq.*`` removed, ``asset-sync.replays``
counting how often). The replay reads up to the end offsets it saw at start, so it never
chases its own output, and commits its progress in a consumer group of its own per filter
set, so a record is replayed once by the same command.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumer.config import Config
from consumer.dead_letter import PREFIX
from consumer.errors import UsageError
from consumer.kafka_clients import BrokerError, connection_settings, make_producer

REPLAY_HEADER = "asset-sync.replays"
_DURATION = re.compile(r"^(\d+)([smhd])$")


@dataclass(frozen=True)
class ReplayFilter:
    reason: str | None = None
    vendor: str | None = None
    since_ms: int | None = None
    limit: int | None = None

    def matches(self, headers: dict[str, bytes], timestamp_ms: int) -> bool:
        if self.reason and headers.get("dlq.reason", b"").decode(errors="replace") != self.reason:
            return False
        if self.vendor and headers.get("dlq.vendor", b"").decode(errors="replace") != self.vendor:
            return False
        return not (self.since_ms is not None and timestamp_ms < self.since_ms)

    def group_suffix(self) -> str:
        """One consumer group per filter set: each remembers what it replayed."""
        text = f"{self.reason}|{self.vendor}|{self.since_ms}"
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def parse_since(value: str | None, now: datetime | None = None) -> int | None:
    """``2h``, ``30m``, ``1d`` ago, or an RFC 3339 time; milliseconds since the epoch."""
    if value is None:
        return None
    now = now or datetime.now(UTC)
    match = _DURATION.match(value.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return int((now - timedelta(**{unit: int(match.group(1))})).timestamp() * 1000)
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {value!r}: use e.g. 2h, 30m, 1d or 2026-11-23T10:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def replay_headers(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    count = 0
    kept = []
    for key, value in headers:
        if key == REPLAY_HEADER:
            try:
                count = int(value)
            except ValueError:
                count = 0
        elif not key.startswith(PREFIX):
            kept.append((key, value))
    return [*kept, (REPLAY_HEADER, str(count + 1).encode())]


def replay(config: Config, flt: ReplayFilter, dry_run: bool, out: TextIO) -> int:
    kafka = config.kafka
    group = f"{kafka.group_id}.replay.{flt.group_suffix()}"
    try:
        consumer = KafkaConsumer(
            **connection_settings(kafka),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {kafka.bootstrap_servers}: {exc}") from None
    producer = None if dry_run else make_producer(kafka, "asset-sync-replay")
    try:
        partitions = consumer.partitions_for_topic(kafka.dead_letter_topic) or set()
        tps = [TopicPartition(kafka.dead_letter_topic, p) for p in sorted(partitions)]
        if not tps:
            print(f"no dead-letter topic {kafka.dead_letter_topic!r}: nothing to replay", file=out)
            return 0
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        replayed, progress = _copy(
            consumer,
            producer=producer,
            topic=kafka.topic,
            ends=ends,
            flt=flt,
            out=out,
            dry_run=dry_run,
        )
        if producer is not None:
            producer.flush(60)
            if progress:
                consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in progress.items()})
    except KafkaError as exc:
        raise BrokerError(f"replay failed: {exc}") from None
    finally:
        consumer.close(autocommit=False)
        if producer is not None:
            producer.close(10)
    verb = "would replay" if dry_run else "replayed"
    print(f"{verb} {replayed} record(s) to {kafka.topic}", file=out)
    return 0


def _copy(
    consumer: KafkaConsumer,
    *,
    producer: Any,
    topic: str,
    ends: dict[TopicPartition, int],
    flt: ReplayFilter,
    out: TextIO,
    dry_run: bool,
) -> tuple[int, dict[TopicPartition, int]]:
    """Read every partition up to its end offset at start; copy the matching records."""
    progress: dict[TopicPartition, int] = {}
    remaining = {tp for tp, end in ends.items() if consumer.position(tp) < end}
    replayed = 0
    deadline = time.monotonic() + 300
    while remaining and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            for record in records:
                if tp not in remaining:
                    break
                if flt.limit is not None and replayed >= flt.limit:
                    remaining.clear()
                    break
                headers = dict(record.headers or ())
                if flt.matches(headers, record.timestamp):
                    replayed += 1
                    _report(record, headers, out, dry_run)
                    if producer is not None:
                        producer.send(
                            topic,
                            key=record.key,
                            value=record.value,
                            headers=replay_headers(list(record.headers or ())),
                        )
                progress[tp] = record.offset + 1
                if record.offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    return replayed, progress


def _report(record: Any, headers: dict[str, bytes], out: TextIO, dry_run: bool) -> None:
    def header(name: str) -> str:
        return headers.get(name, b"").decode(errors="replace")

    prefix = "would replay" if dry_run else "replay"
    print(
        f"{prefix} {record.topic}:{record.partition}:{record.offset} "
        f"reason={header('dlq.reason')} vendor={header('dlq.vendor') or '-'} "
        f"error={header('dlq.error')[:200]}",
        file=out,
    )
