"""Lag per connection in a real ``asset-sync run`` (issue 17, point 3): while Webflow tenant
``a`` hangs and tenant ``b`` flows, /metrics shows a's events waiting and their age growing,
and b at 0; once a's vendor answers again, a goes back to 0 too. Its log lines name the asset
and the source of each event (point 2)."""

from __future__ import annotations

import json
import time
from typing import Any

from consumer.local.samples import asset_id
from tests.fakes import FakeVendors, Reply
from tests.integration.conftest import StartService
from tests.kafka_helpers import produce
from tests.samples import marked
from tests.service_helpers import ServiceProcess, wait_until

WAITING = "asset_sync_connection_waiting_events"
OLDEST = "asset_sync_connection_oldest_waiting_seconds"
HUNG, FLOWING = 5, 20
Record = tuple[bytes, bytes, list[tuple[str, bytes]]]


def update(connection: str, n: int) -> tuple[dict[str, Any], Record]:
    event = marked("webflow", f"{connection}-{n}", asset_id=asset_id("webflow", n))
    event["connection"] = connection
    key = f"webflow:{event['data']['asset_id']}".encode()
    return event, (key, json.dumps(event).encode(), [])


def series(service: ServiceProcess, connection: str) -> tuple[float, float] | None:
    """(waiting, oldest age) of webflow/``connection``; None while /metrics lacks them."""
    _, text = service.get("/metrics")
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        labels, _, value = rest.partition("} ")
        if name in (WAITING, OLDEST) and sorted(labels.split(",")) == [
            f'connection="{connection}"',
            'vendor="webflow"',
        ]:
            values[name] = float(value)
    return (values[WAITING], values[OLDEST]) if len(values) == 2 else None


def test_a_hanging_connection_shows_waiting_events_and_a_growing_age(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    tenant_token = vendors.secrets["webflow_tenant_token"]
    connections: dict[str, Any] = vendors.connections()
    webflow = connections["webflow"]
    webflow.update(a=vendors.webflow_tenant(), b=dict(webflow["default"]))
    try:
        service = start_service(
            connections=connections,
            # the hang must outlast the test: a timeout would end a's wait by itself
            dispatch={"read_timeout_s": 120, "shutdown_grace_s": 1},
        )
        # each configured connection shows both series from the start, at 0
        assert series(service, "a") == series(service, "b") == (0, 0)
        vendors.webflow.by_token[tenant_token] = Reply(hang=True)
        hung = [update("a", n) for n in range(HUNG)]
        flowing = [update("b", n) for n in range(100, 100 + FLOWING)]
        produce(kafka_bootstrap, source_topic, [r for _, r in hung + flowing])
        wait_until(
            lambda: len(vendors.webflow.succeeded()) == FLOWING and series(service, "b") == (0, 0),
            timeout_s=30,
            message="b delivered everything and shows nothing waiting",
        )
        wait_until(
            lambda: (s := series(service, "a")) is not None and s[0] == HUNG,
            timeout_s=30,
            message="a's events all counted as waiting",
        )
        first = series(service, "a")
        time.sleep(2)
        later = series(service, "a")
        assert first is not None and later is not None
        assert later[0] == HUNG, "nothing of a finished while it hangs"
        assert later[1] >= first[1] + 1.5, (first, later)
        assert series(service, "b") == (0, 0)

        vendors.webflow.by_token.clear()  # a's vendor answers again
        vendors.webflow.release()
        wait_until(lambda: series(service, "a") == (0, 0), timeout_s=30, message="a drained to 0")
        assert len(vendors.webflow.succeeded()) == HUNG + FLOWING
        assert service.terminate() == 0
    finally:
        vendors.webflow.by_token.clear()
        vendors.webflow.release()
    delivered = {e["event_id"]: e for e in service.log_entries() if e.get("msg") == "delivered"}
    for event, _ in hung + flowing:
        line = delivered[event["id"]]
        assert (line["asset_id"], line["source"]) == (event["data"]["asset_id"], event["source"])
    assert vendors.violations() == []
