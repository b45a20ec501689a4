"""Delivers one event to its vendor: connection lookup, circuit breaker, auth refresh,
batching, retries.

``Dispatcher.deliver`` is shared by ``asset-sync run`` and ``asset-sync dispatch``; it never
raises for anything a vendor or the network does, it returns an ``Outcome``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from consumer.config import Config, Secret
from consumer.delivery.batching import Batcher
from consumer.delivery.breaker import CircuitBreaker, State
from consumer.delivery.http import HttpClient
from consumer.delivery.retry import RetryPolicy
from consumer.errors import (
    AuthExpiredError,
    AuthFailedError,
    DeliveryError,
    PermanentError,
    RetryableError,
)
from consumer.events import Event
from consumer.outcome import Outcome
from consumer.reasons import Reason
from consumer.telemetry import metrics
from consumer.telemetry.logs import get_logger
from consumer.telemetry.tracing import Tracing, from_config
from consumer.vendors import VENDORS, VendorClient
from consumer.vendors.base import Result

log = get_logger("dispatcher")


def _count_retry(vendor: str, error: RetryableError, _: float) -> None:
    metrics.RETRIES.labels(vendor, error.retry_reason).inc()


def _breaker(config: Config, vendor: str, connection: str) -> CircuitBreaker:
    """A connection's breaker, its state shown in ``asset_sync_connection_state``."""
    gauge = metrics.CONNECTION_STATE.labels(vendor, connection)
    gauge.set(State.CLOSED)
    entered = {
        state: metrics.CONNECTION_TRANSITIONS.labels(vendor, connection, state.name.lower())
        for state in State
    }

    level = {State.OPEN: logging.WARNING, State.HALF_OPEN: logging.DEBUG}

    def changed(state: State) -> None:
        gauge.set(state)
        entered[state].inc()
        fields: dict[str, object] = {
            "vendor": vendor,
            "connection": connection,
            "state": state.name.lower(),
        }
        if state is State.OPEN:
            fields["probe_in_s"] = breaker.machine.interval
        log.log(level.get(state, logging.INFO), "circuit breaker changed", extra={"fields": fields})

    breaker = CircuitBreaker(config.breaker, on_change=changed)
    return breaker


class Dispatcher:
    def __init__(
        self,
        config: Config,
        *,
        http: HttpClient | None = None,
        rand: Callable[[], float] = random.random,
        tracing: Tracing | None = None,
    ) -> None:
        """``tracing``: spans into this provider (tests); by default, per the configuration
        and the ``OTEL_*`` variables (consumer/telemetry/tracing.py), None when off."""
        self.config = config
        self.http = http or HttpClient(config.dispatch)
        self.tracing = tracing if tracing is not None else from_config(config)
        self.rand = rand
        self.policy = RetryPolicy(config.retry, rand, on_retry=_count_retry)
        self._clients: dict[tuple[str, str], VendorClient] = {}
        self._batchers: dict[tuple[str, str], Batcher] = {}
        # One breaker per configured connection, made now so that each shows as closed in
        # /metrics from the start (an event never adds a label: unknown connections fail).
        self.breakers = {
            (vendor, name): _breaker(config, vendor, name)
            for vendor, named in config.connections.items()
            for name in named
        }
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
            client.tracing = self.tracing
            self._clients[key] = client
            breaker = self.breakers[key]  # a pause holds what already waits in the pacer
            breaker.on_pause.append(client.pacer.pause)
            client.pacer.pause(breaker.paused)
            if client.batched:
                self._batchers[key] = Batcher(
                    client, self.config.dispatch.batch_max, self.config.dispatch.batch_linger_s
                )
        return self._clients[key]

    def deliver(self, event: Event) -> Coroutine[Any, Any, Outcome]:
        """Deliver the event (awaitable); in its ``deliver`` span when tracing is on."""
        tracing = self.tracing
        return self._deliver(event) if tracing is None else self._deliver_traced(event, tracing)

    async def _deliver_traced(self, event: Event, tracing: Tracing) -> Outcome:
        with tracing.deliver(event) as span:
            outcome = await self._deliver(event)
            tracing.delivered(span, outcome)
            return outcome

    async def _deliver(self, event: Event) -> Outcome:
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
            _, attempts = await self.policy.run(
                lambda: self._attempt(client, event),
                event.vendor,
                self.breakers[(event.vendor, event.connection)],
            )
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
        if self.tracing is not None:
            self.tracing.flush()


__all__ = ["Dispatcher", "RetryableError"]
