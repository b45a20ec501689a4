"""How many deliveries the pipeline lets out at once, per connection (no broker involved: the
offsets and the dead-letter writer are in-memory stand-ins, the vendors the contract fakes)."""

from __future__ import annotations

import dataclasses

from kafka.structs import TopicPartition

from consumer.config import parse_config
from consumer.telemetry import metrics
from tests.dispatch.conftest import NoDeadLetters, asset_id, run_pipeline, valid
from tests.fakes import FakeVendors


def overlapping(arrivals: list[float], seconds: float) -> int:
    """The most requests that were in progress at once, each taking ``seconds`` (requests
    that arrive within a little less of each other overlapped)."""
    return max(sum(1 for b in arrivals if a <= b < a + seconds * 0.75) for a in arrivals)


def test_a_batched_vendor_counts_calls_not_deliveries(fakes: FakeVendors) -> None:
    """With one slot per vendor, one Autodesk call still carries a full batch: counting
    deliveries would send 40 calls of one asset each."""
    events = [valid("autodesk", asset_id=asset_id(i)) for i in range(40)]
    tracker = run_pipeline(
        fakes, events, max_in_flight_per_connection=1, batch_max=20, batch_linger_s=0.2
    )
    assert sorted(fakes.autodesk.batch_sizes) == [20, 20]
    assert tracker.to_commit() == {TopicPartition("t", 0): (40, "", -1)}


def test_an_unbatched_vendor_gets_one_delivery_per_slot(fakes: FakeVendors) -> None:
    fakes.lexful.latency_s = 0.2
    events = [valid("lexful", asset_id=asset_id(i)) for i in range(6)]
    run_pipeline(fakes, events, max_in_flight_per_connection=2)
    arrivals = sorted(r.at for r in fakes.lexful.updates())
    assert len(arrivals) == 6
    # each request takes 0.2 s: requests that arrive within 0.15 s of each other overlapped
    overlapping = [sum(1 for b in arrivals if a <= b < a + 0.15) for a in arrivals]
    assert max(overlapping) == 2, arrivals  # two at a time (after the pacer's first probe)


def test_each_connection_of_a_vendor_has_its_own_share(fakes: FakeVendors) -> None:
    """Two tenants of one vendor each get max_in_flight_per_connection at once: the share is
    the connection's, not the vendor's (per vendor, the two would split 2 between them)."""
    fakes.lexful.latency_s = 0.4
    events = [
        dataclasses.replace(valid("lexful", asset_id=asset_id(n)), connection=tenant)
        for tenant, first in (("default", 0), ("b", 100))
        for n in range(first, first + 6)
    ]
    run_pipeline(fakes, events, tenants=("b",), max_in_flight_per_connection=2)
    updates = fakes.lexful.updates()
    assert len(updates) == 12
    by_tenant = {
        tenant: sorted(r.at for r in updates if (int(r.path[-4:], 16) >= 100) == (tenant == "b"))
        for tenant in ("default", "b")
    }
    # after each connection's pacer probe, two at a time each: four at once in all
    assert {t: overlapping(a, 0.4) for t, a in by_tenant.items()} == {"default": 2, "b": 2}
    assert overlapping(sorted(r.at for r in updates), 0.4) == 4


def test_the_deprecated_per_vendor_key_sets_the_per_connection_share(
    fakes: FakeVendors,
) -> None:
    old = parse_config({"dispatch": {"max_in_flight_per_vendor": 3}}, environ={})
    assert old.dispatch.max_in_flight_per_connection == 3
    both = {"max_in_flight_per_vendor": 3, "max_in_flight_per_connection": 256}
    assert parse_config({"dispatch": both}, environ={}).dispatch.max_in_flight_per_connection == 256
    fakes.lexful.latency_s = 0.4
    events = [valid("lexful", asset_id=asset_id(n)) for n in range(5)]
    run_pipeline(fakes, events, max_in_flight_per_vendor=3)
    assert overlapping(sorted(r.at for r in fakes.lexful.updates()), 0.4) == 3


def test_a_connection_an_event_makes_up_gets_no_metric_and_no_lasting_lane(
    fakes: FakeVendors,
) -> None:
    """Connection names in events are not bounded: only configured ones become a label."""
    made_up = dataclasses.replace(valid("lexful"), connection="made-up-tenant")
    dead_letters = NoDeadLetters()
    run_pipeline(fakes, [made_up], dead_letters=dead_letters)
    assert [args[1] for args in dead_letters.written] == ["unknown_connection"]
    labels = {
        tuple(sample.labels.values())
        for family in metrics.INFLIGHT.collect()
        for sample in family.samples
    }
    assert ("lexful", "default") in labels
    assert not any("made-up-tenant" in values for values in labels)
