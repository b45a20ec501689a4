"""Autodesk BIM 360 / ACC Assets v2:
``PATCH {base}/bim360/assets/v2/projects/{projectId}/assets:batch-patch``.

One call updates many assets of one project: the body is keyed by asset id, and so is the
answer, from which each event's outcome is read. The batcher groups updates per project (at
most 100, the documented limit); a 400 for a whole batch is split to find the bad events.
Writes are limited to 100 a minute per user: the pacer follows 429s and rate headers.

Auth: a static ``token``, or the refresh-token grant (``client_id``, ``client_secret``,
``refresh_token``) at ``POST {base}/authentication/v2/token`` with HTTP Basic. Each answer
brings a new refresh token and the old one dies. ``asset-sync run`` keeps the current one, with
the access token, encrypted on the connection state topic
(consumer/state/connection_state.py), so it survives restarts and is shared by the replicas;
the configured one is used only when the topic has none. ``asset-sync dispatch`` (no Kafka)
keeps it in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer.delivery.http import HttpClient, HttpRequest, HttpResponse, json_body
from consumer.errors import PermanentError, RetryableError
from consumer.events import Event
from consumer.state import connection_state
from consumer.vendors.auth import (
    CachedToken,
    SharedRefreshToken,
    TokenSource,
    token_body,
    token_from,
)
from consumer.vendors.base import Result, VendorClient, bearer_json, segment
from consumer.vendors.trelica import basic_auth


class AutodeskClient(VendorClient):
    name = "autodesk"
    batched = True
    maps = frozenset({"customAttributes"})  # freshness: each attribute is a field of its own

    def token_source(self) -> TokenSource:
        if self.connection.get("token"):
            return TokenSource(self.connection.secret("token"))
        configured = self.connection.secret("refresh_token")
        store = connection_state.current()
        if store is not None:
            key = f"{self.name}/{self.connection.name}"
            return SharedRefreshToken(store, key, configured, self._grant)
        self._refresh_token = configured
        return CachedToken(self._fetch_token)

    async def _fetch_token(self, http: HttpClient) -> tuple[str, float]:
        """Without a state topic: the rotated refresh token replaces the old one in memory."""
        token, lifetime, rotated = await self._grant(http, self._refresh_token)
        self._refresh_token = rotated or self._refresh_token
        return token, lifetime

    async def _grant(self, http: HttpClient, refresh_token: str) -> tuple[str, float, str | None]:
        form = f"grant_type=refresh_token&refresh_token={segment(refresh_token)}"
        response = await http.send(
            HttpRequest(
                "POST",
                f"{self.base}/authentication/v2/token",
                {
                    "Authorization": basic_auth(
                        str(self.connection.require("client_id")),
                        self.connection.secret("client_secret"),
                    ),
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                form.encode(),
            )
        )
        body = token_body(response)
        token, lifetime = token_from(body)
        rotated = body.get("refresh_token")
        return token, lifetime, rotated if isinstance(rotated, str) and rotated else None

    def batch_key(self, event: Event) -> str:
        return str(event.data["project_id"])

    def build(self, events: Sequence[Event], token: str) -> HttpRequest:
        project = segment(events[0].data["project_id"])
        return HttpRequest(
            "PATCH",
            f"{self.base}/bim360/assets/v2/projects/{project}/assets:batch-patch",
            bearer_json(token),
            json_body({e.data["asset_id"]: e.data["changes"] for e in events}),
        )

    def read(self, response: HttpResponse, events: Sequence[Event], token: str) -> list[Result]:
        common = self.classify(response, token)
        if common is not None:
            return [common] * len(events)
        body = response.json()
        if not isinstance(body, dict):  # a garbled 2xx: the vendor may not have applied it
            return [
                RetryableError(
                    "answer is not an object keyed by asset id",
                    status=response.status,
                    retry_reason="server_error",
                )
            ] * len(events)
        return [
            None
            if e.data["asset_id"] in body
            else PermanentError("asset missing from the batch-patch answer", status=response.status)
            for e in events
        ]
