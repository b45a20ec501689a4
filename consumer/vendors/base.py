"""The one small interface every vendor implements, and the status rules they share.

A vendor module says *what* to send (``build``) and *what the answer means* (``read``);
sending, auth refresh, pacing, batching and retrying are done around it, the same for all.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from consumer import metrics
from consumer.config import Connection
from consumer.errors import (
    AuthExpiredError,
    DeliveryError,
    PermanentError,
    RetryableError,
)
from consumer.events import Event
from consumer.http import HttpClient, HttpRequest, HttpResponse
from consumer.retry import parse_retry_after
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


def classify(response: HttpResponse, token: str = "") -> Result:
    """The rules of SPEC section 4 that every vendor shares."""
    status = response.status
    if 200 <= status < 300:
        return None
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    detail = f"HTTP {status}: {response.snippet()}".rstrip(": ")
    if status == 401:
        return AuthExpiredError(detail, status=status, token=token)
    if status == 429:
        return RetryableError(
            detail, status=status, retry_after=retry_after, retry_reason="rate_limited"
        )
    if status == 409:
        return RetryableError(
            detail, status=status, retry_after=retry_after, retry_reason="conflict"
        )
    if status >= 500 or status == 408:
        return RetryableError(
            detail, status=status, retry_after=retry_after, retry_reason="server_error"
        )
    return PermanentError(detail, status=status)


class VendorClient(ABC):
    """One vendor connection: builds requests and reads answers; ``send`` runs one attempt."""

    name: ClassVar[str]
    batched: ClassVar[bool] = False
    rate_window_s: ClassVar[float] = 60.0  # the window X-RateLimit-Limit counts over
    # The connection keys this vendor reads, and their kind (str, int, float, bool or
    # secret): anything else in a connection is a mistake, refused at start with its key.
    settings: ClassVar[Mapping[str, str]] = {}
    common_settings: ClassVar[Mapping[str, str]] = {"base_url": "str", "rate_window_s": "float"}

    def __init__(self, connection: Connection, http: HttpClient) -> None:
        self.connection = connection
        self.http = http
        self.base = connection.base_url
        self.auth = self.token_source()
        # The window X-RateLimit-Limit counts over: the vendor's documented one unless the
        # connection says otherwise (a gateway in front of the vendor may count per second).
        self.pacer = Pacer(float(connection.get("rate_window_s", self.rate_window_s)))
        self._duration = metrics.VENDOR_REQUEST_DURATION.labels(self.name)
        self._requests: dict[str, Any] = {}

    @classmethod
    @abstractmethod
    def check_connection(cls, connection: Connection) -> None:
        """Raise ConfigError naming the key if the connection cannot work."""

    @abstractmethod
    def token_source(self) -> TokenSource: ...

    @abstractmethod
    def build(self, events: Sequence[Event], token: str) -> HttpRequest: ...

    def read(self, response: HttpResponse, events: Sequence[Event], token: str) -> list[Result]:
        """Per event, what the answer means; the default reads the status alone."""
        return [classify(response, token)] * len(events)

    def batch_key(self, event: Event) -> str:
        """Events with the same key may share one request (batched vendors only)."""
        return event.asset_id

    async def send(self, events: Sequence[Event]) -> list[Result]:
        """One attempt for these events. Raises a DeliveryError that applies to all of them."""
        token = await self.auth.get(self.http)
        probe = await self.pacer.wait()
        called_off = False
        try:
            response = await self.http.send(self.build(events, token))
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
                self.pacer.answered()
        self._count(str(response.status))
        self._duration.observe(response.seconds)
        self.pacer.observe(response.status, response.headers)
        if self.pacer.remaining is not None:
            metrics.RATE_LIMIT_REMAINING.labels(self.name).set(self.pacer.remaining)
        return self.read(response, events, token)

    def _count(self, code: str) -> None:
        counter = self._requests.get(code)
        if counter is None:
            counter = self._requests[code] = metrics.VENDOR_REQUESTS.labels(self.name, code)
        counter.inc()
