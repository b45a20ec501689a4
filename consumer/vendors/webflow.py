"""Webflow Data API v2: ``PATCH {base}/v2/assets/{asset_id}`` (scope ``assets:write``).

The request follows Webflow's current public OpenAPI (repository webflow/openapi-spec,
``openapi/v2.yml``, operation ``patch-asset``, reshaped in April 2026), not the older seed
page: the body holds ``displayName`` and ``altText``; ``localeId`` is a *query parameter*.
Sent in the body, as the seed page showed, ``localeId`` is not part of the operation, so
the update would likely be answered 200 and land on the primary locale.

Event format decision: ``localeId`` stays inside ``changes`` (producers written against the
older shape keep working) and is moved from there to ``?localeId=`` here; the rest of
``changes`` is the body. Bearer token. Limits are 60 or 120 requests a minute per key;
answers carry ``X-RateLimit-Remaining``/``X-RateLimit-Limit``, which the pacer follows, and
a 429 carries ``Retry-After`` (usually 60).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from consumer.delivery.http import HttpRequest, json_body
from consumer.events import Event
from consumer.vendors.auth import TokenSource
from consumer.vendors.base import VendorClient, bearer_json, segment


class WebflowClient(VendorClient):
    name = "webflow"
    rate_window_s = 60.0

    # freshness: ``displayName`` is one field (the same in every locale); ``altText`` is one
    # field per locale (``altText@<localeId>``, plain ``altText`` for the primary locale);
    # ``localeId`` only says where, it is not a field.
    @classmethod
    def fields(cls, data: Mapping[str, Any]) -> list[str]:
        changes = data["changes"]
        return [_field(name, changes) for name in changes if name != "localeId"]

    @classmethod
    def without(cls, data: Mapping[str, Any], stale: AbstractSet[str]) -> dict[str, Any]:
        changes = data["changes"]
        kept = {
            name: value
            for name, value in changes.items()
            if name == "localeId" or _field(name, changes) not in stale
        }
        return {**data, "changes": kept}

    @classmethod
    def target(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """The locale too: it is the request's ``?localeId=``."""
        return {**super().target(data), "localeId": data["changes"].get("localeId")}

    def token_source(self) -> TokenSource:
        return TokenSource(self.connection.secret("token"))

    def build(self, events: Sequence[Event], token: str) -> HttpRequest:
        (event,) = events
        body = dict(event.data["changes"])
        locale = body.pop("localeId", None)
        # HttpClient percent-encodes the query; the URL itself carries none.
        query = (("localeId", str(locale)),) if locale is not None else ()
        return HttpRequest(
            "PATCH",
            f"{self.base}/v2/assets/{segment(event.data['asset_id'])}",
            bearer_json(token),
            json_body(body),
            query,
        )


def _field(name: str, changes: Mapping[str, Any]) -> str:
    locale = changes.get("localeId")
    return f"{name}@{locale}" if name == "altText" and locale is not None else name
