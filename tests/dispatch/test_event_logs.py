"""Log lines about one event carry its asset id and CloudEvents source beside its id, so an
operator can follow an asset (or a producer) through the logs (issue 17, point 2). The pipeline,
dispatcher and vendor fakes are the real ones; only the offsets and the dead-letter writer are
in-memory stand-ins (no broker)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.broker.dead_letter import SourceRecord
from consumer.broker.offsets import OffsetTracker
from consumer.config import parse_config
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.pipeline import Pipeline
from consumer.events import Event, Rejection, parse_record
from consumer.telemetry.logs import LOGGER_NAME, JsonFormatter, about_event, get_logger, reset_event
from tests.dispatch.conftest import FAST_RETRY, NoDeadLetters, valid
from tests.fakes import FakeVendors, Reply


class Lines(logging.Handler):
    """Every line as the service would write it (its JSON formatter), parsed back."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def about(self, event_id: str | None, msg: str) -> dict[str, Any]:
        [line] = [x for x in self.lines if x.get("event_id") == event_id and x["msg"] == msg]
        return line


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger(LOGGER_NAME)
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run(fakes: FakeVendors, parsed: list[Event | Rejection]) -> NoDeadLetters:
    config = parse_config({"connections": fakes.connections(), "retry": FAST_RETRY}, environ={})
    dead_letters = NoDeadLetters()

    async def go() -> None:
        dispatcher = Dispatcher(config, rand=lambda: 0.5)
        pipeline = Pipeline(config, dispatcher, dead_letters, OffsetTracker())
        for offset, item in enumerate(parsed):
            pipeline.submit(SourceRecord("t", 0, offset, 0, None, b"", ()), item)
        try:
            assert await pipeline.wait_idle(30), "the pipeline did not finish"
        finally:
            await dispatcher.close()

    asyncio.run(go())
    return dead_letters


def test_delivered_and_dead_lettered_lines_name_the_asset_and_the_source(
    fakes: FakeVendors, lines: Lines
) -> None:
    delivered = valid("trelica")
    refused = valid("lexful")  # the vendor answers 400: dead-lettered as vendor_rejected
    fakes.lexful.always = Reply(status=400)
    unknown = dataclasses.replace(valid("webflow"), connection="made-up")  # unknown_connection
    invalid = parse_record(b'{"id": "not-an-event", "vendor": "lexful"}')
    assert isinstance(invalid, Rejection)

    dead_letters = run(fakes, [delivered, refused, unknown, invalid])

    assert sorted(str(args[1]) for args in dead_letters.written) == [
        "invalid_event",
        "unknown_connection",
        "vendor_rejected",
    ]
    for event, msg in (
        (delivered, "delivered"),
        (refused, "dead-lettered"),
        (unknown, "dead-lettered"),
    ):
        line = lines.about(event.id, msg)
        assert (line["asset_id"], line["source"]) == (event.asset_id, event.source), line
        assert list(line)[4:7] == ["event_id", "asset_id", "source"], "beside the event id"
    # An invalid event's asset and source are not known for sure: null, never a guess.
    line = lines.about("not-an-event", "dead-lettered")
    assert (line["asset_id"], line["source"]) == (None, None)


def test_only_lines_naming_the_current_event_get_its_asset_and_source(lines: Lines) -> None:
    """A task started during a delivery (a batch's request) inherits the delivery's context;
    a line it logs about something else must not be attributed to that event."""
    event = valid("trelica")
    log = get_logger("test")
    token = about_event(event)
    try:
        log.info("about it", extra={"fields": {"event_id": event.id}})
        log.info("about another", extra={"fields": {"event_id": "other"}})
        log.info("about the connection", extra={"fields": {"connection": "default"}})
        log.info("own fields win", extra={"fields": {"event_id": event.id, "source": "x"}})
    finally:
        reset_event(token)
    log.info("after it", extra={"fields": {"event_id": event.id}})
    by_msg = {line["msg"]: line for line in lines.lines}
    assert by_msg["about it"]["asset_id"] == event.asset_id
    assert by_msg["about it"]["source"] == event.source
    assert (by_msg["about another"]["asset_id"], by_msg["about another"]["source"]) == (None, None)
    assert "asset_id" not in by_msg["about the connection"]
    assert by_msg["own fields win"]["source"] == "x"
    assert by_msg["after it"]["asset_id"] is None
