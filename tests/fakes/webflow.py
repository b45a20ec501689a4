"""Webflow Data API v2: ``PATCH /v2/assets/{asset_id}[?localeId=…]``, Bearer, body
displayName/altText: the shape of the current OpenAPI operation ``patch-asset``
(tests/dispatch/webflow_patch_asset.openapi.yaml), not the older seed page's.

A ``localeId`` in the body is refused (the real API would likely ignore it and update the
primary locale, so a test could not tell); the query's ``localeId`` is kept in each
``Received.query`` for tests to assert.

Every answer carries ``X-RateLimit-Limit``/``X-RateLimit-Remaining``; with ``rate_per_s`` set,
a token bucket answers 429 with ``Retry-After`` and ``{"code": "too_many_requests"}`` beyond it.
"""

from __future__ import annotations

import math
import re
import time

from aiohttp import web

from tests.fakes.base import VendorFake

UNLIMITED = 1_000_000
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
BODY_FIELDS = {"displayName", "altText"}
QUERY_PARAMETERS = {"localeId"}


class WebflowFake(VendorFake):
    name = "webflow"

    def __init__(self, token: str, rate_per_s: float | None = None, burst: int = 60) -> None:
        super().__init__()
        self.static_tokens.add(token)
        self.tokens.add(token)
        self.rate_per_s, self.burst = rate_per_s, burst
        self._bucket, self._last = float(burst), time.monotonic()
        self.limited = 0

    def reset(self) -> None:
        super().reset()
        self.rate_per_s, self.limited = None, 0

    def routes(self) -> list[web.RouteDef]:
        return [web.patch("/v2/assets/{asset_id}", self.update)]

    def _take(self) -> tuple[bool, int]:
        if self.rate_per_s is None:  # unlimited: advertise a limit no test will reach
            return True, UNLIMITED
        now = time.monotonic()
        self._bucket = min(self.burst, self._bucket + (now - self._last) * self.rate_per_s)
        self._last = now
        if self._bucket >= 1:
            self._bucket -= 1
            return True, int(self._bucket)
        return False, 0

    def _locale(self, request: web.Request) -> web.Response | None:
        """The query holds nothing but an optional, single, object-id ``localeId``."""
        if extra := set(request.query) - QUERY_PARAMETERS:
            return self.violation(f"query parameters not accepted: {sorted(extra)}")
        locales = request.query.getall("localeId", [])
        if len(locales) > 1:
            return self.violation("localeId given more than once")
        # The spec allows an empty value, but a locale id is an object id: never sent empty.
        if locales and not OBJECT_ID.match(locales[0]):
            return self.violation("localeId is not a 24-hex object id")
        return None

    async def update(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if self.bearer(request) not in self.tokens:
            return web.json_response({"code": "not_authorized"}, status=401)
        if not OBJECT_ID.match(request.match_info["asset_id"]):
            return self.violation("asset_id is not a 24-hex object id", 404)
        if (bad := self.json_body(body, request)) is not None:
            return bad
        if "localeId" in body:
            return self.violation("localeId belongs in the query, not the body")
        if extra := set(body) - BODY_FIELDS:
            return self.violation(f"fields not accepted: {sorted(extra)}")
        if (bad := self._locale(request)) is not None:
            return bad
        allowed, remaining = self._take()
        limit = self.burst if self.rate_per_s is not None else UNLIMITED
        limits = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)}
        if not allowed:
            self.limited += 1
            wait = math.ceil(1 / self.rate_per_s) if self.rate_per_s else 60
            return web.json_response(
                {"code": "too_many_requests", "message": "Too many requests"},
                status=429,
                headers={**limits, "Retry-After": str(wait)},
            )
        if (scripted := await self.scripted(request)) is not None:
            return scripted
        return web.json_response({"id": request.match_info["asset_id"], **body}, headers=limits)
