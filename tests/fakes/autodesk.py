"""Autodesk BIM 360 Assets v2: ``PATCH .../projects/{projectId}/assets:batch-patch``.

Body keyed by asset id (at most 100); the answer is keyed the same way. ``bad_assets`` makes a
batch containing one of them fail with 400, as a real validation failure of one entry would.
Refresh-token grant: ``POST /authentication/v2/token``; each answer rotates the refresh token.
"""

from __future__ import annotations

import re
import secrets
import uuid

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

    def reset(self) -> None:
        super().reset()
        self.bad_assets.clear()
        self.batch_sizes.clear()
        self.refresh_token = self.configured_refresh_token

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
        if (
            form.get("grant_type") != "refresh_token"
            or form.get("refresh_token") != self.refresh_token
        ):
            return self.violation("bad or reused refresh token", 400)
        self.refresh_token = "rt-" + secrets.token_hex(8)
        return web.json_response(
            {
                "access_token": self.issue_token(),
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": self.refresh_token,
            }
        )

    async def update(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if self.bearer(request) not in self.tokens:
            return web.json_response({"developerMessage": "unauthorized"}, status=401)
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
