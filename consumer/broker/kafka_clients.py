"""kafka-python clients built from ``KafkaConfig``: security settings passed through, the
dead-letter topic created when missing, and kafka-python's errors translated at this edge."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewPartitions, NewTopic
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError, TopicAlreadyExistsError

from consumer.config import KafkaConfig, Secret
from consumer.errors import AssetSyncError
from consumer.telemetry.logs import get_logger

log = get_logger("kafka")


class BrokerError(AssetSyncError):
    """The broker could not be reached or refused a request; the message names the broker."""


def connection_settings(config: KafkaConfig) -> dict[str, Any]:
    """What every client needs to reach and authenticate to the cluster."""
    settings: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in config.bootstrap_servers.split(",")],
        "security_protocol": config.security_protocol,
    }
    optional = {
        "sasl_mechanism": config.sasl_mechanism,
        "sasl_plain_username": config.sasl_plain_username,
        "sasl_plain_password": config.sasl_plain_password,
        "ssl_cafile": config.ssl_cafile,
        "ssl_certfile": config.ssl_certfile,
        "ssl_keyfile": config.ssl_keyfile,
        "ssl_password": config.ssl_password,
    }
    for key, value in optional.items():
        if value is not None:
            settings[key] = value.reveal() if isinstance(value, Secret) else value
    if config.security_protocol in ("SSL", "SASL_SSL"):
        settings["ssl_check_hostname"] = config.ssl_check_hostname
    return settings


def make_consumer(config: KafkaConfig, client_id: str) -> KafkaConsumer:
    try:
        return KafkaConsumer(
            **connection_settings(config),
            group_id=config.group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=config.max_poll_records,
            session_timeout_ms=config.session_timeout_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            heartbeat_interval_ms=min(3000, config.session_timeout_ms // 3),
            # partition p of every subscribed topic to one member: the parking topics are
            # co-partitioned with the source (consumer/delivery/parking.py)
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {config.bootstrap_servers}: {exc}") from None


def make_producer(config: KafkaConfig, client_id: str, **overrides: Any) -> KafkaProducer:
    """A producer that only reports success once every in-sync replica has the record."""
    settings = {
        **connection_settings(config),
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_block_ms": 10_000,  # a broker that is gone fails the send; callers retry
        # a dead-letter carries the original value: allow what the broker allows
        "max_request_size": 8 * 1024 * 1024,
    }
    try:
        return KafkaProducer(**{**settings, **overrides})
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {config.bootstrap_servers}: {exc}") from None


def _admin(config: KafkaConfig) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**connection_settings(config), request_timeout_ms=15_000)
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {config.bootstrap_servers}: {exc}") from None


def ensure_topic(
    config: KafkaConfig, name: str, partitions: int = 1, settings: dict[str, str] | None = None
) -> None:
    """Create topic ``name`` with these topic-level ``settings`` if it is missing; a topic
    that exists is used as it is (its settings are the operator's)."""
    admin = _admin(config)
    try:
        if name in set(admin.list_topics()):
            return
        with contextlib.suppress(TopicAlreadyExistsError):  # created by another process
            admin.create_topics([NewTopic(name, partitions, -1, topic_configs=settings or {})])
    except KafkaError as exc:
        raise BrokerError(f"cannot create {name!r}: {exc}") from None
    finally:
        admin.close()


def ensure_co_partitioned(config: KafkaConfig, name: str, settings: dict[str, str]) -> int:
    """Create topic ``name`` with the source topic's partition count, or add partitions to
    one that has fewer, so that its partition p goes with the source's partition p (one owner
    for both under the range assignor). Returns the source's partition count."""
    try:
        admin = KafkaAdminClient(**connection_settings(config), request_timeout_ms=15_000)
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {config.bootstrap_servers}: {exc}") from None
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in (config.topic, name) if t in existing]
        described = admin.describe_topics(wanted) if wanted else []
        counts = {d["name"]: len(d.get("partitions", [])) for d in described}
        source = counts.get(config.topic, 0)
        if source == 0:
            raise BrokerError(f"topic {config.topic!r} does not exist (or has no partitions)")
        if name not in counts:
            with contextlib.suppress(TopicAlreadyExistsError):  # created by another replica
                admin.create_topics([NewTopic(name, source, -1, topic_configs=settings)])
        elif counts[name] < source:
            log.warning(
                "topic has fewer partitions than the source; adding some",
                extra={"fields": {"topic": name, "partitions": counts[name], "source": source}},
            )
            with contextlib.suppress(KafkaError):  # another replica did it meanwhile
                admin.create_partitions({name: NewPartitions(source)})
        return source
    except KafkaError as exc:
        raise BrokerError(f"cannot create {name!r}: {exc}") from None
    finally:
        admin.close()


def ensure_dead_letter_topic(config: KafkaConfig) -> None:
    """Create the dead-letter topic with the source topic's partition count if it is missing."""
    admin = _admin(config)
    try:
        topics = set(admin.list_topics())
        if config.dead_letter_topic in topics:
            return
        partitions = 1
        if config.topic in topics:
            described = admin.describe_topics([config.topic])
            partitions = max(1, len(described[0].get("partitions", [])))
        with contextlib.suppress(TopicAlreadyExistsError):  # created by another process
            admin.create_topics([NewTopic(config.dead_letter_topic, partitions, -1)])
    except KafkaError as exc:
        raise BrokerError(f"cannot create {config.dead_letter_topic!r}: {exc}") from None
    finally:
        admin.close()


def wait_for_partitions(consumer: KafkaConsumer, topic: str, timeout_s: float) -> int:
    """Wait until the consumer's metadata knows the topic's partitions.

    Subscribing before that can leave kafka-python 3.0 with an empty assignment that it never
    rebalances away from (seen here in about 1 start of 6 under load), so the service waits.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            partitions = consumer.partitions_for_topic(topic)
        except KafkaError:
            partitions = None
        if partitions:
            return len(partitions)
        if time.monotonic() > deadline:
            raise BrokerError(f"topic {topic!r} does not exist (or has no partitions)")
        time.sleep(0.2)


def rejoin_workaround_applies(consumer: KafkaConsumer) -> bool:
    """Whether this kafka-python has the internals ``rejoin_if_join_dropped`` reads (a later
    version may not: then the service says so at start, instead of silently not recovering)."""
    coordinator: Any = getattr(consumer, "_coordinator", None)
    return all(
        hasattr(coordinator, name) for name in ("_join_task", "need_rejoin", "request_rejoin")
    )


def rejoin_if_join_dropped(consumer: KafkaConsumer) -> bool:
    """Work around kafka-python 3.0.12 dropping a finished rebalance; call after every poll.

    When a poll's timeout runs out while a JoinGroup/SyncGroup is in flight (a rebalance
    listener slower than the poll makes that likely: ours lets requests on the wire finish),
    the join is left to finish on kafka-python's IO thread. If that rebalance was started by a
    metadata change (the one right after start-up, new partitions), the leader's assignment
    clears the only reason to rejoin, the next poll never applies the result, and this member
    holds no partition for good while the group thinks it does. The sign is a finished join
    that nobody collected and no reason left to rejoin; asking for a rejoin runs the join
    again and applies it. Returns whether it did (tests/integration/test_kafka_clients.py).
    """
    coordinator: Any = getattr(consumer, "_coordinator", None)
    task = getattr(coordinator, "_join_task", None)
    if task is None or not getattr(task, "is_done", False) or coordinator.need_rejoin():
        return False
    coordinator.request_rejoin()
    return True


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> str:
    """Create a topic on a PLAINTEXT broker and wait until its metadata is there (the
    local broker has auto-creation off, like most production clusters)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
        admin.wait_for_topics([name], timeout_ms=10_000)
    finally:
        admin.close()
    return name


class PublishFailed(AssetSyncError):
    """The broker did not acknowledge a record; the caller keeps it and tries again."""


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


async def send_acked(
    producer: KafkaProducer, topic: str, records: list[Record], partition: int | None = None
) -> None:
    """Produce ``(key, value, headers)`` records in this order (to ``partition``, or where
    their keys go) and return once the broker acknowledged every one (acks=all); raises
    ``PublishFailed`` otherwise.

    ``send()`` can block (waiting for metadata or buffer space), so it runs off the event
    loop; kafka-python calls back on its IO thread, and the answers are handed to the loop.
    """
    loop = asyncio.get_running_loop()
    done = [loop.create_future() for _ in records]

    def settle(future: asyncio.Future[None], error: BaseException | None) -> None:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(PublishFailed(f"{type(error).__name__}: {error}"))

    def post(future: asyncio.Future[None], error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(settle, future, error)

    def send_all() -> None:
        for (key, value, headers), future in zip(records, done, strict=True):
            sent = producer.send(topic, key=key, value=value, headers=headers, partition=partition)
            sent.add_callback(lambda _, f=future: post(f, None))
            sent.add_errback(lambda error, f=future: post(f, error))

    try:
        await loop.run_in_executor(None, send_all)
    except KafkaError as error:
        for future in done:
            future.cancel()
        raise PublishFailed(f"{type(error).__name__}: {error}") from None
    await asyncio.gather(*done)
