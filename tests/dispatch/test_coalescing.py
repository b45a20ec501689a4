"""Coalescing (a connection's ``coalesce``): updates of one asset queued behind each other go
in one request, each event still finished or dead-lettered by itself. The requests are the
contract fakes'; the merge rules per vendor are in tests/unit/test_merge.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kafka.structs import TopicPartition
from prometheus_client import REGISTRY

from consumer.broker.dead_letter import SourceRecord
from consumer.broker.offsets import OffsetTracker
from consumer.config import parse_config
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.pipeline import Pipeline
from consumer.events import Event
from consumer.reasons import Reason
from consumer.vendors import VENDORS
from tests.dispatch.conftest import NoDeadLetters, run_pipeline, valid
from tests.fakes import FakeVendors
from tests.fakes.base import Reply

ASSET = "580e63fc8c9a982ac9b8b745"
OTHER = "580e63fc8c9a982ac9b8b746"
LOCALE = "653ad57de882f528b32e810e"
COALESCE = {"coalesce": True}


def webflow(asset: str = ASSET, **changes: Any) -> Event:
    return valid("webflow", asset_id=asset, changes=changes)


def coalesced() -> float:
    labels = {"vendor": "webflow"}
    return REGISTRY.get_sample_value("asset_sync_events_coalesced_total", labels) or 0.0


def delivered() -> float:
    labels = {"vendor": "webflow"}
    return REGISTRY.get_sample_value("asset_sync_events_delivered_total", labels) or 0.0


def everything_committed(count: int) -> dict[TopicPartition, tuple[int, str, int]]:
    return {TopicPartition("t", 0): (count, "", -1)}


def test_queued_updates_of_one_asset_go_as_one_request_later_fields_winning(
    fakes: FakeVendors,
) -> None:
    events = [
        webflow(displayName="a.png"),
        webflow(altText="first"),
        webflow(displayName="b.png"),
        webflow(altText="second"),
    ]
    before, delivered_before = coalesced(), delivered()
    tracker = run_pipeline(fakes, events, settings=COALESCE)
    (request,) = fakes.webflow.updates()
    assert request.path == f"/v2/assets/{ASSET}"
    assert request.body == {"displayName": "b.png", "altText": "second"}
    assert tracker.to_commit() == everything_committed(4)
    assert coalesced() - before == 3
    assert delivered() - delivered_before == 4  # each event counted, one request


def test_without_coalesce_each_update_is_a_request_of_its_own(fakes: FakeVendors) -> None:
    events = [webflow(displayName=f"{n}.png") for n in range(4)]
    tracker = run_pipeline(fakes, events)
    bodies = [r.body for r in fakes.webflow.updates()]
    assert bodies == [{"displayName": f"{n}.png"} for n in range(4)]
    assert tracker.to_commit() == everything_committed(4)


def test_another_locale_ends_a_run_and_order_is_kept(fakes: FakeVendors) -> None:
    """A locale is the request's query: updates of two locales never share a request, and
    the runs go in the order their events came."""
    events = [
        webflow(altText="one"),
        webflow(displayName="two.png"),
        webflow(altText="three", localeId=LOCALE),
        webflow(altText="four"),
        webflow(asset=OTHER, altText="other"),
    ]
    tracker = run_pipeline(fakes, events, settings=COALESCE)
    sent = [(r.path[-4:], r.query.get("localeId"), r.body) for r in fakes.webflow.updates()]
    mine = [s for s in sent if s[0] == ASSET[-4:]]
    assert mine == [
        ("b745", None, {"altText": "one", "displayName": "two.png"}),
        ("b745", LOCALE, {"altText": "three"}),
        ("b745", None, {"altText": "four"}),
    ]
    assert ("b746", None, {"altText": "other"}) in sent
    assert tracker.to_commit() == everything_committed(5)


def test_a_refused_merged_update_is_sent_again_one_event_at_a_time(fakes: FakeVendors) -> None:
    """A 400 for the merged request says nothing about which update was bad: each goes
    alone, and only the one the vendor refuses alone is dead-lettered."""
    fakes.webflow.fail_next(Reply(status=400), Reply(status=400))  # the run, then its head
    events = [webflow(displayName=f"{n}.png") for n in range(4)]
    dead_letters = NoDeadLetters()
    tracker = run_pipeline(fakes, events, dead_letters=dead_letters, settings=COALESCE)
    bodies = [(r.status, r.body) for r in fakes.webflow.updates()]
    assert bodies == [
        (400, {"displayName": "3.png"}),
        (400, {"displayName": "0.png"}),
        (200, {"displayName": "1.png"}),
        (200, {"displayName": "2.png"}),
        (200, {"displayName": "3.png"}),
    ]
    assert [(record.offset, reason) for record, reason, *_ in dead_letters.written] == [
        (0, Reason.VENDOR_REJECTED)
    ]
    assert tracker.to_commit() == everything_committed(4)


def test_a_run_that_fails_for_the_connection_dead_letters_each_event(fakes: FakeVendors) -> None:
    """Retries used up are the connection's trouble, not one update's: every event of the
    run is dead-lettered with the outcome, none is sent alone again."""
    fakes.webflow.fail_next(*[Reply(status=503)] * 4)  # FAST_RETRY: 4 attempts
    events = [webflow(displayName=f"{n}.png") for n in range(3)]
    dead_letters = NoDeadLetters()
    tracker = run_pipeline(fakes, events, dead_letters=dead_letters, settings=COALESCE)
    assert len(fakes.webflow.updates()) == 4
    assert [(record.offset, reason) for record, reason, *_ in dead_letters.written] == [
        (n, Reason.RETRIES_EXHAUSTED) for n in range(3)
    ]
    assert tracker.to_commit() == everything_committed(3)


def test_a_duplicate_in_a_run_is_skipped_and_finished(fakes: FakeVendors) -> None:
    first = webflow(displayName="a.png")
    events = [first, webflow(altText="b"), first]
    before = REGISTRY.get_sample_value("asset_sync_events_duplicate_total", {"vendor": "webflow"})
    tracker = run_pipeline(fakes, events, settings=COALESCE)
    assert [r.body for r in fakes.webflow.updates()] == [{"displayName": "a.png", "altText": "b"}]
    after = REGISTRY.get_sample_value("asset_sync_events_duplicate_total", {"vendor": "webflow"})
    assert (after or 0) - (before or 0) == 1
    assert tracker.to_commit() == everything_committed(3)


def test_runs_are_at_most_batch_max_long(fakes: FakeVendors) -> None:
    events = [webflow(displayName=f"{n}.png") for n in range(7)]
    tracker = run_pipeline(fakes, events, settings=COALESCE, batch_max=3)
    assert [r.body for r in fakes.webflow.updates()] == [
        {"displayName": "2.png"},
        {"displayName": "5.png"},
        {"displayName": "6.png"},
    ]
    assert tracker.to_commit() == everything_committed(7)


def test_a_batched_vendor_sends_one_entry_per_asset_in_its_batch(fakes: FakeVendors) -> None:
    """Autodesk: one batch-patch body carries an asset once, so two updates of one asset
    would need two calls; coalesced, they are one entry of one call."""
    asset = "286c1ef7-70f6-4ebd-8f87-e7f591ec0001"
    events = [
        valid("autodesk", asset_id=asset, changes={"clientAssetId": "A-1"}),
        valid("autodesk", asset_id=asset, changes={"barcode": "B-2"}),
    ]
    tracker = run_pipeline(fakes, events, settings=COALESCE, batch_linger_s=0.05)
    (request,) = fakes.autodesk.updates()
    assert request.body == {asset: {"clientAssetId": "A-1", "barcode": "B-2"}}
    assert tracker.to_commit() == everything_committed(2)


def test_a_bug_in_merging_sends_each_event_alone(
    fakes: FakeVendors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of ours while merging never strands a run: each event goes by itself."""

    def broken(*_: Any) -> None:
        raise RuntimeError("merge bug")

    monkeypatch.setattr(VENDORS["webflow"], "fold", classmethod(broken))
    events = [webflow(displayName=f"{n}.png") for n in range(3)]
    tracker = run_pipeline(fakes, events, settings=COALESCE)
    bodies = [r.body for r in fakes.webflow.updates()]
    assert bodies == [{"displayName": f"{n}.png"} for n in range(3)]
    assert tracker.to_commit() == everything_committed(3)


def test_updates_that_come_while_the_connection_is_paused_join_its_run(
    fakes: FakeVendors,
) -> None:
    """A paused connection's asset waits before its run is made: what arrives meanwhile
    goes in the same request once it is resumed."""
    config = parse_config(
        {
            "connections": {
                "webflow": {"default": {**fakes.connections()["webflow"]["default"], **COALESCE}}
            }
        },
        environ={},
    )
    tracker = OffsetTracker()

    async def run() -> None:
        dispatcher = Dispatcher(config, rand=lambda: 0.5)
        pipeline = Pipeline(config, dispatcher, NoDeadLetters(), tracker)
        breaker = dispatcher.breakers[("webflow", "default")]
        breaker.pause(True)
        try:
            for offset, event in enumerate(
                [webflow(displayName="a.png"), webflow(altText="b"), webflow(displayName="c.png")]
            ):
                pipeline.submit(SourceRecord("t", 0, offset, 0, None, b"", ()), event)
                await asyncio.sleep(0.1)  # the first waits for the resume meanwhile
            breaker.pause(False)
            assert await pipeline.wait_idle(10)
        finally:
            await dispatcher.close()

    asyncio.run(run())
    assert [r.body for r in fakes.webflow.updates()] == [{"displayName": "c.png", "altText": "b"}]
    assert tracker.to_commit() == everything_committed(3)
