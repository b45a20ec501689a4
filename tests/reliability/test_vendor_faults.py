"""Vendor faults: resets, hangs, slow drips, garbage bodies, 500 storms. Each event ends
delivered or dead-lettered with the right reason; the service never hangs or crashes."""

from __future__ import annotations

import time

from tests.fakes import FakeVendors, Reply
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, produce
from tests.samples import encode, marked


def test_each_fault_ends_in_delivery_or_the_right_dead_letter(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    vendors.lexful.fail_next(Reply(reset=True), Reply(reset=True))  # then fine
    vendors.trelica.always = Reply(200, delay_s=3)  # hangs past the read timeout
    vendors.webflow.always = Reply(200, drip_s=0.2, raw=b'{"id": "x", "padding": "....."}')
    vendors.enos.always = Reply(200, raw=b"<html>gateway</html>")  # not JSON
    vendors.autodesk.always = Reply(500, body={"error": "storm"})
    service = start_service(
        retry={"max_attempts": 3, "max_elapsed_s": 20, "base_delay_s": 0.05},
        dispatch={"read_timeout_s": 0.5, "connect_timeout_s": 0.5},
    )
    events = {v: marked(v, f"{v}-fault") for v in vendors.fakes}
    started = time.monotonic()
    produce(kafka_bootstrap, source_topic, [(v.encode(), encode(e), []) for v, e in events.items()])
    dlq = consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=4, timeout_s=60)
    took = time.monotonic() - started
    headers = {dict(r.headers)["dlq.vendor"].decode(): dict(r.headers) for r in dlq}
    assert set(headers) == {"trelica", "webflow", "enos", "autodesk"}
    for vendor, h in headers.items():
        assert h["dlq.reason"] == b"retries_exhausted", (vendor, h)
        assert h["dlq.attempts"] == b"3"
    assert b"timed out" in headers["trelica"]["dlq.error"]
    assert b"timed out" in headers["webflow"]["dlq.error"]  # the drip hit the total timeout
    assert b"EnOS code None" in headers["enos"]["dlq.error"]
    assert headers["autodesk"]["dlq.status"] == b"500"
    assert len(vendors.lexful.updates()) == 3  # two resets, then delivered
    assert service.get("/healthz")[0] == 200
    print(
        f"\nvendor faults: 1 delivered after 2 resets, 4 dead-lettered as retries_exhausted "
        f"(hang, drip, garbage, 500 storm) in {took:.1f}s"
    )
    assert service.terminate() == 0
