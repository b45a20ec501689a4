"""``asset-sync publish --config FILE EVENTS.jsonl``: validate, then produce with the
recommended key ``<vendor>:<asset id>`` in structured CloudEvents mode. All or nothing: if
any event is invalid, nothing is produced."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from kafka.errors import KafkaError

from consumer.broker.kafka_clients import BrokerError, make_producer
from consumer.commands.validate_files import iter_events
from consumer.config import Config
from consumer.errors import UsageError
from consumer.events import STRUCTURED_CONTENT_TYPE, Event, Rejection, parse_record


def record_key(event: Event) -> bytes:
    """Every update of one asset lands in one partition, in order."""
    return f"{event.vendor}:{event.asset_id}".encode()


def publish_events(config: Config, raw_events: list[bytes]) -> int:
    """Produce already validated events (acks=all); return how many."""
    producer = make_producer(config.kafka, "asset-sync-publish")
    try:
        futures = []
        for raw in raw_events:
            event = parse_record(raw)
            assert isinstance(event, Event)
            futures.append(
                producer.send(
                    config.kafka.topic,
                    key=record_key(event),
                    value=raw,
                    headers=[("content-type", STRUCTURED_CONTENT_TYPE.encode())],
                )
            )
        producer.flush(60)
        for future in futures:
            future.get(timeout=60)
    except KafkaError as exc:
        raise BrokerError(f"publishing to {config.kafka.topic!r} failed: {exc}") from None
    finally:
        producer.close(5)
    return len(raw_events)


def publish_files(config: Config, paths: list[Path], out: TextIO) -> int:
    valid: list[bytes] = []
    invalid = 0
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        for line, raw in iter_events(data):
            result = parse_record(raw)
            if isinstance(result, Rejection):
                invalid += 1
                for error in result.errors:
                    print(f"{path}:{line}: {error}", file=out)
            else:
                valid.append(raw)
    if invalid:
        print(f"{invalid} invalid event(s); nothing was published", file=out)
        return 1
    count = publish_events(config, valid)
    print(f"published {count} event(s) to {config.kafka.topic}", file=out)
    return 0
