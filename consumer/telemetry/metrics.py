"""Every Prometheus metric of asset-sync, declared here and nowhere else (SPEC section 6).

Labels are bounded: vendor names, connection names (only those of the configuration, never
one read from an event), HTTP status codes, dead-letter reasons, retry reasons, topic and
partition. Never an asset id, an event id or an error text.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

BUILD_INFO = Info("asset_sync_build", "Version of the running asset-sync.")
BUILD_INFO.info({"version": __version__})

EVENTS_CONSUMED = Counter(
    "asset_sync_events_consumed_total", "Records read from the source topic.", ["topic"]
)
EVENTS_DELIVERED = Counter(
    "asset_sync_events_delivered_total", "Events the vendor accepted.", ["vendor"]
)
EVENTS_DEAD_LETTERED = Counter(
    "asset_sync_events_dead_lettered_total",
    "Events written to the dead-letter topic.",
    ["vendor", "reason"],
)
EVENTS_COALESCED = Counter(
    "asset_sync_events_coalesced_total",
    "Events delivered in one request with an earlier update of the same asset (coalescing).",
    ["vendor"],
)
EVENTS_DUPLICATE = Counter(
    "asset_sync_events_duplicate_total",
    "Events skipped because the same source and id were delivered recently.",
    ["vendor"],
)
EVENTS_STALE = Counter(
    "asset_sync_events_stale_total",
    "Events not delivered because a newer update had set every field they set.",
    ["vendor"],
)
STALE_FIELDS = Counter(
    "asset_sync_stale_fields_total",
    "Fields taken out of events because a newer update had set them (stale events included).",
    ["vendor"],
)
VENDOR_REQUESTS = Counter(
    "asset_sync_vendor_requests_total",
    "HTTP requests to vendor APIs by answer (status code, 'timeout' or 'connection').",
    ["vendor", "code"],
)
VENDOR_REQUEST_DURATION = Histogram(
    "asset_sync_vendor_request_duration_seconds",
    "Time for one vendor HTTP request.",
    ["vendor"],
    buckets=LATENCY_BUCKETS,
)
RETRIES = Counter("asset_sync_retries_total", "Attempts retried, by why.", ["vendor", "reason"])
CONNECTION_STATE = Gauge(
    "asset_sync_connection_state",
    "Circuit breaker of each configured connection: 0 closed, 1 half-open, 2 open.",
    ["vendor", "connection"],
)
CONNECTION_PAUSED = Gauge(
    "asset_sync_connection_paused",
    "1 while the connection is paused by asset-sync ctl pause (its events wait), else 0.",
    ["vendor", "connection"],
)
CONNECTION_TRANSITIONS = Counter(
    "asset_sync_connection_transitions_total",
    "Circuit breaker state changes, by the state entered (closed, half_open, open).",
    ["vendor", "connection", "state"],
)
EVENT_DELIVERY = Histogram(
    "asset_sync_event_delivery_seconds",
    "From the record's timestamp to the vendor's acceptance.",
    ["vendor"],
    buckets=DELIVERY_BUCKETS,
)
EVENTS_PARKED = Counter(
    "asset_sync_events_parked_total",
    "Events moved to their connection's parking topic (acknowledged) while it was unavailable.",
    ["vendor", "connection"],
)
PARKED_EVENTS = Gauge(
    "asset_sync_parked_events",
    "Events in the connection's parking topic not read back yet (partitions of this replica).",
    ["vendor", "connection"],
)
PARKED_OLDEST_AGE = Gauge(
    "asset_sync_parked_oldest_age_seconds",
    "Seconds since the oldest event not read back yet was parked (this replica's partitions; "
    "0 when none is parked).",
    ["vendor", "connection"],
)
CONNECTION_PARKING = Gauge(
    "asset_sync_connection_parking",
    "1 while the connection's new events go to its parking topic, else 0.",
    ["vendor", "connection"],
)
INFLIGHT = Gauge(
    "asset_sync_inflight_events",
    "Events being delivered now, per configured connection.",
    ["vendor", "connection"],
)


class Backlog(Protocol):
    def backlog(self) -> Iterable[tuple[str, str, int, float]]:
        """(vendor, connection, events waiting, age in seconds of the oldest) per configured
        connection, 0 and 0 for one where nothing waits."""
        ...


class ConnectionBacklog(Collector):
    """``asset_sync_connection_waiting_events`` and
    ``asset_sync_connection_oldest_waiting_seconds``, read from the pipeline at scrape time.

    Waiting is every event accepted from Kafka and not yet finished (delivered or
    dead-lettered): queued behind its asset, the connection's lane, breaker or pacer, or on the
    wire. Read at scrape time because an age keeps growing while nothing happens; a gauge set
    per event would show a stuck connection's age frozen. /metrics is served on the service's
    loop, the pipeline's own thread, so nothing changes under the read. Every configured
    connection has both series from the start, at 0 when nothing waits: a series that came and
    went would look like missing data, not like a healthy connection.
    """

    WAITING = "asset_sync_connection_waiting_events"
    OLDEST = "asset_sync_connection_oldest_waiting_seconds"

    def __init__(self) -> None:
        self._source: weakref.ref[Backlog] | None = None

    def watch(self, source: Backlog) -> None:
        """Report ``source`` from now on (the newest pipeline; held weakly, so a finished
        one is let go)."""
        self._source = weakref.ref(source)

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        labels = ["vendor", "connection"]
        return (
            GaugeMetricFamily(
                self.WAITING,
                "Events accepted and not finished (queued or being delivered), per configured "
                "connection.",
                labels=labels,
            ),
            GaugeMetricFamily(
                self.OLDEST,
                "Seconds the oldest unfinished event of each configured connection has waited "
                "since it was accepted; 0 when none waits.",
                labels=labels,
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        waiting, oldest = self._families()
        source = None if self._source is None else self._source()
        if source is not None:
            for vendor, connection, count, age in source.backlog():
                waiting.add_metric([vendor, connection], count)
                oldest.add_metric([vendor, connection], round(age, 3))
        yield waiting
        yield oldest


CONNECTION_BACKLOG = ConnectionBacklog()
REGISTRY.register(CONNECTION_BACKLOG)

CONSUMER_LAG = Gauge(
    "asset_sync_consumer_lag",
    "Records between the committed offset and the end of the partition.",
    ["topic", "partition"],
)
PAUSED_PARTITIONS = Gauge(
    "asset_sync_paused_partitions", "Assigned partitions whose fetching is paused (buffer full)."
)
BUFFERED_EVENTS = Gauge(
    "asset_sync_buffered_events", "Records read but not yet delivered or dead-lettered."
)
RATE_LIMIT_REMAINING = Gauge(
    "asset_sync_vendor_rate_limit_remaining",
    "X-RateLimit-Remaining last reported by the vendor.",
    ["vendor"],
)
BATCH_SIZE = Histogram(
    "asset_sync_batch_size",
    "Events per batched vendor request.",
    ["vendor"],
    buckets=(1, 2, 5, 10, 20, 50, 100),
)
INGEST_REQUESTS = Counter(
    "asset_sync_ingest_requests_total",
    "Webhook requests to asset-sync ingest, by answer status.",
    ["status"],
)
INGEST_PUBLISH = Histogram(
    "asset_sync_ingest_publish_seconds",
    "From a verified webhook to the broker's acknowledgement of its events.",
    buckets=LATENCY_BUCKETS,
)
