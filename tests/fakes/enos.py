"""EnOS: APIM token service, then ``POST /asset-service/v2.1/assets?action=update``.

Every update must carry ``apim-accesstoken``, ``apim-timestamp`` and ``apim-signature`` =
sha256(accessToken + sorted query ``k1v1k2v2…`` + raw body + timestamp + appSecret). Answers
are HTTP 200 with ``{"code": 0, "msg": "OK"}``; ``fail_next(Reply(body={"code": 12958, ...}))``
scripts an error code.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid

from aiohttp import web

from tests.fakes.base import VendorFake

ORG_ID = re.compile(r"^[A-Za-z0-9._~-]+$")
FIELDS = {"assetId", "name", "description", "attributes", "timezone", "tags"}


class EnosFake(VendorFake):
    name = "enos"
    token_paths = ("/apim-token-service/v2.0/token/get",)

    def __init__(self, app_key: str, app_secret: str) -> None:
        super().__init__()
        self.app_key, self.app_secret = app_key, app_secret
        self.expire_s = 7200

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/apim-token-service/v2.0/token/get", self.token),
            web.post("/asset-service/v2.1/assets", self.update),
        ]

    async def token(self, request: web.Request) -> web.Response:
        body = await self.record(request)
        if not isinstance(body, dict) or body.get("appKey") != self.app_key:
            return self.violation("unknown appKey", 401)
        stamp = str(body.get("timestamp", ""))
        want = hashlib.sha256(f"{self.app_key}{stamp}{self.app_secret}".encode()).hexdigest()
        if body.get("encryption") != want:
            return self.violation("encryption mismatch", 401)
        if abs(int(stamp) - time.time() * 1000) > 300_000:
            return self.violation("timestamp out of range", 401)
        return web.json_response(
            {
                "status": 0,
                "code": 0,
                "msg": "Success",
                "data": {"accessToken": self.issue_token(), "expire": self.expire_s},
            }
        )

    async def update(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = await self.record(request)
        token = request.headers.get("apim-accesstoken", "")
        if token not in self.tokens:
            return web.json_response({"code": 1203, "msg": "token expired"})
        stamp = request.headers.get("apim-timestamp", "")
        query = "".join(f"{k}{v}" for k, v in sorted(request.query.items()))
        want = hashlib.sha256(
            f"{token}{query}".encode() + raw + f"{stamp}{self.app_secret}".encode()
        ).hexdigest()
        if request.headers.get("apim-signature") != want:
            return self.violation("apim-signature mismatch", 401)
        q = request.query
        if (
            q.get("action") != "update"
            or not ORG_ID.match(q.get("orgId", ""))
            or q.get("isPatchUpdate") not in ("true", "false")
        ):
            return self.violation(f"query {dict(q)} is not action=update&orgId&isPatchUpdate")
        if (bad := self.json_body(body, request)) is not None:
            return bad
        asset = body.get("asset")
        if set(body) != {"asset"} or not isinstance(asset, dict) or not asset.get("assetId"):
            return self.violation("body must be {asset: {assetId, ...}}")
        if extra := set(asset) - FIELDS:
            return self.violation(f"fields not accepted: {sorted(extra)}")
        if q["isPatchUpdate"] == "false" and "attributes" not in asset:
            return web.json_response({"code": 12958, "msg": "attributes required"})
        if (scripted := await self.scripted(request)) is not None:
            return scripted
        return web.json_response({"code": 0, "msg": "OK", "requestId": str(uuid.uuid4())})
