"""The local broker is real: records with headers go through it and come back intact."""

from __future__ import annotations

from tests.kafka_helpers import consume_all, produce


def test_record_with_headers_round_trips(kafka_bootstrap: str, topic: str) -> None:
    # Given three records with keys, binary values and headers
    sent = [
        (f"k{i}".encode(), bytes([i, 0xFF, 0x00]), [("ce_id", f"id-{i}".encode())])
        for i in range(3)
    ]
    # When they are produced with acks=all and read back from the beginning
    produce(kafka_bootstrap, topic, sent)
    received = consume_all(kafka_bootstrap, topic, expected=3)
    # Then key, value and headers are byte for byte what was sent, in order
    assert [(r.key, r.value, list(r.headers)) for r in received] == sent
    assert [r.offset for r in received] == [0, 1, 2]
