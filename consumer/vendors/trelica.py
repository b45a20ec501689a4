"""Trelica (SaaS manager, devices): ``PATCH {base}/api/assets/v1/{id}``.

OAuth2 client credentials at ``POST {base}/connect/token`` (not under ``/api``) with the
client id and secret in HTTP Basic, form ``grant_type=client_credentials`` and an optional
``scope`` (e.g. ``Assets.Write``); the token is cached until shortly before ``expires_in``.
Omitted fields are left unchanged; ``null`` values are sent as ``null`` and clear the field.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from urllib.parse import urlencode

from consumer.delivery.http import HttpClient, HttpRequest, json_body
from consumer.events import Event
from consumer.vendors.auth import CachedToken, TokenSource, token_body, token_from
from consumer.vendors.base import VendorClient, bearer_json, segment


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TrelicaClient(VendorClient):
    name = "trelica"
    maps = frozenset({"customFields"})  # freshness: each custom field is a field of its own

    def token_source(self) -> TokenSource:
        return CachedToken(self._fetch_token)

    async def _fetch_token(self, http: HttpClient) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self.connection.get("scope"):
            form["scope"] = str(self.connection.get("scope"))
        response = await http.send(
            HttpRequest(
                "POST",
                f"{self.base}/connect/token",
                {
                    "Authorization": basic_auth(
                        str(self.connection.require("client_id")),
                        self.connection.secret("client_secret"),
                    ),
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                urlencode(form).encode(),
            )
        )
        return token_from(token_body(response))

    def build(self, events: Sequence[Event], token: str) -> HttpRequest:
        (event,) = events
        return HttpRequest(
            "PATCH",
            f"{self.base}/api/assets/v1/{segment(event.data['asset_id'])}",
            bearer_json(token),
            json_body(event.data["changes"]),
        )
