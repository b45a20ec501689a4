"""``/metrics``, ``/healthz`` and ``/readyz`` on one port (SPEC section 6).

prometheus-client's own server answers every path with metrics, so the three routes live in a
small aiohttp app on the service's event loop: if that loop stops turning, ``/healthz``
stops answering, which is exactly what a liveness probe should notice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

POLL_STALE_S = 60.0


@dataclass
class Health:
    """What the probes read; written by the service."""

    joined: bool = False  # the consumer joined its group (an empty assignment counts)
    broker_ok: bool = True  # the last broker round trip worked
    last_poll: float = field(default_factory=time.monotonic)

    def polled(self, broker_ok: bool) -> None:
        self.last_poll = time.monotonic()
        self.broker_ok = broker_ok

    def alive(self) -> bool:
        return time.monotonic() - self.last_poll < POLL_STALE_S

    def ready(self) -> bool:
        return self.joined and self.broker_ok and self.alive()


class HealthServer:
    def __init__(self, health: Health, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
        self.health = health
        self.port = port
        self.host = host
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        ok = self.health.alive()
        return web.json_response({"alive": ok}, status=200 if ok else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        ok = self.health.ready()
        return web.json_response(
            {"ready": ok, "joined": self.health.joined, "broker": self.health.broker_ok},
            status=200 if ok else 503,
        )
