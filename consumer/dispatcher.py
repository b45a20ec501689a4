"""Delivers one event to its vendor: connection lookup, auth refresh, batching, retries.

``Dispatcher.deliver`` is shared by ``asset-sync run`` and ``asset-sync dispatch``; it never
raises for anything a vendor or the network does, it returns an ``Outcome``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from consumer import metrics
from consumer.batching import Batcher
from consumer.config import Config, Secret
from consumer.errors import (
    AuthExpiredError,
    AuthFailedError,
    DeliveryError,
    PermanentError,
    RetryableError,
)
from consumer.events import Event
from consumer.http import HttpClient
from consumer.outcome import Outcome
from consumer.reasons import Reason
from consumer.retry import RetryPolicy
from consumer.vendors import VENDORS, VendorClient
from consumer.vendors.base import Result


def _count_retry(vendor: str, error: RetryableError, _: float) -> None:
    metrics.RETRIES.labels(vendor, error.retry_reason).inc()


class Dispatcher:
    def __init__(
        self,
        config: Config,
        *,
        http: HttpClient | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.http = http or HttpClient(config.dispatch)
        self.rand = rand
        self.policy = RetryPolicy(config.retry, rand, on_retry=_count_retry)
        self._clients: dict[tuple[str, str], VendorClient] = {}
        self._batchers: dict[tuple[str, str], Batcher] = {}
        self._secrets = sorted(
            {
                v.reveal()
                for named in config.connections.values()
                for c in named.values()
                for v in c.settings.values()
                if isinstance(v, Secret) and len(v.reveal()) >= 4
            },
            key=len,
            reverse=True,
        )

    def client(self, vendor: str, connection: str) -> VendorClient | None:
        key = (vendor, connection)
        if key not in self._clients:
            settings = self.config.connection(vendor, connection)
            if settings is None:
                return None
            client = VENDORS[vendor](settings, self.http)
            self._clients[key] = client
            if client.batched:
                self._batchers[key] = Batcher(
                    client, self.config.dispatch.batch_max, self.config.dispatch.batch_linger_s
                )
        return self._clients[key]

    async def deliver(self, event: Event) -> Outcome:
        started = time.monotonic()
        client = self.client(event.vendor, event.connection)
        if client is None:
            return Outcome(
                event.id,
                event.vendor,
                False,
                0,
                0.0,
                Reason.UNKNOWN_CONNECTION,
                None,
                f"no connection {event.connection!r} is configured for {event.vendor}",
            )
        try:
            _, attempts = await self.policy.run(lambda: self._attempt(client, event), event.vendor)
        except DeliveryError as error:
            reason = (
                error.reason if isinstance(error, PermanentError) else (Reason.RETRIES_EXHAUSTED)
            )
            return Outcome(
                event.id,
                event.vendor,
                False,
                error.attempts,
                time.monotonic() - started,
                reason,
                error.status,
                self.redact(error.message),
            )
        return Outcome(event.id, event.vendor, True, attempts, time.monotonic() - started)

    async def _attempt(self, client: VendorClient, event: Event) -> None:
        """One attempt; a 401 refreshes the token and tries once more at once."""
        result = await self._send(client, event)
        if isinstance(result, AuthExpiredError):
            if not client.auth.invalidate(result.token):
                raise AuthFailedError(
                    f"credentials refused: {result.message}", status=result.status
                )
            metrics.RETRIES.labels(event.vendor, "auth_refresh").inc()
            result = await self._send(client, event)
            if isinstance(result, AuthExpiredError):
                raise AuthFailedError(
                    f"credentials refused after a token refresh: {result.message}",
                    status=result.status,
                )
        if result is not None:
            raise result

    async def _send(self, client: VendorClient, event: Event) -> Result:
        batcher = self._batchers.get((event.vendor, event.connection))
        if batcher is not None:
            return await batcher.submit(event)
        (result,) = await client.send([event])
        return result

    def redact(self, text: str) -> str:
        """No configured secret or live token ever leaves in an error text."""
        tokens = [c.auth.current for c in self._clients.values() if len(c.auth.current) >= 4]
        for secret in [*self._secrets, *tokens]:
            text = text.replace(secret, "***")
        return text

    async def close(self) -> None:
        await self.http.close()


__all__ = ["Dispatcher", "RetryableError"]
