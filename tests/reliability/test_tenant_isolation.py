"""Tenant isolation: the connection (vendor + connection name) is the unit of concurrency.

Webflow tenant ``a`` hangs (its requests get no answer) with more updates in flight than its
share; tenant ``b`` of the same vendor, on the same server (so the same HTTP host), and
another vendor keep flowing, and ``a`` holds exactly its own share.
"""

from __future__ import annotations

import json
import time
from typing import Any

from consumer.local.samples import asset_id
from tests.fakes import FakeVendors, Reply
from tests.integration.conftest import StartService
from tests.kafka_helpers import produce
from tests.samples import marked, received_markers
from tests.service_helpers import wait_until

SHARE = 256  # dispatch.max_in_flight_per_connection, left at its default
HUNG, SIBLING, OTHER = 300, 500, 100  # updates for tenant a, tenant b, and Lexful
BOUND_S = 20.0  # the measure: b delivered 0 of 500 in 20 s while a hung
Record = tuple[bytes, bytes, list[tuple[str, bytes]]]


def update(vendor: str, connection: str, n: int) -> Record:
    """The n-th update of a distinct asset, for one connection; its marker is its name."""
    event = marked(vendor, f"{connection}-{n}", asset_id=asset_id(vendor, n))
    event["connection"] = connection
    return f"{vendor}:{event['data']['asset_id']}".encode(), json.dumps(event).encode(), []


def delivered(vendors: FakeVendors, vendor: str, token: str | None = None) -> set[str]:
    """Markers the vendor accepted (for Webflow, only those sent with ``token``)."""
    return {
        marker
        for request in vendors.fakes[vendor].succeeded()
        if token is None or request.headers.get("Authorization") == f"Bearer {token}"
        for marker in received_markers(request.body, vendor)
    }


def test_a_hanging_tenant_holds_only_its_share(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    tokens = {"a": vendors.secrets["webflow_tenant_token"], "b": vendors.secrets["webflow_token"]}
    connections: dict[str, Any] = vendors.connections()
    webflow = connections["webflow"]
    webflow.update(a=vendors.webflow_tenant(), b=dict(webflow["default"]))
    try:
        service = start_service(
            connections=connections,
            # the hang must outlast the test: a timeout would free a's share by itself
            dispatch={"read_timeout_s": 120, "shutdown_grace_s": 1},
        )
        # Both tenants work first, so that a's pacer has seen an answer and lets its
        # updates out at once (a tenant that hangs after working, not one never reached).
        produce(kafka_bootstrap, source_topic, [update("webflow", c, 10_000) for c in "ab"])
        wait_until(
            lambda: all(delivered(vendors, "webflow", tokens[c]) for c in "ab"),
            timeout_s=30,
            message="one update of each tenant delivered",
        )
        vendors.webflow.by_token[tokens["a"]] = Reply(hang=True)
        produce(kafka_bootstrap, source_topic, [update("webflow", "a", n) for n in range(HUNG)])

        def hanging() -> int:
            auth = f"Bearer {tokens['a']}"
            return sum(1 for r in vendors.webflow.updates() if r.headers["Authorization"] == auth)

        wait_until(lambda: hanging() > SHARE, timeout_s=30, message="a's share hanging")
        started = time.monotonic()
        produce(
            kafka_bootstrap,
            source_topic,
            [update("webflow", "b", n) for n in range(SIBLING)]
            + [update("lexful", "default", n) for n in range(OTHER)],
        )
        expected_b = {f"b-{n}" for n in range(SIBLING)}
        expected_other = {f"default-{n}" for n in range(OTHER)}
        wait_until(
            lambda: delivered(vendors, "lexful") >= expected_other,
            timeout_s=BOUND_S,
            message="the other vendor delivered everything",
        )
        got_b: set[str] = set()

        def sibling_done() -> bool:
            got_b.update(delivered(vendors, "webflow", tokens["b"]) & expected_b)
            return got_b == expected_b

        try:
            wait_until(sibling_done, timeout_s=BOUND_S, message="tenant b delivered everything")
        except AssertionError:
            raise AssertionError(
                f"tenant b delivered {len(got_b)} of {SIBLING} in {BOUND_S:.0f}s while a hung"
            ) from None
        took = time.monotonic() - started
        # a holds its own share and no more (1 + SHARE: the warm-up, then the hung ones)
        assert hanging() == 1 + SHARE
        assert delivered(vendors, "webflow", tokens["a"]) == {"a-10000"}
        inflight = {
            c: service.metric("asset_sync_inflight_events", vendor="webflow", connection=c)
            for c in "ab"
        }
        assert inflight == {"a": SHARE, "b": 0}
        print(
            f"\ntenant isolation: webflow/a hung with {SHARE} in flight (its share) and "
            f"{HUNG - SHARE} queued; webflow/b delivered {SIBLING} and lexful {OTHER} in "
            f"{took:.1f}s"
        )
        assert service.terminate() == 0
    finally:
        vendors.webflow.by_token.clear()
        vendors.webflow.release()
    assert vendors.violations() == []
