"""Lexful (IT documentation): ``PATCH {base}/v1/assets/{assetTypeName}/{assetId}``.

Headers ``Authorization: Bearer`` and ``X-Account-ID``; the body is the event's ``changes``.
The token is configured (``token``) or obtained from an API key (``api_key_id`` and
``api_key_secret``) at ``POST {base}/v1/auth/token`` with header ``X-Account-Id`` and JSON
``{"id", "secret"}``. Assumed, as the seed page does not show it: the answer carries
``access_token`` (or ``token``) and ``expires_in``; tokens last 60 minutes.
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer.delivery.http import HttpClient, HttpRequest, json_body
from consumer.events import Event
from consumer.vendors.auth import CachedToken, TokenSource, token_body, token_from
from consumer.vendors.base import VendorClient, bearer_json, segment


class LexfulClient(VendorClient):
    name = "lexful"

    def token_source(self) -> TokenSource:
        if self.connection.get("token"):
            return TokenSource(self.connection.secret("token"))
        return CachedToken(self._fetch_token)

    async def _fetch_token(self, http: HttpClient) -> tuple[str, float]:
        response = await http.send(
            HttpRequest(
                "POST",
                f"{self.base}/v1/auth/token",
                {
                    "X-Account-Id": str(self.connection.require("account_id")),
                    "Content-Type": "application/json",
                },
                json_body(
                    {
                        "id": str(self.connection.require("api_key_id")),
                        "secret": self.connection.secret("api_key_secret"),
                    }
                ),
            )
        )
        body = token_body(response)
        return token_from(body, "access_token" if "access_token" in body else "token")

    def build(self, events: Sequence[Event], token: str) -> HttpRequest:
        (event,) = events
        data = event.data
        return HttpRequest(
            "PATCH",
            f"{self.base}/v1/assets/{segment(data['asset_type'])}/{segment(data['asset_id'])}",
            {**bearer_json(token), "X-Account-ID": str(self.connection.require("account_id"))},
            json_body(data["changes"]),
        )
