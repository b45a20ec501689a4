"""An event id delivered recently is skipped, not sent twice, and counted."""

from __future__ import annotations

from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.kafka_helpers import produce
from tests.samples import encode, marked
from tests.service_helpers import wait_until


def test_recently_delivered_event_is_skipped_and_counted(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    service = start_service(dispatch={"dedup_window_s": 60})
    event = marked("trelica", "once")
    other = marked("trelica", "other")
    # the same event twice (a producer retry), then a different one
    produce(
        kafka_bootstrap,
        source_topic,
        [(b"t", encode(event), []), (b"t", encode(event), []), (b"t", encode(other), [])],
    )
    wait_until(
        lambda: service.metric("asset_sync_events_duplicate_total", vendor="trelica") == 1,
        message="one duplicate counted",
    )
    wait_until(lambda: len(vendors.trelica.updates()) == 2, message="two deliveries")
    assert [r.body["notes"] for r in vendors.trelica.updates()] == ["once", "other"]
    assert service.terminate() == 0


def test_window_zero_turns_deduplication_off(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    service = start_service(dispatch={"dedup_window_s": 0})
    event = marked("trelica", "twice")
    produce(kafka_bootstrap, source_topic, [(b"t", encode(event), [])] * 2)
    wait_until(lambda: len(vendors.trelica.updates()) == 2, message="two deliveries")
    assert service.metric("asset_sync_events_duplicate_total") == 0
    assert service.terminate() == 0


def test_the_same_id_from_another_source_is_a_different_event(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    """CloudEvents identity is (source, id): an equal id from another producer is delivered."""
    service = start_service(dispatch={"dedup_window_s": 60})
    first = marked("trelica", "from-cmdb")
    second = {**marked("trelica", "from-erp"), "id": first["id"], "source": "erp://acme"}
    produce(kafka_bootstrap, source_topic, [(b"t", encode(e), []) for e in (first, second)])
    wait_until(lambda: len(vendors.trelica.updates()) == 2, message="both delivered")
    assert [r.body["notes"] for r in vendors.trelica.updates()] == ["from-cmdb", "from-erp"]
    assert service.metric("asset_sync_events_duplicate_total") == 0
    assert service.terminate() == 0
