"""The CloudEvents distributed-tracing extension read from both Kafka binding modes, kept in
dead-letter records, passed on to vendors when tracing is off, and how tracing is switched
on (consumer/events.py, consumer/broker/dead_letter.py, consumer/telemetry/tracing.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from consumer.broker.dead_letter import SourceRecord, dead_letter_headers
from consumer.config import parse_config
from consumer.delivery.http import HttpRequest
from consumer.errors import ConfigError
from consumer.events import Event, Rejection, parse_record
from consumer.reasons import Reason
from consumer.telemetry.tracing import enabled, from_config, propagate
from tests.samples import encode, event_for

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STATE = "congo=t61rcWkgMzE"


def structured(**extensions: Any) -> Event | Rejection:
    return parse_record(encode({**event_for("trelica"), **extensions}))


def binary(*headers: tuple[str, bytes | None]) -> Event | Rejection:
    document = event_for("trelica")
    attributes = [
        (f"ce_{name}", str(value).encode())
        for name, value in document.items()
        if name not in ("data", "datacontenttype")
    ]
    return parse_record(
        json.dumps(document["data"]).encode(),
        [*attributes, ("content-type", b"application/json"), *headers],
    )


def test_structured_mode_reads_traceparent_and_tracestate() -> None:
    event = structured(traceparent=PARENT, tracestate=STATE)
    assert isinstance(event, Event)
    assert (event.traceparent, event.tracestate) == (PARENT, STATE)


def test_binary_mode_reads_them_from_ce_headers() -> None:
    event = binary(("ce_traceparent", PARENT.encode()), ("ce_tracestate", STATE.encode()))
    assert isinstance(event, Event)
    assert (event.traceparent, event.tracestate) == (PARENT, STATE)


def test_an_event_without_them_has_none() -> None:
    for event in (structured(), binary()):
        assert isinstance(event, Event)
        assert (event.traceparent, event.tracestate) == (None, None)


@pytest.mark.parametrize(
    "value",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        PARENT + "-extra",  # version 00 has exactly four fields
        PARENT + "\r\nX-Injected: 1",
        "",
        5,
        None,
        {"traceparent": PARENT},
    ],
)
def test_a_malformed_traceparent_is_ignored_not_refused(value: Any) -> None:
    event = structured(traceparent=value, tracestate=STATE)
    assert isinstance(event, Event), event  # never a dead-letter for it
    assert (event.traceparent, event.tracestate) == (None, None)  # W3C: drop tracestate too


@pytest.mark.parametrize("raw", [b"\xff\xfe", None, b""])
def test_a_malformed_binary_header_is_ignored_not_refused(raw: bytes | None) -> None:
    event = binary(("ce_traceparent", raw), ("ce_tracestate", raw))
    assert isinstance(event, Event), event
    assert event.traceparent is None


def test_a_later_version_may_add_fields_and_a_bad_tracestate_alone_is_dropped() -> None:
    later = "01" + PARENT[2:] + "-what-comes-next"
    event = structured(traceparent=later, tracestate="a=1\nb=2")
    assert isinstance(event, Event)
    assert (event.traceparent, event.tracestate) == (later, None)


def test_a_rejected_event_keeps_its_context_for_the_dead_letter_record() -> None:
    rejected = parse_record(
        encode({**event_for("trelica"), "data": {"asset_id": "x"}, "traceparent": PARENT})
    )
    assert isinstance(rejected, Rejection)
    assert rejected.traceparent == PARENT


def record(*headers: tuple[str, bytes]) -> SourceRecord:
    return SourceRecord("asset-changes", 0, 7, 1, b"k", b"{}", headers)


def test_a_dead_letter_record_carries_traceparent_as_a_header() -> None:
    """Structured mode: the value holds the context; the record gets it as headers too."""
    headers = dead_letter_headers(
        record(), Reason.VENDOR_REJECTED, "HTTP 400", traceparent=PARENT, tracestate=STATE
    )
    assert headers[:2] == [("traceparent", PARENT.encode()), ("tracestate", STATE.encode())]
    assert not any(name.startswith("dlq.trace") for name, _ in headers)


def test_binary_headers_stay_byte_for_byte_and_are_not_doubled() -> None:
    original = (("ce_traceparent", PARENT.encode()), ("traceparent", b"00-from-the-producer"))
    headers = dead_letter_headers(
        record(*original), Reason.VENDOR_REJECTED, "HTTP 400", traceparent=PARENT
    )
    assert headers[:2] == list(original)
    assert [name for name, _ in headers].count("traceparent") == 1


def test_no_context_no_header() -> None:
    headers = dead_letter_headers(record(), Reason.VENDOR_REJECTED, "HTTP 400")
    assert not any(name.startswith("trace") for name, _ in headers)


def test_tracing_off_propagates_the_events_own_context() -> None:
    event = structured(traceparent=PARENT, tracestate=STATE)
    assert isinstance(event, Event)
    request = HttpRequest("PATCH", "https://x.test/a", {"Authorization": "Bearer t"}, b"{}")
    sent = propagate(request, event)
    assert sent.headers == {"Authorization": "Bearer t", "traceparent": PARENT, "tracestate": STATE}
    plain = structured()
    assert isinstance(plain, Event)
    assert propagate(request, plain) is request


@pytest.mark.parametrize(
    ("configured", "environ", "on"),
    [
        (False, {}, False),  # off by default
        (True, {}, True),
        (False, {"OTEL_TRACES_EXPORTER": "otlp"}, True),
        (False, {"OTEL_TRACES_EXPORTER": " console , otlp "}, True),
        (True, {"OTEL_TRACES_EXPORTER": "none"}, False),
        (True, {"OTEL_SDK_DISABLED": "TRUE"}, False),
        (False, {"OTEL_SDK_DISABLED": "false"}, False),  # not disabled is not on
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ],
)
def test_what_switches_tracing_on(configured: bool, environ: dict[str, str], on: bool) -> None:
    config = parse_config({"tracing": {"enabled": configured}}, environ={})
    assert enabled(config, environ) is on


def test_the_configuration_section_and_its_override() -> None:
    assert parse_config({}, environ={}).tracing.enabled is False
    config = parse_config({}, environ={"ASSET_SYNC_TRACING__ENABLED": "true"})
    assert config.tracing.enabled is True
    with pytest.raises(ConfigError, match=r"tracing\.sample"):
        parse_config({"tracing": {"sample": 1}}, environ={})


def test_otlp_over_http_is_set_up_from_the_environment() -> None:
    config = parse_config({"tracing": {"enabled": True}}, environ={})
    tracing = from_config(config, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert tracing is not None
    try:
        processors = tracing.provider._active_span_processor._span_processors
        (processor,) = processors
        assert isinstance(processor, BatchSpanProcessor)
        assert type(processor.span_exporter).__name__ == "OTLPSpanExporter"
    finally:
        tracing.provider.shutdown()
    assert from_config(parse_config({}, environ={}), {}) is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "'zipkin' is not one of otlp, console, none"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "only http"),
    ],
)
def test_an_exporter_we_do_not_ship_is_a_one_line_error(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        from_config(parse_config({}, environ={}), environ)
    assert "\n" not in str(error.value)
