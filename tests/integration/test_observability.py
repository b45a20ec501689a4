"""Metrics, probes and logs of a running service against the real broker."""

from __future__ import annotations

import json
import re

from tests.fakes import FakeVendors, Reply
from tests.integration.conftest import StartService
from tests.kafka_helpers import produce
from tests.samples import encode, event_for
from tests.service_helpers import wait_until

SPEC_METRICS = [
    "asset_sync_events_consumed_total",
    "asset_sync_events_delivered_total",
    "asset_sync_events_dead_lettered_total",
    "asset_sync_vendor_requests_total",
    "asset_sync_vendor_request_duration_seconds_bucket",
    "asset_sync_retries_total",
    "asset_sync_event_delivery_seconds_bucket",
    "asset_sync_inflight_events",
    "asset_sync_consumer_lag",
    "asset_sync_build_info",
]


def test_counters_move_and_probes_answer(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    service = start_service()
    assert service.get("/healthz")[0] == 200
    assert service.get("/readyz")[0] == 200
    before = service.metric("asset_sync_events_delivered_total", vendor="enos")
    vendors.enos.fail_next(Reply(200, body={"code": 99500, "msg": "busy"}))
    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = [
        (b"enos:x", encode(event_for("enos")), []) for _ in range(3)
    ]
    produce(kafka_bootstrap, source_topic, [*records, (b"junk", b"][", [])])
    wait_until(
        lambda: service.metric("asset_sync_events_delivered_total", vendor="enos") == before + 3,
        message="3 enos deliveries",
    )
    wait_until(
        lambda: (
            service.metric(
                "asset_sync_events_dead_lettered_total", vendor="unknown", reason="invalid_json"
            )
            == 1
        ),
        message="1 dead-letter",
    )
    assert service.metric("asset_sync_retries_total", vendor="enos", reason="server_error") == 1
    assert service.metric("asset_sync_vendor_requests_total", vendor="enos", code="200") == 4
    assert service.metric("asset_sync_events_consumed_total", topic=source_topic) == 4
    assert service.metric("asset_sync_event_delivery_seconds_count", vendor="enos") == 3
    # Lag is refreshed periodically from committed and end offsets; it reaches 0
    wait_until(
        lambda: (
            "asset_sync_consumer_lag{" in service.get("/metrics")[1]
            and service.metric("asset_sync_consumer_lag", topic=source_topic) == 0
        ),
        timeout_s=40,
        message="lag gauge at 0",
    )
    _, text = service.get("/metrics")
    for name in SPEC_METRICS:
        assert re.search(rf"^{name}[{{ ]", text, re.M), f"{name} missing"
    # Labels are bounded: no asset id or event id ever appears in the metrics
    assert "Instance_cshan_001" not in text and "enos:x" not in text
    assert service.terminate() == 0


def test_logs_are_one_json_object_per_line_with_the_outcome(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    service = start_service()
    event = event_for("webflow")
    produce(kafka_bootstrap, source_topic, [(b"w", encode(event), [])])
    wait_until(lambda: len(vendors.webflow.updates()) == 1, message="delivery")
    assert service.terminate() == 0
    lines = [line for line in service.logs().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON
    delivered = [e for e in entries if e.get("msg") == "delivered"]
    assert delivered == [
        {
            **delivered[0],
            "event_id": event["id"],
            "vendor": "webflow",
            "outcome": "delivered",
            "attempts": 1,
        }
    ]
    assert vendors.secrets["webflow_token"] not in service.logs()
