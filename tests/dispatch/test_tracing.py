"""Tracing (issue 17, point 1) through the real pipeline, dispatcher and vendor fakes, spans
kept by an in-memory exporter: the span tree in the producer's trace, its attributes, one
span per HTTP request, and the ``traceparent`` each vendor request carried. Only the offsets
and the dead-letter writer are in-memory stand-ins."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumer.broker.dead_letter import DeadLetterWriter, SourceRecord
from consumer.broker.offsets import OffsetTracker
from consumer.config import parse_config
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.pipeline import Pipeline
from consumer.events import Event, parse_record
from consumer.telemetry.tracing import Tracing
from tests.dispatch.conftest import FAST_RETRY, asset_id
from tests.fakes import FakeVendors, Reply
from tests.samples import encode, event_for

TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


class DeadLetters(DeadLetterWriter):
    """Keeps what each dead-letter write was given, the known keywords included."""

    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []

    async def write(self, record: SourceRecord, reason: Any, error: str, **known: Any) -> None:
        self.written.append({"record": record, "reason": str(reason), **known})


def traceparent() -> tuple[str, str, str]:
    """A sampled W3C traceparent of a producer's span, and its trace and span ids."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def traced(vendor: str, parent: str | None, **data: Any) -> Event:
    document = event_for(vendor, **data)
    if parent is not None:
        document["traceparent"] = parent
        document["tracestate"] = TRACESTATE
    event = parse_record(encode(document))
    assert isinstance(event, Event), event
    return event


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


def in_memory(exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, consumer_group="asset-sync")


def run(
    fakes: FakeVendors,
    events: list[Event],
    tracing: Tracing | None,
    dead_letters: DeadLetters | None = None,
    **dispatch: Any,
) -> Dispatcher:
    config = parse_config(
        {"connections": fakes.connections(), "retry": FAST_RETRY, "dispatch": dispatch},
        environ={},
    )

    async def go() -> Dispatcher:
        dispatcher = Dispatcher(config, rand=lambda: 0.5, tracing=tracing)
        pipeline = Pipeline(config, dispatcher, dead_letters or DeadLetters(), OffsetTracker())
        for offset, event in enumerate(events):
            pipeline.submit(SourceRecord("asset-changes", 3, 100 + offset, 0, None, b"", ()), event)
        try:
            assert await pipeline.wait_idle(30), "the pipeline did not finish"
        finally:
            await dispatcher.close()
        return dispatcher

    return asyncio.run(go())


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def header(span: ReadableSpan) -> str:
    """The traceparent a request in this span must have carried."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def test_the_span_tree_continues_the_producers_trace(
    fakes: FakeVendors, exporter: InMemorySpanExporter
) -> None:
    parent, trace_id, span_id = traceparent()
    fakes.trelica.fail_next(Reply(503))  # retried: two requests, two request spans
    tracing = in_memory(exporter)  # as at start: from now on parse_record times itself
    event = traced("trelica", parent)
    run(fakes, [event], tracing)

    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == ["PATCH", "PATCH", "consume", "deliver", "validate"]
    assert {s.context.trace_id for s in spans if s.context} == {int(trace_id, 16)}
    (consume,) = named(spans, "consume")
    (validate,) = named(spans, "validate")
    (deliver,) = named(spans, "deliver")
    requests = named(spans, "PATCH")
    assert parent_id(consume) == int(span_id, 16)
    assert consume.parent is not None and consume.parent.is_remote
    assert consume.context is not None and deliver.context is not None
    assert parent_id(validate) == parent_id(deliver) == consume.context.span_id
    assert event.parsed is not None  # validate is parse_record's time; consume starts with it
    assert (validate.start_time, validate.end_time) == event.parsed
    assert consume.start_time == event.parsed[0]
    assert [parent_id(r) for r in requests] == [deliver.context.span_id] * 2

    assert consume.attributes is not None and deliver.attributes is not None
    identity = {
        "asset_sync.vendor": "trelica",
        "asset_sync.connection": "default",
        "asset_sync.asset_id": event.asset_id,
        "cloudevents.event_id": event.id,
        "cloudevents.event_source": event.source,
    }
    assert dict(consume.attributes) == {
        **identity,
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": "asset-changes",
        "messaging.destination.partition.id": "3",
        "messaging.kafka.offset": 100,
        "messaging.consumer.group.name": "asset-sync",
        "asset_sync.outcome": "delivered",
        "asset_sync.attempts": 2,
    }
    assert dict(deliver.attributes) == {
        **identity,
        "asset_sync.outcome": "delivered",
        "asset_sync.attempts": 2,
    }
    statuses = [r.attributes["http.response.status_code"] for r in requests if r.attributes]
    assert statuses == [503, 200]
    first = requests[0].attributes or {}
    assert first["http.request.method"] == "PATCH"
    assert first["server.address"] == "127.0.0.1"
    assert first["asset_sync.asset_id"] == event.asset_id
    assert first["error.type"] == "503"
    # nothing secret, no body: every attribute value is one of these short, known things
    for span in spans:
        for key in span.attributes or {}:
            assert key.split(".")[0] in {
                "asset_sync", "cloudevents", "messaging", "http", "server", "error"
            }, key  # fmt: skip

    # the vendor saw each request's own span as its parent, in the producer's trace
    received = fakes.trelica.updates()
    assert [r.headers["traceparent"] for r in received] == [header(r) for r in requests]
    assert all(r.headers["tracestate"] == TRACESTATE for r in received)


def test_tracing_off_passes_the_events_context_unchanged_and_makes_no_span(
    fakes: FakeVendors, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    made: list[str] = []
    original = sdk_trace.Span.__init__

    def counted(self: sdk_trace.Span, name: str, *args: Any, **kwargs: Any) -> None:
        made.append(name)
        original(self, name, *args, **kwargs)

    monkeypatch.setattr(sdk_trace.Span, "__init__", counted)
    parent, _, _ = traceparent()
    events = [traced("lexful", parent), traced("lexful", None, asset_id=asset_id(7))]
    dispatcher = run(fakes, events, None)

    assert dispatcher.tracing is None
    assert made == []
    headers = [r.headers for r in fakes.lexful.updates()]
    with_context = [h for h in headers if "traceparent" in h]
    assert [(h["traceparent"], h["tracestate"]) for h in with_context] == [(parent, TRACESTATE)]
    assert len(headers) == 2  # the event without a context was sent without one


def test_a_batch_is_a_child_of_its_first_event_and_links_the_others(
    fakes: FakeVendors, exporter: InMemorySpanExporter
) -> None:
    contexts = [traceparent() for _ in range(4)]
    events = [traced("autodesk", p, asset_id=asset_id(i)) for i, (p, _, _) in enumerate(contexts)]
    run(fakes, events, in_memory(exporter), batch_max=4, batch_linger_s=0.2)

    spans = exporter.get_finished_spans()
    delivers = {s.context.span_id: s for s in named(spans, "deliver") if s.context}
    (request,) = named(spans, "PATCH")
    assert len(delivers) == 4
    linked = {link.context.span_id for link in request.links}
    assert parent_id(request) in delivers
    assert linked | {parent_id(request)} == set(delivers)
    assert request.attributes is not None and request.attributes["asset_sync.batch_size"] == 4
    (received,) = fakes.autodesk.updates()
    assert received.headers["traceparent"] == header(request)
    # the request is in its first event's trace, and links reach the other traces
    first = delivers[parent_id(request) or 0]
    assert request.context is not None and first.context is not None
    assert request.context.trace_id == first.context.trace_id
    assert {link.context.trace_id for link in request.links} | {request.context.trace_id} == {
        int(trace_id, 16) for _, trace_id, _ in contexts
    }


def test_a_dead_lettered_event_keeps_its_trace_context(
    fakes: FakeVendors, exporter: InMemorySpanExporter
) -> None:
    parent, _, _ = traceparent()
    fakes.trelica.fail_next(Reply(400, body={"error": "no"}))
    dead_letters = DeadLetters()
    run(fakes, [traced("trelica", parent)], in_memory(exporter), dead_letters)

    (written,) = dead_letters.written
    assert (written["traceparent"], written["tracestate"]) == (parent, TRACESTATE)
    (consume,) = named(exporter.get_finished_spans(), "consume")
    assert consume.attributes is not None
    assert consume.attributes["asset_sync.outcome"] == "dead_lettered"
    assert consume.attributes["asset_sync.reason"] == "vendor_rejected"
    assert consume.status.status_code.name == "ERROR"


def test_an_event_without_context_starts_a_trace_and_the_vendor_gets_it(
    fakes: FakeVendors, exporter: InMemorySpanExporter
) -> None:
    run(fakes, [traced("lexful", None)], in_memory(exporter))
    spans = exporter.get_finished_spans()
    (consume,) = named(spans, "consume")
    (request,) = named(spans, "PATCH")
    assert consume.parent is None
    assert consume.context is not None and request.context is not None
    assert request.context.trace_id == consume.context.trace_id
    (received,) = fakes.lexful.updates()
    assert received.headers["traceparent"] == header(request)
    assert "tracestate" not in received.headers
