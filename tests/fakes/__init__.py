"""Contract-enforcing HTTP fakes of the five vendors, served on loopback.

``FakeVendors`` starts one aiohttp server per vendor in a background thread (so synchronous
tests and service subprocesses can both reach them) and hands out the ``connections`` section
of a config pointing at them. Every credential is random per instance, so a test can search
all output for them.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
from typing import Any

from aiohttp import web

from tests.fakes.autodesk import AutodeskFake
from tests.fakes.base import RECEIVED, Received, Reply, VendorFake
from tests.fakes.enos import EnosFake
from tests.fakes.lexful import LexfulFake
from tests.fakes.trelica import TrelicaFake
from tests.fakes.webflow import WebflowFake

__all__ = ["FakeVendors", "Received", "Reply", "VendorFake"]


def _secret(name: str) -> str:
    return f"SECRET-{name}-{secrets.token_hex(8)}"


def _counting(fake: VendorFake) -> Any:
    """Count the answers of the update endpoint by status, with the time of each success."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        received = request.get(RECEIVED)
        if received is not None:
            received.status = response.status
        if request.path != "/_stats" and not request.path.endswith(fake.token_paths or ("\0",)):
            fake.counts[response.status] = fake.counts.get(response.status, 0) + 1
            if response.status < 300:
                fake.last_ok = time.monotonic()
                fake.first_ok = fake.first_ok or fake.last_ok
                fake.ok += 1
                _check_order(fake, request.path, await request.text())
        return response

    return middleware


_UPDATE = re.compile(r'"update (\d+)"')


def _check_order(fake: VendorFake, path: str, body: str) -> None:
    """Count the updates accepted (a batch carries several), and an accepted "update N" of a
    path (one asset) after a higher N of it."""
    found = _UPDATE.findall(body)
    fake.ok_updates += max(1, len(found))
    if len(found) != 1:  # a batch of several assets, or no sample marker
        return
    number = int(found[0])
    last = fake.last_update.get(path, -1)
    if number < last:
        fake.inversions += 1
    else:
        fake.last_update[path] = number


def _stats(fake: VendorFake) -> Any:
    async def handler(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "by_status": fake.counts,
                "ok": fake.ok,
                "first_ok": fake.first_ok,
                "last_ok": fake.last_ok,
                "inversions": fake.inversions,
                "ok_updates": fake.ok_updates,
            }
        )

    return handler


class FakeVendors:
    """All five fakes, each on its own port, with credentials of their own."""

    def __init__(self) -> None:
        self.secrets = {
            name: _secret(name)
            for name in (
                "lexful_token",
                "lexful_key_secret",
                "webflow_token",
                "webflow_tenant_token",
                "autodesk_token",
                "autodesk_client_secret",
                "autodesk_refresh_token",
                "trelica_client_secret",
                "enos_app_secret",
            )
        }
        s = self.secrets
        self.lexful = LexfulFake("acct-1", s["lexful_token"], "key-1", s["lexful_key_secret"])
        self.webflow = WebflowFake(s["webflow_token"])
        self.webflow.static_tokens.add(s["webflow_tenant_token"])  # a second tenant's key
        self.webflow.tokens.add(s["webflow_tenant_token"])
        self.autodesk = AutodeskFake(
            s["autodesk_token"],
            "aps-client",
            s["autodesk_client_secret"],
            s["autodesk_refresh_token"],
        )
        self.trelica = TrelicaFake("trelica-client", s["trelica_client_secret"])
        self.enos = EnosFake("enos-app-key", s["enos_app_secret"])
        self.fakes: dict[str, VendorFake] = {
            f.name: f for f in (self.lexful, self.webflow, self.autodesk, self.trelica, self.enos)
        }
        self.ports: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="fake-vendors"
        )
        self._runners: list[web.AppRunner] = []

    def start(self) -> FakeVendors:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    async def _serve(self) -> None:
        for name, fake in self.fakes.items():
            app = web.Application(middlewares=[_counting(fake)])
            app.add_routes([*fake.routes(), web.get("/_stats", _stats(fake))])
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            server = site._server
            assert isinstance(server, asyncio.base_events.Server)
            self.ports[name] = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FakeVendors:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def base_url(self, vendor: str) -> str:
        return f"http://127.0.0.1:{self.ports[vendor]}"

    def reset(self) -> None:
        """Forget what was received and scripted, between tests sharing one server."""
        for fake in self.fakes.values():
            fake.reset()

    def violations(self) -> list[str]:
        return [f"{name}: {v}" for name, fake in self.fakes.items() for v in fake.violations]

    def webflow_tenant(self) -> dict[str, Any]:
        """A second Webflow tenant's connection: the same server, a token of its own (so
        ``webflow.by_token`` can make one tenant misbehave while the other is served)."""
        return {"base_url": self.base_url("webflow"), "token": self.secrets["webflow_tenant_token"]}

    def connections(
        self, *, lexful_api_key: bool = False, autodesk_refresh: bool = False
    ) -> dict[str, Any]:
        """The ``connections`` config section pointing at these fakes."""
        s = self.secrets
        lexful: dict[str, Any] = {"base_url": self.base_url("lexful"), "account_id": "acct-1"}
        if lexful_api_key:
            lexful.update(api_key_id="key-1", api_key_secret=s["lexful_key_secret"])
        else:
            lexful["token"] = s["lexful_token"]
        autodesk: dict[str, Any] = {"base_url": self.base_url("autodesk")}
        if autodesk_refresh:
            autodesk.update(
                client_id="aps-client",
                client_secret=s["autodesk_client_secret"],
                refresh_token=s["autodesk_refresh_token"],
            )
        else:
            autodesk["token"] = s["autodesk_token"]
        return {
            "lexful": {"default": lexful},
            "webflow": {
                "default": {"base_url": self.base_url("webflow"), "token": s["webflow_token"]}
            },
            "autodesk": {"default": autodesk},
            "trelica": {
                "default": {
                    "base_url": self.base_url("trelica"),
                    "client_id": "trelica-client",
                    "client_secret": s["trelica_client_secret"],
                }
            },
            "enos": {
                "default": {
                    "base_url": self.base_url("enos"),
                    "app_key": "enos-app-key",
                    "app_secret": s["enos_app_secret"],
                }
            },
        }
