"""Access tokens: static ones, ones fetched from a token endpoint and cached until shortly
before they expire, and rotating refresh-token grants shared by the replicas through the
connection state topic. One refresh at a time per connection, however many events wait."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable

from consumer.delivery.http import HttpClient, HttpResponse
from consumer.errors import AuthFailedError, RetryableError
from consumer.state.connection_state import ConnectionStateStore, TokenState
from consumer.telemetry.logs import get_logger

log = get_logger("auth")
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


# The refresh-token grant: (http, refresh token) -> (access token, lifetime, rotated refresh
# token or None when the endpoint keeps the old one).
RefreshGrant = Callable[[HttpClient, str], Awaitable[tuple[str, float, str | None]]]
SKEW_S = 1.0  # an access token this close to its expiry is not sent any more (at most)
PICKUP_S = 10.0  # after invalid_grant, how long to wait for a peer's rotated token
REFRESH_WAIT_S = 45.0  # how long a refresh may wait for the lease before the attempt fails


def seed_of(refresh_token: str) -> str:
    """Which configured refresh token a chain of rotations started from (a digest: the state
    holds it, encrypted, to tell a new token in the Secret from the old one)."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:32]


def refresh_at(state: TokenState) -> float:
    """When to refresh: the same margin as ``CachedToken`` (a minute, or half the lifetime)."""
    lifetime = state.expires_at - state.issued_at
    return state.expires_at - min(EXPIRY_MARGIN_S, lifetime / 2)


class SharedRefreshToken(TokenSource):
    """A refresh-token grant whose refresh token rotates on every use, shared by the replicas
    through the connection state topic (consumer/state/connection_state.py).

    The refresh token on the topic is used, and the configured one (the Secret) only when the
    topic has none for this connection or the Secret holds another token than the one the
    stored chain started from (an operator pasted a new one). The access token on the topic is
    used by every replica until shortly before it expires; then one replica, holding the lease,
    refreshes and saves the new tokens (acks=all) before any of them is used. A replica that
    gets ``invalid_grant`` (400) anyway, because a peer used the token first, waits for the
    peer's saved state instead of failing.
    """

    def __init__(
        self,
        store: ConnectionStateStore,
        key: str,
        configured: str,
        grant: RefreshGrant,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._configured = configured
        self._seed = seed_of(configured)
        self._grant = grant
        self._clock = clock
        self._adopted = False  # the Secret's token was refused: follow the stored chain
        self._refused: set[str] = set()  # access tokens a vendor answered 401 to
        self._refreshing: asyncio.Task[None] | None = None
        self._unsaved: TokenState | None = None
        self._quiet_until = 0.0  # no background refresh before this (monotonic) after a failure
        self.fetches = 0

    def _usable(self) -> TokenState | None:
        state = self._store.state(self._key)
        if state is None or not (state.seed == self._seed or self._adopted):
            return None
        skew = min(SKEW_S, (state.expires_at - state.issued_at) / 4)
        if state.access_token in self._refused or self._clock() >= state.expires_at - skew:
            return None
        return state

    async def get(self, http: HttpClient) -> str:
        state = self._usable()
        if state is None:
            await asyncio.shield(self._refresh_soon(http))
            state = self._usable()
            if state is None:
                raise RetryableError("no access token yet", retry_reason="auth_endpoint")
        elif self._clock() >= refresh_at(state) and time.monotonic() >= self._quiet_until:
            self._refresh_soon(http)  # in the background: this token is still good meanwhile
        self._token = state.access_token
        return self._token

    def invalidate(self, token: str) -> bool:
        if len(self._refused) > 16:
            self._refused.clear()
        self._refused.add(token)
        return True

    def _refresh_soon(self, http: HttpClient) -> asyncio.Task[None]:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh(http))
            self._refreshing.add_done_callback(self._refreshed)
        return self._refreshing

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._quiet_until = time.monotonic() + 1.0
            log.warning(
                "token refresh failed",
                extra={"fields": {"connection": self._key, "error": str(error)[:200]}},
            )

    async def _refresh(self, http: HttpClient) -> None:
        """Until this connection has a fresh state: take the lease and refresh, or wait for
        the replica that holds it."""
        deadline = time.monotonic() + REFRESH_WAIT_S
        while True:
            if self._unsaved is not None:  # refreshed, but the broker did not take it yet
                await self._store.save(self._key, self._unsaved)
                self._unsaved = None
            fresh = self._usable()
            if fresh is not None and self._clock() < refresh_at(fresh):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RetryableError(
                    "another replica holds the token refresh", retry_reason="auth_endpoint"
                )
            current = self._store.state(self._key)
            base = current.version if current is not None else 0
            lease = self._store.lease(self._key)
            if lease is not None and lease.owner != self._store.owner:
                await self._store.wait(functools.partial(self._waited, base), remaining)
                continue
            if await self._store.claim(self._key, base) and await self._refresh_under_lease(
                http, current, base
            ):
                return

    def _waited(self, base: int) -> bool:
        """The replica holding the lease saved a new state, or its lease ran out."""
        return self._store.version(self._key) != base or self._store.lease(self._key) is None

    async def _refresh_under_lease(
        self, http: HttpClient, current: TokenState | None, base: int
    ) -> bool:
        """Call the token endpoint and save what it answered; False to go round again."""
        own_chain = current is not None and (current.seed == self._seed or self._adopted)
        refresh_token = current.refresh_token if own_chain and current else self._configured
        started = self._clock()
        try:
            access, lifetime, rotated = await self._grant(http, refresh_token)
        except AuthFailedError as error:
            if error.status != 400:  # invalid_client and the like: nobody can help
                raise
            if current is not None and not own_chain:
                # The Secret holds a token used up long ago (this replica runs with an older
                # Secret than the one the stored chain started from): follow the chain.
                self._adopted = True
                log.info(
                    "configured refresh token refused; using the stored one",
                    extra={"fields": {"connection": self._key}},
                )
                return False
            # A peer used this refresh token first (its lease ran out while it was slow, or
            # it runs an older release): take what it saved.
            if await self._store.wait(lambda: self._store.version(self._key) > base, PICKUP_S):
                return False
            raise AuthFailedError(
                "refresh token refused (invalid_grant) and no replica saved a newer one: "
                "put a new refresh token in the Secret",
                status=400,
            ) from None
        self.fetches += 1
        seed = current.seed if own_chain and current else self._seed
        state = TokenState(
            rotated or refresh_token, access, started, started + lifetime, base + 1, seed
        )
        self._unsaved = state
        await self._store.save(self._key, state)
        self._unsaved = None
        self._refused.clear()
        log.info(
            "token refreshed and saved",
            extra={"fields": {"connection": self._key, "version": state.version}},
        )
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
