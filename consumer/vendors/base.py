"""The one small interface every vendor implements, and the status rules they share.

A vendor module says *what* to send (``build``) and *what the answer means* (``read``);
sending, auth refresh, pacing, batching and retrying are done around it, the same for all.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, ClassVar
from urllib.parse import quote

from prometheus_client import Gauge

from consumer.config import Connection
from consumer.delivery.http import HttpClient, HttpRequest, HttpResponse
from consumer.delivery.retry import parse_retry_after
from consumer.errors import (
    AuthExpiredError,
    DeliveryError,
    PermanentError,
    RetryableError,
)
from consumer.events import Event
from consumer.telemetry import metrics
from consumer.telemetry.tracing import Tracing, propagate
from consumer.vendors.auth import TokenSource
from consumer.vendors.pacing import Pacer

# What one attempt meant for one event: None is delivered, else the error to act on.
Result = DeliveryError | None


def bearer_json(token: str) -> dict[str, str]:
    """Headers of a JSON request with an OAuth bearer token (four of the five vendors)."""
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def segment(value: str) -> str:
    """One path segment, percent-encoded so it can never add a '/', '?' or '#', nor be a
    dot-segment that a client or proxy would resolve against its parent."""
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


# What is retried unless a connection says otherwise (``retry_statuses``): "slow down",
# "conflict", "request timeout" and every server error.
DEFAULT_RETRY_STATUSES = frozenset({429, 409, 408, *range(500, 600)})
_RETRY_REASONS = {429: "rate_limited", 409: "conflict"}


def classify(
    response: HttpResponse, token: str = "", retry_on: frozenset[int] = DEFAULT_RETRY_STATUSES
) -> Result:
    """The rules of SPEC section 4 that every vendor shares; ``retry_on`` is the connection's
    choice of retried statuses (401 always refreshes the token once)."""
    status = response.status
    if 200 <= status < 300:
        return None
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    detail = f"HTTP {status}: {response.snippet()}".rstrip(": ")
    if status == 401:
        return AuthExpiredError(detail, status=status, token=token)
    if status in retry_on:
        reason = _RETRY_REASONS.get(status, "server_error" if status >= 500 else "status")
        return RetryableError(detail, status=status, retry_after=retry_after, retry_reason=reason)
    return PermanentError(detail, status=status)


class VendorClient(ABC):
    """One vendor connection: builds requests and reads answers; ``send`` runs one attempt."""

    name: ClassVar[str]
    batched: ClassVar[bool] = False
    tracing: Tracing | None = None  # set by the dispatcher when tracing is on
    rate_window_s: ClassVar[float] = 60.0  # the window X-RateLimit-Limit counts over
    # The connection keys each vendor reads, and what it needs, are in consumer/config.py
    # (VENDOR_KEYS): the configuration is checked without importing the clients.

    def __init__(self, connection: Connection, http: HttpClient) -> None:
        self.connection = connection
        self.http = http
        self.base = connection.base_url
        self.auth = self.token_source()
        # The window X-RateLimit-Limit counts over: the vendor's documented one unless the
        # connection says otherwise (a gateway in front of the vendor may count per second);
        # and the connection's own rate_limit, if any (the smaller of the two is kept to).
        self.pacer = Pacer(
            float(connection.get("rate_window_s", self.rate_window_s)),
            configured=connection.get("rate_limit"),
        )
        self._duration = metrics.VENDOR_REQUEST_DURATION.labels(self.name)
        self._requests: dict[str, Any] = {}
        self._remaining: Gauge | None = None  # its rate-limit gauge child, once the vendor said one

    @abstractmethod
    def token_source(self) -> TokenSource: ...

    @abstractmethod
    def build(self, events: Sequence[Event], token: str) -> HttpRequest: ...

    def read(self, response: HttpResponse, events: Sequence[Event], token: str) -> list[Result]:
        """Per event, what the answer means; the default reads the status alone."""
        return [self.classify(response, token)] * len(events)

    def classify(self, response: HttpResponse, token: str) -> Result:
        """The shared status rules, with this connection's retried statuses."""
        return classify(
            response, token, self.connection.get("retry_statuses", DEFAULT_RETRY_STATUSES)
        )

    def batch_key(self, event: Event) -> str:
        """Events with the same key may share one request (batched vendors only)."""
        return event.asset_id

    # --- freshness (consumer/state/freshness.py): what one "field" is, per vendor -------------
    # Per-field last-writer-wins needs to know what an update sets. A field is a top-level key
    # of ``changes`` (its value, list or object, is one value), or one entry of a map named
    # in ``maps``: ``customFields.cost`` is updated apart from ``customFields.owner``.
    maps: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def fields(cls, data: Mapping[str, Any]) -> list[str]:
        """The fields this update sets."""
        names: list[str] = []
        for name, value in data["changes"].items():
            if name in cls.maps and isinstance(value, dict):
                names.extend(f"{name}.{entry}" for entry in value)
            else:
                names.append(name)
        return names

    @classmethod
    def without(cls, data: Mapping[str, Any], stale: AbstractSet[str]) -> dict[str, Any]:
        """The update with the ``stale`` fields taken out (a map emptied by it goes too)."""
        changes: dict[str, Any] = {}
        for name, value in data["changes"].items():
            if name in cls.maps and isinstance(value, dict) and value:
                kept = {k: v for k, v in value.items() if f"{name}.{k}" not in stale}
                if kept:
                    changes[name] = kept
            elif name not in stale:
                changes[name] = value
        return {**data, "changes": changes}

    @classmethod
    def resets(cls, data: Mapping[str, Any]) -> bool:
        """Whether this update replaces the whole asset, every field it does not name
        included (EnOS ``replace``)."""
        return False

    @classmethod
    def as_patch(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """A resetting update turned into one that sets only the fields it names."""
        return dict(data)

    # --- coalescing (consumer/delivery/pipeline.py): updates of one asset in one request ---
    @classmethod
    def target(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Where an update applies, beyond its asset id (Lexful's asset type, EnOS's
        organization): updates with different targets never share a request."""
        return {name: value for name, value in data.items() if name != "changes"}

    @classmethod
    def follows(cls, target: Mapping[str, Any], later: Mapping[str, Any]) -> bool:
        """Whether ``later`` may share one request with updates of this ``target`` before it
        (``fold``): the same target, and it does not reset the asset."""
        return not cls.resets(later) and cls.target(later) == target

    @classmethod
    def fold(cls, first: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, Any] | None:
        """One update that does what ``first`` then a ``later`` that ``follows`` it do: later
        fields win, a map of ``maps`` merges entry by entry. None when no one update does: a
        map ``first`` sets whole (null clears it) that ``later`` sets entry by entry."""
        changes = dict(first["changes"])
        for name, value in later["changes"].items():
            if name in cls.maps and isinstance(value, dict) and name in changes:
                earlier = changes[name]
                if not isinstance(earlier, dict):
                    return None
                changes[name] = {**earlier, **value}
            else:
                changes[name] = value
        return {**first, "changes": changes}

    async def send(self, events: Sequence[Event]) -> list[Result]:
        """One attempt for these events. Raises a DeliveryError that applies to all of them."""
        token = await self.auth.get(self.http)
        probe = await self.pacer.wait()
        sent = self.pacer.clock()
        called_off = False
        try:
            request = self.build(events, token)
            tracing = self.tracing
            if tracing is None:  # the producer's trace context, passed on unchanged
                response = await self.http.send(propagate(request, events[0]))
            else:  # the context of this request's span (a batch: of its first event)
                response = await tracing.send(self.http, request, events, self.connection.name)
        except RetryableError as error:
            self._count(error.retry_reason)
            raise
        except asyncio.CancelledError:
            called_off = probe  # a probe without an answer must not open the gate
            raise
        finally:
            if called_off:
                self.pacer.abandoned()
            else:
                self.pacer.answered(probe)
        self._count(str(response.status))
        self._duration.observe(response.seconds)
        self.pacer.observe(response.status, response.headers, sent)
        if self.pacer.remaining is not None:
            if self._remaining is None:  # labels() per answer cost more than the set itself
                self._remaining = metrics.RATE_LIMIT_REMAINING.labels(self.name)
            self._remaining.set(self.pacer.remaining)
        return self.read(response, events, token)

    def _count(self, code: str) -> None:
        counter = self._requests.get(code)
        if counter is None:
            counter = self._requests[code] = metrics.VENDOR_REQUESTS.labels(self.name, code)
        counter.inc()
