"""Each vendor gets exactly the request its seed page documents."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from urllib.parse import urlsplit

import pytest
from prometheus_client import REGISTRY

from consumer import __version__
from consumer.config import Connection, DispatchConfig
from consumer.delivery.dispatcher import Dispatcher
from consumer.delivery.http import HttpClient
from consumer.vendors import VENDORS
from tests.dispatch.conftest import deliver, make_config, valid
from tests.fakes import FakeVendors
from tests.fakes.rate_limits import TokenBucket


def test_lexful_patch_with_bearer_and_account_header(fakes: FakeVendors) -> None:
    event = valid("lexful")
    [outcome] = deliver(make_config(fakes), event)
    assert outcome.delivered, outcome
    [request] = fakes.lexful.updates()
    assert request.method == "PATCH"
    assert request.path == f"/v1/assets/contacts/{event.data['asset_id']}"
    assert request.query == {}
    assert request.headers["Authorization"] == f"Bearer {fakes.secrets['lexful_token']}"
    assert request.headers["X-Account-ID"] == "acct-1"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == event.data["changes"]


def test_every_request_names_asset_sync_and_its_version(fakes: FakeVendors) -> None:
    """Vendors see who calls them (their support asks for it), never the HTTP library."""
    outcomes = deliver(make_config(fakes), *(valid(vendor) for vendor in VENDORS))
    assert all(o.delivered for o in outcomes), outcomes
    agents = {r.headers.get("User-Agent") for fake in fakes.fakes.values() for r in fake.received}
    assert agents == {f"asset-sync/{__version__}"}


def test_lexful_api_key_is_exchanged_for_a_token_once(fakes: FakeVendors) -> None:
    config = make_config(fakes, lexful_api_key=True)
    outcomes = deliver(config, valid("lexful"), valid("lexful"), valid("lexful"))
    assert all(o.delivered for o in outcomes), outcomes
    assert fakes.lexful.token_requests == 1
    token_call = fakes.lexful.received[0]
    assert token_call.path == "/v1/auth/token"
    assert token_call.headers["X-Account-Id"] == "acct-1"
    assert token_call.body == {"id": "key-1", "secret": fakes.secrets["lexful_key_secret"]}


def test_webflow_patch(fakes: FakeVendors) -> None:
    event = valid("webflow")
    [outcome] = deliver(make_config(fakes), event)
    assert outcome.delivered, outcome
    [request] = fakes.webflow.updates()
    assert (request.method, request.path) == ("PATCH", "/v2/assets/580e63fc8c9a982ac9b8b745")
    assert request.query == {}  # no localeId in the event: the primary locale
    assert request.headers["Authorization"] == f"Bearer {fakes.secrets['webflow_token']}"
    assert request.body == {"displayName": "hero-image.png"}


def test_autodesk_batch_patch_keyed_by_asset_id(fakes: FakeVendors) -> None:
    events = [
        valid("autodesk", asset_id=f"286c1ef7-70f6-4ebd-8f87-e7f591ec6b{i:02x}") for i in range(5)
    ]
    outcomes = deliver(make_config(fakes), *events)
    assert all(o.delivered for o in outcomes), outcomes
    [request] = fakes.autodesk.updates()
    assert request.method == "PATCH"
    assert request.path == (
        "/bim360/assets/v2/projects/b.0c0b4d5e-1f2a-4b3c-8d9e-0a1b2c3d4e5f/assets:batch-patch"
    )
    assert request.body == {e.data["asset_id"]: e.data["changes"] for e in events}
    assert request.headers["Authorization"] == f"Bearer {fakes.secrets['autodesk_token']}"


def test_autodesk_batches_never_exceed_the_configured_size(fakes: FakeVendors) -> None:
    events = [
        valid("autodesk", asset_id=f"286c1ef7-70f6-4ebd-8f87-e7f591ec{i:04x}") for i in range(250)
    ]
    outcomes = deliver(make_config(fakes), *events)
    assert all(o.delivered for o in outcomes)
    assert sorted(fakes.autodesk.batch_sizes) == [50, 100, 100]


def test_autodesk_refresh_token_grant_rotates_the_refresh_token(fakes: FakeVendors) -> None:
    config = make_config(fakes, autodesk_refresh=True)
    first_refresh = fakes.autodesk.refresh_token
    [outcome] = deliver(config, valid("autodesk"))
    assert outcome.delivered, outcome
    token_call = fakes.autodesk.received[0]
    basic = base64.b64encode(
        f"aps-client:{fakes.secrets['autodesk_client_secret']}".encode()
    ).decode()
    assert token_call.headers["Authorization"] == f"Basic {basic}"
    assert fakes.autodesk.refresh_token != first_refresh


def test_trelica_client_credentials_then_patch_with_nulls(fakes: FakeVendors) -> None:
    event = valid("trelica")
    [outcome] = deliver(make_config(fakes), event)
    assert outcome.delivered, outcome
    token_call, update = fakes.trelica.received
    assert token_call.path == "/connect/token"
    assert token_call.body == "grant_type=client_credentials"
    assert (update.method, update.path) == ("PATCH", "/api/assets/v1/646fcb4fb829ba9df2a94471")
    assert update.body["notes"] is None  # null is sent, and clears the field


def test_enos_signed_post_with_query(fakes: FakeVendors) -> None:
    event = valid("enos")
    [outcome] = deliver(make_config(fakes), event)
    assert outcome.delivered, outcome
    token_call, update = fakes.enos.received
    assert token_call.path == "/apim-token-service/v2.0/token/get"
    assert update.method == "POST"
    assert update.path == "/asset-service/v2.1/assets"
    assert update.query == {"action": "update", "orgId": "yourOrgId", "isPatchUpdate": "true"}
    assert update.body == {"asset": {"assetId": "Instance_cshan_001", **event.data["changes"]}}
    token = update.headers["apim-accesstoken"]
    signed = (
        "actionupdateisPatchUpdatetrueorgIdyourOrgId"
        + json.dumps(update.body, separators=(",", ":"), ensure_ascii=False)
        + update.headers["apim-timestamp"]
        + fakes.secrets["enos_app_secret"]
    )
    assert update.headers["apim-signature"] == hashlib.sha256((token + signed).encode()).hexdigest()


def test_enos_replace_mode_sends_is_patch_update_false(fakes: FakeVendors) -> None:
    event = valid("enos", mode="replace", changes={"attributes": {"power": 1}})
    [outcome] = deliver(make_config(fakes), event)
    assert outcome.delivered, outcome
    assert fakes.enos.updates()[0].query["isPatchUpdate"] == "false"


HOSTILE = ["../../admin", "a/b", "x?y=1", "x#frag", "%2e%2e", "a\r\nHost: evil", ".."]


@pytest.mark.parametrize("vendor", sorted(VENDORS))
@pytest.mark.parametrize("hostile", HOSTILE)
def test_identifiers_never_leave_their_path_segment(vendor: str, hostile: str) -> None:
    # Given an event that skipped the schema (defence in depth) with a hostile identifier
    event = valid(vendor)
    for key in ("asset_id", "asset_type", "project_id"):
        if key in event.data:
            event.data[key] = hostile
    connection = Connection(
        vendor,
        "default",
        "https://vendor.example/base",
        {
            "token": "t",
            "account_id": "a",
            "client_id": "c",
            "client_secret": "s",
            "app_key": "k",
            "app_secret": "s",
        },
    )
    client = VENDORS[vendor](connection, HttpClient(DispatchConfig()))
    # When the request is built
    request = client.build([event], "token")
    url = urlsplit(request.url)
    # Then host, path shape, query and fragment are the ones the vendor documents
    assert url.netloc == "vendor.example"
    assert url.query == "" and url.fragment == ""
    assert ".." not in url.path.split("/")
    assert not any(ch in request.url for ch in "\r\n ")
    assert url.path.count("/") == client.build([valid(vendor)], "t").url.count("/") - 2


def test_the_rate_limit_gauge_shows_what_the_vendor_said_remains(fakes: FakeVendors) -> None:
    fakes.webflow.limit_to(TokenBucket(0.001, burst=50))  # hardly refills during the test
    config = make_config(fakes)

    async def one_after_another() -> list[float | None]:
        dispatcher = Dispatcher(config, rand=lambda: 0.5)
        seen = []
        try:
            for _ in range(3):
                outcome = await dispatcher.deliver(valid("webflow"))
                assert outcome.delivered, outcome
                seen.append(
                    REGISTRY.get_sample_value(
                        "asset_sync_vendor_rate_limit_remaining", {"vendor": "webflow"}
                    )
                )
        finally:
            await dispatcher.close()
        return seen

    assert asyncio.run(one_after_another()) == [49, 48, 47]
