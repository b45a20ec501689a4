"""The HTTP boundary: one pooled HTTP client, and the translation of its errors.

Everything the client or asyncio can raise while sending becomes a ``RetryableError`` here, so
no module above this one ever sees an exception of the HTTP library.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import PyreqwestError

from consumer import __version__, json_codec
from consumer.config import DispatchConfig
from consumer.errors import RetryableError


@dataclass(slots=True)  # not frozen: see consumer/outcome.py
class HttpRequest:
    """What to send. ``url`` is already percent-encoded; ``query`` is sent in this order."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    query: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)  # not frozen: see consumer/outcome.py
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        """The decoded body, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None

    def snippet(self, limit: int = 200) -> str:
        text = self.body[:limit].decode("utf-8", errors="replace")
        return " ".join(text.split())


def json_body(value: Any) -> bytes:
    return json_codec.dumps(value)


class HttpClient:
    """Keep-alive connections per host, explicit connect and read timeouts.

    pyreqwest (Rust's reqwest and hyper) does the HTTP work outside the interpreter: per
    request it costs about half of aiohttp's CPU (bench/RESULTS.md, scenario 13), and the
    request path was where most of the service's CPU went."""

    def __init__(self, config: DispatchConfig) -> None:
        self._config = config
        self._client: Client | None = None

    def _get_client(self) -> Client:
        if self._client is None:
            config = self._config
            # No per-host cap: the tenants of a vendor share its host, so one that hangs
            # would hold the cap for all of them; each connection's share is the pipeline's.
            # The read timeout bounds each read; the total one a vendor that drips its answer.
            self._client = (
                ClientBuilder()
                .max_connections(config.max_in_flight)
                .pool_idle_timeout(timedelta(seconds=30))
                .connect_timeout(timedelta(seconds=config.connect_timeout_s))
                .read_timeout(timedelta(seconds=config.read_timeout_s))
                .timeout(timedelta(seconds=config.connect_timeout_s + 2 * config.read_timeout_s))
                .follow_redirects(False)
                .user_agent(f"asset-sync/{__version__}")  # who calls, for the vendor's support
                .error_for_status(False)
                .build()
            )
        return self._client

    async def send(self, request: HttpRequest) -> HttpResponse:
        started = time.monotonic()
        try:
            builder = self._get_client().request(request.method, request.url)
            if request.headers:
                builder = builder.headers(request.headers)
            if request.body:
                builder = builder.body_bytes(request.body)
            if request.query:
                builder = builder.query(list(request.query))
            response = await builder.build().send()
            body = (await response.bytes()).to_bytes()
        except TimeoutError:
            raise RetryableError(
                "timed out waiting for the vendor", retry_reason="timeout"
            ) from None
        except (PyreqwestError, ValueError) as exc:  # ValueError: a URL it cannot parse
            raise RetryableError(
                f"connection error: {type(exc).__name__}", retry_reason="connection"
            ) from None
        # The header map is case-insensitive, as HTTP header names are.
        return HttpResponse(response.status, response.headers, body, time.monotonic() - started)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
