"""EnOS (IoT asset service): ``POST {base}/asset-service/v2.1/assets?action=update``.

Query ``orgId`` and ``isPatchUpdate`` (``mode: patch`` → true, ``replace`` → false); body
``{"asset": {"assetId": …, …changes}}``. Auth is the APIM token service:
``POST {base}/apim-token-service/v2.0/token/get`` with ``appKey``, ``timestamp`` (ms) and
``encryption`` = sha256(appKey + timestamp + appSecret); the token (``data.accessToken``,
valid ``data.expire`` seconds) goes in ``apim-accesstoken`` with ``apim-timestamp`` and
``apim-signature`` = sha256(accessToken + query sorted by name as ``k1v1k2v2…`` + raw body +
timestamp + appSecret).

Answers are HTTP 200 with ``{"code": 0, "msg": "OK"}``; a non-zero ``code`` is a failure:
1203 (token expired) refreshes the token, 99500 is retried, everything else (12958 attribute
validation, 12404 no such asset, 994xx) is dead-lettered.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from consumer.delivery.http import HttpClient, HttpRequest, HttpResponse, json_body
from consumer.errors import AuthExpiredError, AuthFailedError, PermanentError, RetryableError
from consumer.events import Event
from consumer.vendors.auth import CachedToken, TokenSource, token_body, token_from
from consumer.vendors.base import Result, VendorClient

TOKEN_EXPIRED = frozenset({1203})
RETRYABLE = frozenset({99500})


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


class EnosClient(VendorClient):
    name = "enos"
    # freshness: each attribute and each tag is a field of its own; ``name`` (default value
    # and translations) is one value
    maps = frozenset({"attributes", "tags"})

    @classmethod
    def resets(cls, data: Mapping[str, Any]) -> bool:
        """``replace`` (isPatchUpdate=false) resets every field of the asset."""
        return data.get("mode") == "replace"

    @classmethod
    def as_patch(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {**data, "mode": "patch"}

    @classmethod
    def target(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Not ``mode``: a patch may follow a replace in one request, which stays a replace
        (``follows`` never takes a replace after anything)."""
        return {k: v for k, v in super().target(data).items() if k != "mode"}

    def token_source(self) -> TokenSource:
        return CachedToken(self._fetch_token)

    async def _fetch_token(self, http: HttpClient) -> tuple[str, float]:
        app_key = str(self.connection.require("app_key"))
        stamp = str(int(time.time() * 1000))
        encryption = _sha256(f"{app_key}{stamp}{self.connection.secret('app_secret')}".encode())
        response = await http.send(
            HttpRequest(
                "POST",
                f"{self.base}/apim-token-service/v2.0/token/get",
                {"Content-Type": "application/json"},
                json_body({"appKey": app_key, "encryption": encryption, "timestamp": int(stamp)}),
            )
        )
        data = token_body(response).get("data")
        if not isinstance(data, dict):
            raise AuthFailedError(
                "token service answered without data (wrong app key?)", status=response.status
            )
        return token_from(data, "accessToken", "expire", default_lifetime=7200)

    def build(self, events: Sequence[Event], token: str) -> HttpRequest:
        (event,) = events
        data = event.data
        query = (
            ("action", "update"),
            ("orgId", str(data["org_id"])),
            ("isPatchUpdate", "false" if data.get("mode") == "replace" else "true"),
        )
        body = json_body({"asset": {"assetId": data["asset_id"], **data["changes"]}})
        stamp = str(int(time.time() * 1000))
        signed = "".join(f"{k}{v}" for k, v in sorted(query))
        signature = _sha256(
            f"{token}{signed}".encode(),
            body,
            f"{stamp}{self.connection.secret('app_secret')}".encode(),
        )
        return HttpRequest(
            "POST",
            f"{self.base}/asset-service/v2.1/assets",
            {
                "apim-accesstoken": token,
                "apim-timestamp": stamp,
                "apim-signature": signature,
                "Content-Type": "application/json",
            },
            body,
            query,
        )

    def read(self, response: HttpResponse, events: Sequence[Event], token: str) -> list[Result]:
        common = self.classify(response, token)
        if common is not None:
            return [common]
        body = response.json()
        code = body.get("code") if isinstance(body, dict) else None
        if code == 0:
            return [None]
        message = str(body.get("msg", ""))[:200] if isinstance(body, dict) else ""
        detail = f"EnOS code {code}: {message}".rstrip(": ")
        if code in TOKEN_EXPIRED:
            return [AuthExpiredError(detail, status=response.status, token=token)]
        if code in RETRYABLE or code is None:  # None: a garbled answer, not a refusal
            return [RetryableError(detail, status=response.status, retry_reason="server_error")]
        return [PermanentError(detail, status=response.status)]
