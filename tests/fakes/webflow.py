"""Webflow Data API v2: ``PATCH /v2/assets/{asset_id}[?localeId=…]``, Bearer, body
displayName/altText: the shape of the current OpenAPI operation ``patch-asset``
(tests/dispatch/webflow_patch_asset.openapi.yaml), not the older seed page's.

A ``localeId`` in the body is refused (the real API would likely ignore it and update the
primary locale, so a test could not tell); the query's ``localeId`` is kept in each
``Received.query`` for tests to assert.

Every answer carries ``X-RateLimit-Limit``/``X-RateLimit-Remaining``. With a ``limiter`` set
(tests/fakes/rate_limits.py: a token bucket or a fixed window, one per fake, so shared by every
process using it), requests beyond it are answered 429 with ``Retry-After`` and
``{"code": "too_many_requests"}``; ``rate_per_s``/``burst`` make the token bucket of old.
"""

from __future__ import annotations

import re

from aiohttp import web

from tests.fakes.base import VendorFake
from tests.fakes.rate_limits import Limiter, TokenBucket

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
        self.limiter: Limiter | None = None
        if rate_per_s is not None:
            self.limit_to(TokenBucket(rate_per_s, burst))
        self.limited = 0

    def limit_to(self, limiter: Limiter | None) -> None:
        """Count requests with this limiter from now on (None: unlimited)."""
        self.limiter = limiter

    def reset(self) -> None:
        super().reset()
        self.limiter, self.limited = None, 0

    def routes(self) -> list[web.RouteDef]:
        return [web.patch("/v2/assets/{asset_id}", self.update)]

    def _take(self) -> tuple[bool, dict[str, str]]:
        if self.limiter is None:  # unlimited: advertise a limit no test will reach
            return True, {
                "X-RateLimit-Limit": str(UNLIMITED),
                "X-RateLimit-Remaining": str(UNLIMITED),
            }
        return self.limiter.take()

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
        allowed, limits = self._take()
        if not allowed:
            self.limited += 1
            return web.json_response(
                {"code": "too_many_requests", "message": "Too many requests"},
                status=429,
                headers=limits,
            )
        if (scripted := await self.scripted(request)) is not None:
            return scripted
        return web.json_response({"id": request.match_info["asset_id"], **body}, headers=limits)
