"""Trelica: OAuth2 client credentials at ``POST /connect/token``, then
``PATCH /api/assets/v1/{id}`` with the bearer token; ``null`` clears a field."""

from __future__ import annotations

import re

from aiohttp import web

from tests.fakes.base import VendorFake

WRITABLE = {
    "status",
    "description",
    "assignedToEmail",
    "locationName",
    "serialNumber",
    "assetTag",
    "purchaseDate",
    "disposalDate",
    "warrantyExpirationDate",
    "lifespanExpirationDate",
    "enrolledDtm",
    "netPrice",
    "netPriceCurrency",
    "notes",
    "isEncrypted",
    "platform",
    "osVersion",
    "customFields",
    "deviceName",
}
ASSET_ID = re.compile(r"^[A-Za-z0-9._~-]+$")


class TrelicaFake(VendorFake):
    name = "trelica"
    token_paths = ("/connect/token",)

    def __init__(self, client_id: str, client_secret: str) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.expires_in = 3600

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/connect/token", self.token),
            web.patch("/api/assets/v1/{id}", self.update),
        ]

    async def token(self, request: web.Request) -> web.Response:
        await self.record(request)
        if not self.basic_ok(request, self.client_id, self.client_secret):
            return self.violation("bad client credentials", 401)
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return self.violation("grant_type must be client_credentials")
        return web.json_response(
            {
                "access_token": self.issue_token(),
                "expires_in": self.expires_in,
                "token_type": "Bearer",
            }
        )

    async def update(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if self.bearer(request) not in self.tokens:
            return web.json_response({"error": "invalid_token"}, status=401)
        if not ASSET_ID.match(request.match_info["id"]):
            return self.violation("asset id malformed", 404)
        if (bad := self.json_body(body, request)) is not None:
            return bad
        if extra := set(body) - WRITABLE:
            return self.violation(f"fields not writable: {sorted(extra)}")
        if (scripted := await self.scripted(request)) is not None:
            return scripted
        return web.json_response({"id": request.match_info["id"], **body})
