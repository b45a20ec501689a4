"""OpenTelemetry spans for one event's way from Kafka to its vendor, and the W3C trace
context passed on to the vendor call.

Each event gets ``consume`` (a child of the producer's span when the event carries the
CloudEvents distributed-tracing extension, else a new trace), with two children: ``validate``
(the parse and schema check, timed by ``parse_record``) and ``deliver`` (retries included),
whose children are one span per HTTP request, named by its method as the HTTP semantic
conventions say. A batched call (Autodesk) is a child of its first event's ``deliver`` and
links to the others'.

Off by default (``tracing.enabled``, or ``OTEL_TRACES_EXPORTER``): then the pipeline and the
dispatcher hold ``None`` instead of a ``Tracing`` and create no span at all; the vendor call
still carries the event's own ``traceparent``, unchanged (``propagate``). Attributes never
hold a secret, a request or response body, or an error text (it may quote the vendor).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consumer.config import Config
from consumer.delivery.http import HttpClient, HttpRequest, HttpResponse
from consumer.errors import ConfigError, RetryableError
from consumer.events import Event, time_parsing

if TYPE_CHECKING:
    from consumer.outcome import Outcome

_PROPAGATOR = TraceContextTextMapPropagator()
SCOPE = "asset-sync"

__all__ = ["Span", "Tracing", "finish", "from_config", "propagate"]


def propagate(request: HttpRequest, event: Event) -> HttpRequest:
    """Tracing off: the vendor still sees the producer's trace, the event's own headers."""
    if event.traceparent is None:
        return request
    headers = {**request.headers, "traceparent": event.traceparent}
    if event.tracestate:
        headers["tracestate"] = event.tracestate
    return replace(request, headers=headers)


def parent_context(event: Event) -> Context | None:
    """The producer's span as parent, or None (a new trace) when the event carries none."""
    if event.traceparent is None:
        return None
    carrier = {"traceparent": event.traceparent}
    if event.tracestate:
        carrier["tracestate"] = event.tracestate
    return _PROPAGATOR.extract(carrier)


def _event_attributes(event: Event) -> dict[str, str]:
    return {
        "asset_sync.vendor": event.vendor,
        "asset_sync.connection": event.connection,
        "asset_sync.asset_id": event.asset_id,
        "cloudevents.event_id": event.id,
        "cloudevents.event_source": event.source,
    }


def finish(span: Span, outcome: str, attempts: int, reason: str | None = None) -> None:
    """What became of the event: delivered, duplicate, stale or dead_lettered."""
    span.set_attribute("asset_sync.outcome", outcome)
    span.set_attribute("asset_sync.attempts", attempts)
    if reason is not None:
        span.set_attribute("asset_sync.reason", reason)
        span.set_status(StatusCode.ERROR, reason)


class Tracing:
    """The spans of one service: made from a provider (an OTLP exporter in production, an
    in-memory one in tests); never the global provider, so tests can hold several."""

    def __init__(self, provider: TracerProvider, *, consumer_group: str | None = None) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE)
        self.consumer_group = consumer_group
        time_parsing()  # the span ``validate`` needs parse_record's start and end
        # each event's ``deliver`` span while it is open, by the event object's id: a
        # request span finds its parent (and a batch its links) there
        self._delivering: dict[int, Span] = {}

    @contextmanager
    def consume(self, event: Event, topic: str, partition: int, offset: int) -> Iterator[Span]:
        """The root span of one consumed event, current while it is delivered; it starts
        when ``parse_record`` did."""
        parsed = event.parsed
        attributes: dict[str, str | int] = {
            **_event_attributes(event),
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
        }
        if self.consumer_group:
            attributes["messaging.consumer.group.name"] = self.consumer_group
        span = self.tracer.start_span(
            "consume",
            context=parent_context(event),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            start_time=parsed[0] if parsed else None,
        )
        if parsed is not None:
            validate = self.tracer.start_span(
                "validate", context=trace.set_span_in_context(span), start_time=parsed[0]
            )
            validate.set_attribute("asset_sync.outcome", "valid")
            validate.end(end_time=parsed[1])
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                yield span
            except asyncio.CancelledError:  # dropped (a rebalance) or shut down: not an error
                span.set_attribute("asset_sync.outcome", "cancelled")
                raise

    @contextmanager
    def deliver(self, event: Event) -> Iterator[Span]:
        """One event's delivery, its retries included. Its parent is the current span (the
        pipeline's ``consume``), else the event's trace (``asset-sync dispatch``)."""
        current = trace.get_current_span().get_span_context()
        context = None if current.is_valid else parent_context(event)
        with self.tracer.start_as_current_span(
            "deliver",
            context=context,
            attributes=_event_attributes(event),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            key = id(event)
            self._delivering[key] = span
            try:
                yield span
            finally:
                if self._delivering.get(key) is span:
                    del self._delivering[key]

    @staticmethod
    def delivered(span: Span, outcome: Outcome) -> None:
        if outcome.status is not None:
            span.set_attribute("http.response.status_code", outcome.status)
        finish(
            span,
            "delivered" if outcome.delivered else "dead_lettered",
            outcome.attempts,
            None if outcome.delivered or outcome.reason is None else str(outcome.reason),
        )

    async def send(
        self, http: HttpClient, request: HttpRequest, events: Sequence[Event], connection: str
    ) -> HttpResponse:
        """One HTTP request in its own span, whose context the vendor receives as
        ``traceparent`` (the producer's ``tracestate`` travels with it)."""
        spans = [self._delivering.get(id(event)) for event in events]
        first = spans[0]
        context = None if first is None else trace.set_span_in_context(first)
        links = [Link(s.get_span_context()) for s in spans[1:] if s is not None]
        url = urlsplit(request.url)
        attributes: dict[str, str | int] = {
            "http.request.method": request.method,
            "server.address": url.hostname or "",
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            "asset_sync.vendor": events[0].vendor,
            "asset_sync.connection": connection,
            "asset_sync.batch_size": len(events),
        }
        if len(events) == 1:
            attributes["asset_sync.asset_id"] = events[0].asset_id
        with self.tracer.start_as_current_span(
            request.method,
            context=context,
            kind=SpanKind.CLIENT,
            links=links,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            headers = dict(request.headers)
            _PROPAGATOR.inject(headers)
            try:
                response = await http.send(replace(request, headers=headers))
            except RetryableError as error:
                span.set_attribute("error.type", error.retry_reason)
                span.set_status(StatusCode.ERROR, error.retry_reason)
                raise
            except asyncio.CancelledError:
                span.set_attribute("error.type", "cancelled")
                raise
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 400:
                span.set_attribute("error.type", str(response.status))
                span.set_status(StatusCode.ERROR)
            return response

    def flush(self) -> None:
        """Export what is finished; bounded, as it blocks the loop (a collector that is down
        must not hold up a shutdown; the SDK tries again at exit)."""
        self.provider.force_flush(timeout_millis=2000)


def _exporters(environ: Mapping[str, str]) -> list[str]:
    value = environ.get("OTEL_TRACES_EXPORTER", "")
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def enabled(config: Config, environ: Mapping[str, str]) -> bool:
    """On by ``tracing.enabled`` or by naming an exporter in ``OTEL_TRACES_EXPORTER``; off
    whatever the configuration says by ``OTEL_SDK_DISABLED=true`` or
    ``OTEL_TRACES_EXPORTER=none`` (the OpenTelemetry environment specification)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporters(environ)
    if "none" in exporters:
        return False
    return config.tracing.enabled or bool(exporters)


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigError(
            "OTEL_TRACES_EXPORTER", f"{name!r} is not one of otlp, console, none", what="variable"
        )
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(variable, "").strip()
        if protocol:
            if protocol != "http/protobuf":
                raise ConfigError(
                    variable, f"{protocol!r}: only http/protobuf is supported", what="variable"
                )
            break
    # imported here: only a service that exports pays for loading protobuf
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_* as usual


def from_config(config: Config, environ: Mapping[str, str] | None = None) -> Tracing | None:
    """The service's tracing, or None when it is off. The SDK reads the other ``OTEL_*``
    variables itself: the sampler, the batch processor, the exporter's endpoint."""
    environ = os.environ if environ is None else environ
    if not enabled(config, environ):
        return None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "asset-sync"}))
    provider = TracerProvider(resource=resource)
    processors: list[SpanProcessor] = [
        BatchSpanProcessor(_exporter(name, environ)) for name in _exporters(environ) or ["otlp"]
    ]
    for processor in processors:
        provider.add_span_processor(processor)
    return Tracing(provider, consumer_group=config.kafka.group_id)
