"""Lexful: ``PATCH /v1/assets/{assetTypeName}/{assetId}`` with Bearer and ``X-Account-ID``.

Token by API key: ``POST /v1/auth/token`` with ``X-Account-Id`` and ``{"id", "secret"}``
(the answer's shape is not on the seed page; assumed ``{"access_token", "expires_in"}``).
"""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from tests.fakes.base import VendorFake

READ_ONLY = {
    "id",
    "organization_id",
    "organization_name",
    "labels",
    "created_at",
    "updated_at",
    "deleted_at",
    "created_by",
    "updated_by",
}
TYPE_NAME = re.compile(r"^[A-Za-z0-9._~-]+$")


class LexfulFake(VendorFake):
    name = "lexful"
    token_paths = ("/v1/auth/token",)

    def __init__(self, account_id: str, token: str, key_id: str, key_secret: str) -> None:
        super().__init__()
        self.account_id, self.key_id, self.key_secret = account_id, key_id, key_secret
        self.static_tokens.add(token)
        self.tokens.add(token)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/auth/token", self.token),
            web.patch("/v1/assets/{type}/{id}", self.update),
        ]

    async def token(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        if request.headers.get("X-Account-Id") != self.account_id:
            return self.violation("X-Account-Id missing or wrong", 401)
        if body != {"id": self.key_id, "secret": self.key_secret}:
            return self.violation("bad API key", 401)
        return web.json_response(
            {"access_token": self.issue_token(), "expires_in": 3600, "token_type": "Bearer"}
        )

    async def update(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if self.bearer(request) not in self.tokens:
            return web.json_response({"error": "unauthorized"}, status=401)
        if request.headers.get("X-Account-ID") != self.account_id:
            return self.violation("X-Account-ID missing or wrong", 401)
        asset_type, asset_id = request.match_info["type"], request.match_info["id"]
        try:
            uuid.UUID(asset_id)
        except ValueError:
            return self.violation(f"assetId {asset_id!r} is not a UUID", 404)
        if not TYPE_NAME.match(asset_type):
            return self.violation(f"assetTypeName {asset_type!r} malformed", 404)
        if (bad := self.json_body(body, request)) is not None:
            return bad
        if read_only := READ_ONLY & set(body):
            return self.violation(f"read-only fields {sorted(read_only)}")
        if (scripted := await self.scripted(request)) is not None:
            return scripted
        return web.json_response({"id": asset_id, "organization_id": str(uuid.uuid4()), **body})
