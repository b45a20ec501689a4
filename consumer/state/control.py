"""Runtime control: pause and resume one connection (vendor + connection name) on every
replica without a restart, and see how each connection is doing (``asset-sync ctl``).

Everything goes through one compacted topic (``control.topic``, default
``<kafka.topic>.control``, one partition) that every replica follows from the beginning with
a consumer of its own (consumer/broker/compacted_topic.py), so a replica that starts while a
connection is paused starts it paused. Two kinds of records:

- ``pause/<vendor>/<connection>``: ``{"paused": true|false, "by": ..., "at": ...}``, written
  by ``ctl pause``/``ctl resume``. A replica pauses the connection's circuit breaker
  (consumer/delivery/breaker.py): no attempt starts, requests on the wire finish, and the
  events wait in the pipeline without spending their retry budget (the breaker's budget clock stands
  still), so a pause never dead-letters anything. Resuming lets them go in arrival order.
- ``status/<replica id>``: each replica's figures per connection, written every
  ``STATUS_EVERY_S`` (and at once after a pause or resume), a tombstone on a clean stop.
  ``ctl status`` sums the reports younger than ``STATUS_FRESH_S``.

Who may pause is who may write to the topic: its ACLs are the access control.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from kafka.errors import KafkaError

from consumer.broker.compacted_topic import CompactedTopic
from consumer.broker.kafka_clients import BrokerError, ensure_topic, make_producer
from consumer.config import Config
from consumer.delivery.breaker import CircuitBreaker, State
from consumer.errors import UsageError
from consumer.telemetry import metrics
from consumer.telemetry.logs import get_logger

log = get_logger("control")

PAUSE_PREFIX = "pause/"
STATUS_PREFIX = "status/"
STATUS_EVERY_S = 5.0
STATUS_FRESH_S = 30.0  # older reports are of replicas that are gone (killed, not stopped)
WRITE_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 20.0  # ``ctl status``: reading the topic to its end
# Compacted: the latest pause of each connection is kept for ever. Short segments, so that
# the status reports (one every few seconds per replica) are compacted away within the hour
# and a starting replica reads little.
TOPIC_SETTINGS = {"cleanup.policy": "compact", "segment.ms": "3600000"}

Key = tuple[str, str]  # vendor, connection name


def topic_name(config: Config) -> str:
    return config.control.topic or f"{config.kafka.topic}.control"


def replica_id() -> str:
    """The pod's name in Kubernetes (HOSTNAME), else host and process id: replicas on one
    machine (tests, Docker Compose with host networking) must not share an id."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("HOSTNAME"):
        return os.environ["HOSTNAME"]
    return f"{socket.gethostname()}-{os.getpid()}"


def connection_arg(config: Config, text: str) -> Key:
    """``webflow/default`` as (vendor, connection), if that connection is configured."""
    vendor, _, name = text.partition("/")
    if config.connection(vendor, name) is None:
        configured = ", ".join(f"{v}/{n}" for v, n in configured_connections(config)) or "none"
        raise UsageError(
            f"unknown connection {text!r}: give VENDOR/CONNECTION as configured "
            f"(configured: {configured})"
        )
    return vendor, name


def configured_connections(config: Config) -> list[Key]:
    return sorted((v, n) for v, named in config.connections.items() for n in named)


# --- records ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pause:
    paused: bool
    by: str = ""  # user@host of whoever ran ``ctl``
    at: str = ""  # UTC, RFC 3339

    def to_json(self) -> bytes:
        return json.dumps({"paused": self.paused, "by": self.by, "at": self.at}).encode()


@dataclass(frozen=True)
class Figures:
    """One connection on one replica."""

    breaker: str  # closed, half_open, open
    paused: bool
    in_flight: int  # attempts under way (past the pause and breaker gate)
    waiting: int  # accepted, not finished, not in flight
    oldest_s: float  # age of the oldest unfinished event


@dataclass(frozen=True)
class Report:
    replica: str
    at: float  # epoch seconds, the replica's clock
    connections: dict[str, Figures]  # "vendor/connection" -> figures


def _document(value: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(value)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def parse_pause(value: bytes | None) -> Pause | None:
    """A pause record's value; a tombstone is a resume; None when unreadable."""
    if value is None:
        return Pause(False)
    document = _document(value)
    if document is None or not isinstance(document.get("paused"), bool):
        return None
    return Pause(document["paused"], str(document.get("by", "")), str(document.get("at", "")))


def parse_report(replica: str, value: bytes) -> Report | None:
    document = _document(value)
    if document is None:
        return None
    try:
        connections = {
            str(name): Figures(
                str(f["breaker"]),
                bool(f["paused"]),
                int(f["in_flight"]),
                int(f["waiting"]),
                float(f["oldest_s"]),
            )
            for name, f in dict(document["connections"]).items()
        }
        return Report(replica, float(document["at"]), connections)
    except (KeyError, TypeError, ValueError):
        return None


class ControlView:
    """What the control topic says, applied record by record in log order."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.pauses: dict[Key, Pause] = {}
        self.reports: dict[str, Report] = {}
        self._unreadable: set[str] = set()

    def apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """One record (the follower calls this on the event loop; tests may too)."""
        if key is None:
            return
        name = key.decode("utf-8", "replace")
        if name.startswith(PAUSE_PREFIX):
            vendor, _, connection = name.removeprefix(PAUSE_PREFIX).partition("/")
            pause = parse_pause(value)
            if pause is None:
                self._ignore(name)
                return
            self.pauses[(vendor, connection)] = pause
            self.paused(vendor, connection, pause)
        elif name.startswith(STATUS_PREFIX):
            replica = name.removeprefix(STATUS_PREFIX)
            if value is None:
                self.reports.pop(replica, None)
                return
            report = parse_report(replica, value)
            if report is None:
                self._ignore(name)
            else:
                self.reports[replica] = report

    def paused(self, vendor: str, connection: str, pause: Pause) -> None:
        """A pause record was read (subclasses act on it)."""

    def is_paused(self, key: Key) -> bool:
        pause = self.pauses.get(key)
        return pause is not None and pause.paused

    def _ignore(self, name: str) -> None:
        if name not in self._unreadable:
            self._unreadable.add(name)
            log.warning("control record not readable; ignored", extra={"fields": {"key": name}})


# --- in ``asset-sync run`` --------------------------------------------------------------------
class Backlog(Protocol):
    def backlog(self) -> Iterable[tuple[str, str, int, float]]: ...


class Control(ControlView):
    """A replica's side: follows the topic, pauses and resumes its breakers, reports."""

    def __init__(self, config: Config, client_id: str, replica: str | None = None) -> None:
        super().__init__(topic_name(config))
        self.replica = replica or replica_id()
        self._follower = CompactedTopic(
            config.kafka, self.topic, self.apply, client_id, role="control", settings=TOPIC_SETTINGS
        )
        self._breakers: Mapping[Key, CircuitBreaker] = {}
        self._backlog: Backlog | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._report_now = asyncio.Event()
        self._closing = False

    @classmethod
    async def open(cls, config: Config, client_id: str) -> Control:
        """Create the topic if missing and read it to its end: the pauses are known before
        the first record is consumed."""
        control = cls(config, client_id)
        await control._follower.start()
        paused = sorted(f"{v}/{c}" for (v, c), p in control.pauses.items() if p.paused)
        log.info("control topic read", extra={"fields": {"topic": control.topic, "paused": paused}})
        return control

    def attach(self, breakers: Mapping[Key, CircuitBreaker], backlog: Backlog) -> None:
        """Obey the pauses read so far and from now on; start reporting."""
        self.obey(breakers)
        self._backlog = backlog
        self._publisher = asyncio.create_task(self._publish())

    def obey(self, breakers: Mapping[Key, CircuitBreaker]) -> None:
        """Pause these breakers as the topic says, now and at every pause record read."""
        self._breakers = breakers
        for vendor, connection in breakers:
            paused = self.is_paused((vendor, connection))
            metrics.CONNECTION_PAUSED.labels(vendor, connection).set(int(paused))
            if paused:
                breakers[(vendor, connection)].pause(True)

    def paused(self, vendor: str, connection: str, pause: Pause) -> None:
        breaker = self._breakers.get((vendor, connection))
        if breaker is None or breaker.paused == pause.paused:
            return  # not attached yet, not configured here, or no change
        breaker.pause(pause.paused)
        metrics.CONNECTION_PAUSED.labels(vendor, connection).set(int(pause.paused))
        log.warning(
            "connection paused" if pause.paused else "connection resumed",
            extra={
                "fields": {
                    "vendor": vendor,
                    "connection": connection,
                    "by": pause.by,
                    "at": pause.at,
                }
            },
        )
        self._report_now.set()

    def report(self) -> dict[str, Any]:
        """This replica's figures per configured connection (the value of its status record)."""
        connections: dict[str, Any] = {}
        if self._backlog is not None:
            for vendor, connection, unfinished, oldest in self._backlog.backlog():
                breaker = self._breakers.get((vendor, connection))
                in_flight = breaker.attempts if breaker is not None else 0
                connections[f"{vendor}/{connection}"] = {
                    "breaker": breaker.state.name.lower() if breaker else State.CLOSED.name.lower(),
                    "paused": breaker.paused if breaker is not None else False,
                    "in_flight": in_flight,
                    "waiting": max(0, unfinished - in_flight),
                    "oldest_s": round(oldest, 3),
                }
        return {"at": time.time(), "connections": connections}

    async def _publish(self) -> None:
        key = STATUS_PREFIX + self.replica
        while not self._closing:
            self._report_now.clear()
            try:
                await self._follower.write(key, json.dumps(self.report()).encode())
            except Exception as error:  # KafkaError mostly: a report is never worth a stop
                log.warning(
                    "status report not written",
                    extra={"fields": {"topic": self.topic, "error": type(error).__name__}},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), STATUS_EVERY_S)

    async def close(self) -> None:
        """Stop reporting and remove this replica's report (a tombstone): it is gone."""
        if self._publisher is not None:
            # let a report on its way land first: the tombstone must be the last record
            self._closing = True
            self._report_now.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._publisher), WRITE_TIMEOUT_S + 1)
            self._publisher.cancel()
            try:
                await asyncio.wait_for(
                    self._follower.write(STATUS_PREFIX + self.replica, None), WRITE_TIMEOUT_S
                )
            except (KafkaError, TimeoutError) as error:
                log.warning(
                    "status report not removed", extra={"fields": {"error": type(error).__name__}}
                )
        await self._follower.close()


# --- ``asset-sync ctl`` -----------------------------------------------------------------------
def _who() -> str:
    host = socket.gethostname()
    with contextlib.suppress(Exception):  # no user name in some containers
        return f"{getpass.getuser()}@{host}"
    return host


def set_paused(config: Config, target: str, paused: bool, out: TextIO) -> int:
    """``ctl pause``/``ctl resume``: write the record (acks=all) and say what was done."""
    vendor, connection = connection_arg(config, target)  # before any I/O: nothing written
    topic = topic_name(config)
    pause = Pause(paused, _who(), datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    ensure_topic(config.kafka, topic, 1, TOPIC_SETTINGS)
    producer = make_producer(config.kafka, "asset-sync-ctl")
    try:
        sent = producer.send(
            topic,
            key=f"{PAUSE_PREFIX}{vendor}/{connection}".encode(),
            value=pause.to_json(),
            partition=0,
        )
        offset = int(sent.get(timeout=WRITE_TIMEOUT_S).offset)
    except KafkaError as error:
        raise BrokerError(f"cannot write to {topic!r}: {type(error).__name__}: {error}") from None
    finally:
        producer.close(5)
    what = "paused" if paused else "resumed"
    out.write(
        f"{what} {vendor}/{connection} (by {pause.by} at {pause.at}; {topic} offset {offset}): "
        + (
            "every replica starts no new call for it; requests on the wire finish, its events "
            "wait\n"
            if paused
            else "every replica sends its waiting events again, in order\n"
        )
    )
    return 0


@dataclass(frozen=True)
class Row:
    connection: str
    state: str
    in_flight: int
    waiting: int
    oldest_s: float
    note: str


def summarize(config: Config, view: ControlView, now: float) -> tuple[list[Row], int]:
    """Each configured connection summed over the replicas that reported in the last
    ``STATUS_FRESH_S``; and how many did."""
    fresh = [r for r in view.reports.values() if now - r.at <= STATUS_FRESH_S]
    rows = []
    for vendor, connection in configured_connections(config):
        name = f"{vendor}/{connection}"
        figures = [r.connections[name] for r in fresh if name in r.connections]
        pause = view.pauses.get((vendor, connection))
        paused = pause is not None and pause.paused
        states = []
        if paused:  # said so on the topic; "pausing" until every replica reports it obeyed
            obeyed = bool(figures) and all(f.paused for f in figures)
            states.append("paused" if obeyed else "pausing")
        elif any(f.paused for f in figures):
            states.append("resuming")
        if any(f.breaker != State.CLOSED.name.lower() for f in figures):
            states.append("circuit open")
        note = ""
        if pause is not None and pause.by:
            note = f"{'paused' if paused else 'resumed'} by {pause.by} at {pause.at}"
        rows.append(
            Row(
                name,
                ", ".join(states) or "running",
                sum(f.in_flight for f in figures),
                sum(f.waiting for f in figures),
                max((f.oldest_s for f in figures), default=0.0),
                note,
            )
        )
    return rows, len(fresh)


def status(config: Config, out: TextIO) -> int:
    """``ctl status``: read the control topic to its end and print the summary."""
    view = ControlView(topic_name(config))

    async def read() -> None:
        follower = CompactedTopic(
            config.kafka, view.topic, view.apply, "asset-sync-ctl", role="control", settings={}
        )
        try:
            await follower.start(READ_TIMEOUT_S, create=False, write=False, follow=False)
        finally:
            await follower.close()

    asyncio.run(read())
    rows, replicas = summarize(config, view, time.time())
    out.write(
        f"{view.topic}: {replicas} replica{'s' if replicas != 1 else ''} reported in the last "
        f"{STATUS_FRESH_S:.0f} s\n"
    )
    table = [("CONNECTION", "STATE", "IN_FLIGHT", "WAITING", "OLDEST_WAITING_S", "")]
    table += [
        (r.connection, r.state, str(r.in_flight), str(r.waiting), f"{r.oldest_s:.1f}", r.note)
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        out.write("\n")
    return 0
