"""Webflow Data API v2: ``PATCH {base}/v2/assets/{asset_id}`` (scope ``assets:write``).

Bearer token; the body is ``changes`` (``displayName``, ``localeId``). Limits are 60 or 120
requests a minute per key; answers carry ``X-RateLimit-Remaining``/``X-RateLimit-Limit``,
which the pacer follows, and a 429 carries ``Retry-After`` (usually 60).
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer.config import Connection
from consumer.events import Event
from consumer.http import HttpRequest, json_body
from consumer.vendors.auth import TokenSource
from consumer.vendors.base import VendorClient, bearer_json, segment


class WebflowClient(VendorClient):
    name = "webflow"
    rate_window_s = 60.0

    @classmethod
    def check_connection(cls, connection: Connection) -> None:
        connection.require("token")

    def token_source(self) -> TokenSource:
        return TokenSource(self.connection.secret("token"))

    def build(self, events: Sequence[Event], token: str) -> HttpRequest:
        (event,) = events
        return HttpRequest(
            "PATCH",
            f"{self.base}/v2/assets/{segment(event.data['asset_id'])}",
            bearer_json(token),
            json_body(event.data["changes"]),
        )
