"""``asset-sync replay --config FILE``: republish dead-letter records to the source topic.

The original key, value and headers go back (``dlq.*`` removed, ``asset-sync.replays``
counting how often). The replay reads up to the end offsets it saw at start, so it never
chases its own output, and commits its progress in a consumer group of its own per filter
set *as the operator wrote it* (``--since 2h`` is the text ``2h``, not the time it resolves
to), so running the same command again replays only what was dead-lettered since.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumer.broker.dead_letter import PREFIX
from consumer.broker.kafka_clients import BrokerError, connection_settings, make_producer
from consumer.config import Config
from consumer.errors import UsageError
from consumer.reasons import Reason

REPLAY_HEADER = "asset-sync.replays"
_DURATION = re.compile(r"^([0-9]+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class ReplayFilter:
    """What to replay. ``since`` is the text given (it names the group); ``since_ms`` is the
    cut-off it resolved to for this run."""

    reason: str | None = None
    vendor: str | None = None
    since: str | None = None
    since_ms: int | None = None
    asset: str | None = None
    event_id: str | None = None
    limit: int | None = None

    def matches(self, headers: dict[str, bytes], timestamp_ms: int, value: bytes | None) -> bool:
        if self.reason is not None and _header(headers, "dlq.reason") != self.reason:
            return False
        if self.vendor is not None and _header(headers, "dlq.vendor") != self.vendor:
            return False
        if self.since_ms is not None and timestamp_ms < self.since_ms:
            return False
        if self.asset is None and self.event_id is None:
            return True
        event_id, asset = read_identity(value, headers)
        if self.event_id is not None and event_id != self.event_id:
            return False
        return self.asset is None or asset == self.asset

    def group_suffix(self) -> str:
        """One consumer group per filter set as written (``--limit`` is not a filter), so
        that the same command continues where the last run stopped."""
        if self.since is None and self.asset is None and self.event_id is None:
            text = f"{self.reason}|{self.vendor}|None"  # the name these runs always had
        else:
            text = json.dumps([self.reason, self.vendor, self.since, self.asset, self.event_id])
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def make_filter(
    *,
    reason: str | None = None,
    vendor: str | None = None,
    since: str | None = None,
    asset: str | None = None,
    event_id: str | None = None,
    limit: str | int | None = None,
    now: datetime | None = None,
) -> ReplayFilter:
    """Check the command-line values (``UsageError`` names the flag) and build the filter."""
    from consumer.vendors import VENDORS

    if reason is not None and reason not in {r.value for r in Reason}:
        raise UsageError(f"--reason {reason!r}: one of {', '.join(r.value for r in Reason)}")
    if vendor is not None and vendor not in VENDORS:
        raise UsageError(f"--vendor {vendor!r}: one of {', '.join(VENDORS)}")
    for flag, text in (("--asset", asset), ("--event-id", event_id)):
        if text is not None and (not text or text != text.strip() or not text.isprintable()):
            raise UsageError(f"{flag} {text!r}: give the exact id, without spaces around it")
    since = since.strip() if since is not None else None
    return ReplayFilter(
        reason=reason,
        vendor=vendor,
        since=since,
        since_ms=parse_since(since, now),
        asset=asset,
        event_id=event_id,
        limit=_parse_limit(limit),
    )


def _parse_limit(value: str | int | None) -> int | None:
    if value is None:
        return None
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise UsageError(f"--limit {value!r}: a whole number of at least 1")
    return limit


def parse_since(value: str | None, now: datetime | None = None) -> int | None:
    """``2h``, ``30m``, ``1d`` ago, or an RFC 3339 time; milliseconds since the epoch."""
    if value is None:
        return None
    now = now or datetime.now(UTC)
    problem = f"--since {value!r}: use e.g. 2h, 30m, 1d or 2026-11-23T10:00:00Z"
    try:
        match = _DURATION.match(value.strip())
        if match:
            ago = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
            return int((now - ago).timestamp() * 1000)
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (ValueError, OverflowError):  # not a time, or one before year 1
        raise UsageError(problem) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def read_identity(value: bytes | None, headers: dict[str, bytes]) -> tuple[str | None, str | None]:
    """The CloudEvents id and ``asset_id`` the dead-lettered record carries, or None for what
    it does not say. Binary mode (a ``ce_specversion`` header): ``ce_id`` and the value's
    ``asset_id``; structured mode: the value's ``id`` and ``data.asset_id`` (or the same
    inside ``data_base64``). A value that is not such JSON has neither."""
    lowered = {k.lower(): v for k, v in headers.items()}
    body = _json(value)
    if "ce_specversion" in lowered:
        raw_id = lowered.get("ce_id")
        try:
            event_id = raw_id.decode() if isinstance(raw_id, bytes) else None
        except UnicodeDecodeError:
            event_id = None
        return event_id, _string(body, "asset_id")
    if not isinstance(body, dict):
        return None, None
    data = body.get("data")
    if "data" not in body and isinstance(body.get("data_base64"), str):
        try:
            data = _json(base64.b64decode(body["data_base64"], validate=True))
        except (binascii.Error, ValueError):
            data = None
    return _string(body, "id"), _string(data, "asset_id")


def _json(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep
        return None


def _string(document: Any, key: str) -> str | None:
    found = document.get(key) if isinstance(document, dict) else None
    return found if isinstance(found, str) else None


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
    """Copy the matching records; commit (never in a dry run) only offsets whose records are
    either not wanted or acknowledged by the broker, so a failed run is safe to repeat."""
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
    failed: list[tuple[TopicPartition, int, BaseException]] = []
    try:
        partitions = consumer.partitions_for_topic(kafka.dead_letter_topic) or set()
        tps = [TopicPartition(kafka.dead_letter_topic, p) for p in sorted(partitions)]
        if not tps:
            print(f"no dead-letter topic {kafka.dead_letter_topic!r}: nothing to replay", file=out)
            return 0
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        source = consumer.partitions_for_topic(kafka.topic) or set()
        run = _copy(
            consumer, producer=producer, topic=kafka.topic, ends=ends, flt=flt, out=out, into=source
        )
        if producer is not None:
            producer.flush(60)
            failed = run.failures()
            commits = run.safe_progress(failed)
            if commits:
                consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in commits.items()})
    except KafkaError as exc:
        raise BrokerError(f"replay failed: {exc}") from None
    finally:
        consumer.close(autocommit=False)
        if producer is not None:
            producer.close(10)
    if failed:
        tp, offset, error = failed[0]
        raise BrokerError(
            f"replay failed: {len(failed)} record(s) not accepted, first "
            f"{tp.topic}:{tp.partition}:{offset} ({type(error).__name__}: {error}); "
            f"progress kept before it, run the same command again to retry"
        )
    where = f"{run.replayed} record(s) to {kafka.topic} (group {group}"
    print(
        f"would replay {where}, nothing committed)" if dry_run else f"replayed {where})", file=out
    )
    return 0


@dataclass
class _Copy:
    """What one run read and sent: per partition, the offset after the last record looked at,
    and each send's future (or the error ``send`` raised), whose answer decides whether that
    offset may be committed."""

    replayed: int
    progress: dict[TopicPartition, int]
    sent: list[tuple[TopicPartition, int, Any]]

    def failures(self) -> list[tuple[TopicPartition, int, BaseException]]:
        return [
            (tp, offset, _error(future))
            for tp, offset, future in self.sent
            if isinstance(future, BaseException) or not future.succeeded()
        ]

    def safe_progress(
        self, failed: list[tuple[TopicPartition, int, BaseException]]
    ) -> dict[TopicPartition, int]:
        safe = dict(self.progress)
        for tp, offset, _ in failed:
            safe[tp] = min(safe.get(tp, offset), offset)
        return safe


def _error(answer: Any) -> BaseException:
    if isinstance(answer, BaseException):
        return answer
    return answer.exception or RuntimeError("no answer from the broker")


def _copy(
    consumer: KafkaConsumer,
    *,
    producer: Any,
    topic: str,
    ends: dict[TopicPartition, int],
    flt: ReplayFilter,
    out: TextIO,
    into: set[int] | frozenset[int] = frozenset(),
) -> _Copy:
    """Read every partition up to its end offset at start; copy the matching records. With
    ``--limit`` the progress stops at the last record replayed, so the next run goes on."""
    run = _Copy(0, {}, [])
    remaining = {tp for tp, end in ends.items() if consumer.position(tp) < end}
    deadline = time.monotonic() + 300
    while remaining and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            for record in records:
                if tp not in remaining:
                    break
                if flt.limit is not None and run.replayed >= flt.limit:
                    remaining.clear()
                    break
                headers = dict(record.headers or ())
                if flt.matches(headers, record.timestamp, record.value):
                    run.replayed += 1
                    _report(record, headers, out, dry_run=producer is None)
                    if producer is not None:
                        try:
                            answer: Any = producer.send(
                                topic,
                                key=record.key,
                                value=record.value,
                                headers=replay_headers(list(record.headers or ())),
                                partition=original_partition(headers, topic, into),
                            )
                        except KafkaError as exc:  # e.g. no metadata for the topic in time
                            run.sent.append((tp, record.offset, exc))
                            remaining.clear()
                            break
                        run.sent.append((tp, record.offset, answer))
                run.progress[tp] = record.offset + 1
                if record.offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    return run


def original_partition(headers: dict[str, bytes], topic: str, partitions: Any) -> int | None:
    """The partition the record was consumed from, when it is one of ``topic``'s: a replay
    goes back where the asset's other updates and its freshness state are (a producer may
    partition keys otherwise than this client would). None: the key decides."""
    if _header(headers, "dlq.original.topic") != topic:
        return None
    text = _header(headers, "dlq.original.partition")
    return int(text) if text.isdigit() and int(text) in partitions else None


def _header(headers: dict[str, bytes], name: str) -> str:
    return (headers.get(name) or b"").decode(errors="replace")


def _report(record: Any, headers: dict[str, bytes], out: TextIO, dry_run: bool) -> None:
    def header(name: str) -> str:
        return _header(headers, name)

    prefix = "would replay" if dry_run else "replay"
    print(
        f"{prefix} {record.topic}:{record.partition}:{record.offset} "
        f"reason={header('dlq.reason')} vendor={header('dlq.vendor') or '-'} "
        f"error={header('dlq.error')[:200]}",
        file=out,
    )
