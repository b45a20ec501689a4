"""Access tokens: static ones, and ones fetched from a token endpoint and cached until
shortly before they expire. One refresh at a time per connection, however many events wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from consumer.errors import AuthFailedError, RetryableError
from consumer.http import HttpClient, HttpResponse

EXPIRY_MARGIN_S = 60.0


class TokenSource:
    """A static token: nothing to refresh."""

    def __init__(self, token: str = "") -> None:
        self._token = token

    async def get(self, http: HttpClient) -> str:
        return self._token

    @property
    def current(self) -> str:
        """The token in use now ("" when none), for redacting it from error texts."""
        return self._token

    def invalidate(self, token: str) -> bool:
        """Forget ``token`` if it is the current one; False when there is nothing to refresh."""
        return False


Fetch = Callable[[HttpClient], Awaitable[tuple[str, float]]]


class CachedToken(TokenSource):
    """A token from ``fetch`` (returning token and lifetime in seconds), cached until expiry."""

    def __init__(self, fetch: Fetch, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._fetch = fetch
        self._clock = clock
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, http: HttpClient) -> str:
        if self._token and self._clock() < self._expires:
            return self._token
        async with self._lock:
            if not (self._token and self._clock() < self._expires):
                token, lifetime = await self._fetch(http)
                self.fetches += 1
                self._token = token
                self._expires = self._clock() + max(lifetime - EXPIRY_MARGIN_S, lifetime / 2)
        return self._token

    def invalidate(self, token: str) -> bool:
        if token == self._token:
            self._token, self._expires = "", 0.0
        return True


def token_body(response: HttpResponse) -> dict[str, object]:
    """Check a token endpoint's answer; errors never quote the body (it may hold secrets)."""
    if response.status in (400, 401, 403):
        raise AuthFailedError(
            f"token endpoint refused the credentials (HTTP {response.status})",
            status=response.status,
        )
    if response.status == 429 or response.status >= 500:
        raise RetryableError(
            f"token endpoint answered HTTP {response.status}",
            status=response.status,
            retry_reason="auth_endpoint",
        )
    body = response.json()
    if response.status != 200 or not isinstance(body, dict):
        raise AuthFailedError(
            f"token endpoint answered HTTP {response.status} without a token",
            status=response.status,
        )
    return body


def token_from(
    body: dict[str, object],
    token_field: str = "access_token",  # noqa: S107
    lifetime_field: str = "expires_in",
    default_lifetime: float = 3600.0,
) -> tuple[str, float]:
    token = body.get(token_field)
    if not isinstance(token, str) or not token:
        raise AuthFailedError(f"token endpoint answer has no {token_field}", status=200)
    lifetime = body.get(lifetime_field, default_lifetime)
    if not isinstance(lifetime, (int, float)) or lifetime <= 0:
        lifetime = default_lifetime
    return token, float(lifetime)
