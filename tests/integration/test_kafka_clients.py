"""kafka-python 3.0.12 can drop a finished rebalance; the service's poll loop notices and
joins again (consumer/broker/kafka_clients.py ``rejoin_if_join_dropped``)."""

from __future__ import annotations

import time

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewPartitions

from consumer.broker.kafka_clients import rejoin_if_join_dropped, rejoin_workaround_applies


class SlowRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revocation outlives the poll, as when requests on the wire are let finish."""

    def __init__(self) -> None:
        self.assigned: list[set[TopicPartition]] = []

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        time.sleep(0.5)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned.append(set(assigned))


def poll_until(consumer: KafkaConsumer, partitions: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(consumer.assignment()) < partitions and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
        rejoin_if_join_dropped(consumer)
        time.sleep(0.05)  # the service processes between polls; the join finishes meanwhile


def test_a_rebalance_whose_join_outlives_the_poll_is_applied(
    kafka_bootstrap: str, topic: str
) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic}-group",
        enable_auto_commit=False,
        metadata_max_age_ms=500,
    )
    assert rejoin_workaround_applies(consumer)  # this kafka-python is the one worked around
    listener = SlowRevoke()
    consumer.subscribe([topic], listener=listener)
    try:
        poll_until(consumer, 1, timeout_s=20)
        assert listener.assigned == [{TopicPartition(topic, 0)}]
        # a metadata change starts the next rebalance: the leader's own assignment then
        # leaves kafka-python no reason to rejoin once the join finishes between two polls
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        admin.create_partitions({topic: NewPartitions(3)})
        admin.close()
        poll_until(consumer, 3, timeout_s=20)
        assert listener.assigned[-1] == {TopicPartition(topic, p) for p in range(3)}
    finally:
        consumer.close()
