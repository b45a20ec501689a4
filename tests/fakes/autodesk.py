"""Autodesk BIM 360 Assets v2: ``PATCH .../projects/{projectId}/assets:batch-patch``.

Body keyed by asset id (at most 100); the answer is keyed the same way. ``bad_assets`` makes a
batch containing one of them fail with 400, as a real validation failure of one entry would.
Refresh-token grant: ``POST /authentication/v2/token``. Refresh tokens are single-use: each
answer rotates it, and a used one answers 400 ``invalid_grant`` (counted in ``reuses``, not a
violation: replicas racing is what the service must survive). Access tokens from the grant last
``access_lifetime_s`` (30 s, settable per test); an expired one answers 401.

Every token the grant hands out starts with the configured refresh token (a secret of
``FakeVendors.secrets``), so the suites' search of every log for those secrets finds rotated
tokens too.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections import Counter

from aiohttp import web

from tests.fakes.base import VendorFake

PROJECT = re.compile(r"^(b\.)?[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
FIELDS = {
    "clientAssetId",
    "categoryId",
    "statusId",
    "description",
    "locationId",
    "barcode",
    "customAttributes",
}
BATCH_LIMIT = 100
ACCESS_LIFETIME_S = 30


class AutodeskFake(VendorFake):
    name = "autodesk"
    token_paths = ("/authentication/v2/token",)

    def __init__(self, token: str, client_id: str, client_secret: str, refresh_token: str) -> None:
        super().__init__()
        self.static_tokens.add(token)
        self.tokens.add(token)
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_token = self.configured_refresh_token = refresh_token
        self.bad_assets: set[str] = set()
        self.batch_sizes: list[int] = []
        self.access_lifetime_s: float = ACCESS_LIFETIME_S
        self.expiry: dict[str, float] = {}  # access token -> when it stops working (monotonic)
        self.used: Counter[str] = Counter()  # refresh token -> times presented
        self.reuses = 0  # a used refresh token presented again (answered invalid_grant)
        self.expired = 0  # updates refused because their access token had expired

    def reset(self) -> None:
        super().reset()
        self.bad_assets.clear()
        self.batch_sizes.clear()
        self.refresh_token = self.configured_refresh_token
        self.access_lifetime_s = ACCESS_LIFETIME_S
        self.used.clear()
        self.reuses = self.expired = 0

    def issued(self) -> list[str]:
        """Every refresh and access token the grant handed out (all still secrets)."""
        refresh = {*self.used, self.refresh_token} - {self.configured_refresh_token}
        return [*refresh, *self.expiry]

    def issue_token(self) -> str:
        token = f"{self.configured_refresh_token}.at-{secrets.token_hex(12)}"
        self.tokens.add(token)
        self.token_requests += 1
        self.expiry[token] = time.monotonic() + self.access_lifetime_s
        return token

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/authentication/v2/token", self.token),
            web.patch("/bim360/assets/v2/projects/{project}/assets:batch-patch", self.update),
        ]

    async def token(self, request: web.Request) -> web.Response:
        await self.record(request)
        if not self.basic_ok(request, self.client_id, self.client_secret):
            return self.violation("bad client credentials", 401)
        form = await request.post()
        if form.get("grant_type") != "refresh_token":
            return self.violation("grant_type is not refresh_token", 400)
        presented = str(form.get("refresh_token", ""))
        if presented != self.refresh_token:
            if presented not in self.used:
                return self.violation("unknown refresh token", 400)
            self.used[presented] += 1
            self.reuses += 1
            return web.json_response(
                {
                    "error": "invalid_grant",
                    "error_description": "The refresh token is invalid or expired.",
                },
                status=400,
            )
        self.used[presented] += 1
        self.refresh_token = f"{self.configured_refresh_token}.rt-{secrets.token_hex(8)}"
        return web.json_response(
            {
                "access_token": self.issue_token(),
                "token_type": "Bearer",
                "expires_in": self.access_lifetime_s,
                "refresh_token": self.refresh_token,
            }
        )

    async def update(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        token = self.bearer(request)
        if token not in self.tokens:
            return web.json_response({"developerMessage": "unauthorized"}, status=401)
        if time.monotonic() >= self.expiry.get(token, float("inf")):
            self.expired += 1
            return web.json_response({"developerMessage": "The token has expired"}, status=401)
        if not PROJECT.match(request.match_info["project"]):
            return self.violation("projectId is not a UUID or b.UUID", 404)
        if (bad := self.json_body(body, request)) is not None:
            return bad
        if not body or len(body) > BATCH_LIMIT:
            return self.violation(f"batch of {len(body)} assets (1..{BATCH_LIMIT})")
        for asset_id, changes in body.items():
            try:
                uuid.UUID(asset_id)
            except ValueError:
                return self.violation(f"key {asset_id!r} is not an asset id")
            if not isinstance(changes, dict) or not changes or set(changes) - FIELDS:
                return self.violation(f"changes of {asset_id} malformed")
        self.batch_sizes.append(len(body))
        if self.bad_assets & set(body):
            return web.json_response(
                {"developerMessage": "asset attribute validation failed", "errorCode": "BAD_INPUT"},
                status=400,
            )
        if (scripted := await self.scripted(request)) is not None:
            return scripted
        return web.json_response({a: {"id": a, "version": 2, **c} for a, c in body.items()})
