"""Dead-letter records exactly as SPEC section 5: the original key, value and headers, plus
``dlq.*`` headers that say why and where from. A record counts as dead-lettered only once the
broker acknowledged it with acks=all; until then its offset is not committed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer

from consumer.broker.kafka_clients import send_acked
from consumer.reasons import Reason

MAX_ERROR_BYTES = 4096
PREFIX = "dlq."


@dataclass(slots=True)  # not frozen: see consumer/outcome.py
class SourceRecord:
    """Where a record came from, and its bytes, as consumed."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def _one_line(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    text = " ".join(text.split())
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "..."


def dead_letter_headers(
    record: SourceRecord,
    reason: Reason,
    error: str,
    *,
    vendor: str | None = None,
    status: int | None = None,
    attempts: int | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    now: datetime | None = None,
) -> list[tuple[str, bytes]]:
    """The original headers (earlier ``dlq.*`` ones removed) followed by this decision's.

    The event's trace context (CloudEvents distributed-tracing extension) is also given as
    W3C ``traceparent``/``tracestate`` headers, the names Kafka tracing tools read, unless
    the record has them already: a structured event holds it only inside its value."""
    extra: dict[str, Any] = {
        "dlq.reason": str(reason),
        "dlq.error": _one_line(error),
        "dlq.vendor": vendor,
        "dlq.status": status,
        "dlq.attempts": attempts,
        "dlq.original.topic": record.topic,
        "dlq.original.partition": record.partition,
        "dlq.original.offset": record.offset,
        "dlq.original.timestamp": record.timestamp,
        "dlq.failed_at": (now or datetime.now(UTC))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    }
    kept = [(k, v) for k, v in record.headers if not k.startswith(PREFIX)]
    names = {k.lower() for k, _ in kept}
    if traceparent is not None and "traceparent" not in names:
        kept.append(("traceparent", traceparent.encode("utf-8")))
        if tracestate and "tracestate" not in names:
            kept.append(("tracestate", tracestate.encode("utf-8")))
    return kept + [(k, str(v).encode("utf-8")) for k, v in extra.items() if v is not None]


class DeadLetterWriter:
    """Produces dead-letter records; ``write`` returns once the broker has acknowledged."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def write(self, record: SourceRecord, reason: Reason, error: str, **known: Any) -> None:
        """Raises ``PublishFailed`` if the broker does not acknowledge (not committed)."""
        headers = dead_letter_headers(record, reason, error, **known)
        await send_acked(self.producer, self.topic, [(record.key, record.value, headers)])
