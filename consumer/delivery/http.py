"""The HTTP boundary: one pooled aiohttp session, and the translation of its errors.

Everything aiohttp or asyncio can raise while sending becomes a ``RetryableError`` here, so
no module above this one ever sees an aiohttp exception.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from consumer.config import DispatchConfig
from consumer.errors import RetryableError


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What to send. ``url`` is already percent-encoded; ``query`` is sent in this order."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    query: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
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
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class HttpClient:
    """Keep-alive connections per host, explicit connect and read timeouts."""

    def __init__(self, config: DispatchConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No per-host cap: the tenants of a vendor share its host, so one that hangs
            # would hold the cap for all of them; each connection's share is the pipeline's.
            connector = aiohttp.TCPConnector(
                limit=self._config.max_in_flight,
                limit_per_host=0,
                keepalive_timeout=30,
                ttl_dns_cache=300,
            )
            # sock_read bounds each read; total bounds a vendor that drips its answer slowly.
            timeout = aiohttp.ClientTimeout(
                total=self._config.connect_timeout_s + 2 * self._config.read_timeout_s,
                sock_connect=self._config.connect_timeout_s,
                sock_read=self._config.read_timeout_s,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                raise_for_status=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # vendor APIs set no cookie we need
            )
        return self._session

    async def send(self, request: HttpRequest) -> HttpResponse:
        url = URL(request.url, encoded=True)
        if request.query:
            url = url.with_query(list(request.query))
        started = time.monotonic()
        try:
            async with self._get_session().request(
                request.method,
                url,
                headers=dict(request.headers),
                data=request.body or None,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return HttpResponse(
                    response.status, dict(response.headers), body, time.monotonic() - started
                )
        except TimeoutError:
            raise RetryableError(
                "timed out waiting for the vendor", retry_reason="timeout"
            ) from None
        except aiohttp.ClientError as exc:
            raise RetryableError(
                f"connection error: {type(exc).__name__}", retry_reason="connection"
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            await asyncio.sleep(0)
