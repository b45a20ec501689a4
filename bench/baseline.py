"""The baseline: the straightforward consumer a user would write in about 40 lines.

kafka-python poll loop, jsonschema validation, one blocking HTTP call per event with a pooled
``requests`` session, commit after each batch. Request construction reuses the vendor modules
(the same bytes go over the wire), so the comparison is about the consumer, not the vendors.
Run as ``python -m bench.baseline CONFIG MAX_EVENTS MAX_SECONDS``; prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import requests
from kafka import KafkaConsumer

from consumer.config import load_config
from consumer.delivery.http import HttpClient
from consumer.events import Event
from consumer.schemas import default_schemas
from consumer.vendors import VENDORS


def main() -> None:
    config = load_config(__import__("pathlib").Path(sys.argv[1]))
    max_events, max_seconds = int(sys.argv[2]), float(sys.argv[3])
    reference = default_schemas().reference  # plain jsonschema, as a user would
    clients = {
        v: VENDORS[v](c["default"], HttpClient(config.dispatch))
        for v, c in config.connections.items()
    }
    tokens = {v: asyncio.run(c.auth.get(c.http)) for v, c in clients.items()}
    session = requests.Session()
    consumer = KafkaConsumer(
        config.kafka.topic,
        bootstrap_servers=config.kafka.bootstrap_servers,
        group_id=config.kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    delivered = failed = 0
    started = 0.0  # from the first record: joining the group is not consuming
    joined = time.monotonic()
    while delivered + failed < max_events and time.monotonic() - (started or joined) < max_seconds:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                started = started or time.monotonic()
                document = json.loads(record.value)
                if not reference.is_valid(document):
                    failed += 1
                    continue
                event = Event(
                    document["id"],
                    document["source"],
                    document["vendor"],
                    document.get("connection", "default"),
                    document["data"],
                )
                client = clients[event.vendor]
                request = client.build([event], tokens[event.vendor])
                response = session.request(
                    request.method,
                    request.url,
                    data=request.body,
                    headers=dict(request.headers),
                    params=list(request.query),
                    timeout=30,
                )
                if response.ok:
                    delivered += 1
                else:
                    failed += 1
        consumer.commit()
    seconds = time.monotonic() - started
    consumer.close()
    print(json.dumps({"delivered": delivered, "failed": failed, "seconds": seconds}))


if __name__ == "__main__":
    main()
