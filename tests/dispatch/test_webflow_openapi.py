"""The Webflow client's requests match Webflow's own OpenAPI operation ``patch-asset``.

``webflow_patch_asset.openapi.yaml`` pins the operation as Webflow's public spec states it
(since April 2026: ``localeId`` a query parameter, body ``displayName``/``altText``). Each
built request is checked against it: method, path template, query parameters (names,
required, schema) and the JSON body against the request-body schema. The older seed-page
shape (``localeId`` in the body) fails here; against the real API it would likely be
answered 200 and update the primary locale instead.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema
import pytest
import yaml
from yarl import URL

from consumer.config import Connection, DispatchConfig
from consumer.delivery.http import HttpClient, HttpRequest, json_body
from consumer.events import Event
from consumer.vendors.webflow import WebflowClient
from tests.dispatch.conftest import deliver, make_config, valid
from tests.fakes import FakeVendors

SPEC = yaml.safe_load(
    (Path(__file__).with_name("webflow_patch_asset.openapi.yaml")).read_text(encoding="utf-8")
)
[(TEMPLATE, OPERATIONS)] = SPEC["paths"].items()
[(METHOD, OPERATION)] = OPERATIONS.items()
SERVER_PATH = urlsplit(SPEC["servers"][0]["url"]).path  # "/v2"
PARAMETERS = {(p["in"], p["name"]): p for p in OPERATION["parameters"]}
BODY = OPERATION["requestBody"]
[(MEDIA_TYPE, MEDIA)] = BODY["content"].items()
BASE = "https://webflow.example/proxy"
OBJECT_ID = re.compile(r"[0-9a-f]{24}")
LOCALE = "65427cf400e02b306eaa04a0"

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("objectid")
def _objectid(value: object) -> bool:
    return not isinstance(value, str) or bool(OBJECT_ID.fullmatch(value))


def as_json_schema(schema: Any) -> Any:
    """OpenAPI schema -> JSON Schema: ``nullable: true`` becomes a ``null`` alternative
    (OpenAPI 3.0 style, which Webflow's 3.1 file still uses in places)."""
    if isinstance(schema, list):
        return [as_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {k: as_json_schema(v) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable") is True:
        kind = converted.get("type")
        if kind is None:
            return {"anyOf": [converted, {"type": "null"}]}
        converted["type"] = [*(kind if isinstance(kind, list) else [kind]), "null"]
    return converted


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The body schema lists every field the operation takes; one it does not list is likely
    dropped without a word (how ``localeId`` in the body went unnoticed), so refuse it."""
    return {"type": "object", "additionalProperties": False, **schema}


def schema_errors(schema: dict[str, Any], value: Any, where: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(as_json_schema(schema), format_checker=FORMATS)
    return [f"{where}: {e.message}" for e in validator.iter_errors(value)]


def path_pattern(template: str) -> re.Pattern[str]:
    """``/assets/{asset_id}`` -> a pattern where each ``{name}`` is exactly one segment."""
    parts = re.split(r"\{(\w+)\}", template)
    literal = [re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/?#]+)" for i, p in enumerate(parts)]
    return re.compile("".join(literal))


def on_the_wire(request: HttpRequest) -> str:
    """The URL as ``HttpClient.send`` puts it on the wire."""
    url = URL(request.url, encoded=True)
    return str(url.with_query(list(request.query)) if request.query else url)


PATH = path_pattern(urlsplit(BASE).path + SERVER_PATH + TEMPLATE)


def contract_errors(request: HttpRequest) -> list[str]:
    """Everything about ``request`` that the pinned operation does not allow."""
    errors: list[str] = []
    if request.method != METHOD.upper():
        errors.append(f"method {request.method}, the operation is {METHOD.upper()}")
    if urlsplit(request.url).query or urlsplit(request.url).fragment:
        errors.append("the URL itself carries a query or fragment")
    url = urlsplit(on_the_wire(request))
    match = PATH.fullmatch(url.path)
    if (url.scheme, url.netloc) != urlsplit(BASE)[:2] or match is None:
        return [*errors, f"{url.geturl()} does not match {BASE}{SERVER_PATH}{TEMPLATE}"]
    for (place, name), parameter in PARAMETERS.items():
        if place == "path":
            errors += schema_errors(parameter["schema"], unquote(match[name]), f"path {name}")
    query = parse_qsl(url.query, keep_blank_values=True, strict_parsing=bool(url.query))
    names = [name for name, _ in query]
    for name, value in query:
        parameter = PARAMETERS.get(("query", name))
        if parameter is None:
            errors.append(f"query {name}: not a parameter of the operation")
            continue
        if names.count(name) > 1:
            errors.append(f"query {name}: given {names.count(name)} times")
        if value == "" and not parameter.get("allowEmptyValue", False):
            errors.append(f"query {name}: empty")
        errors += schema_errors(parameter["schema"], value, f"query {name}")
    for (place, name), parameter in PARAMETERS.items():
        if place == "query" and parameter.get("required") and name not in names:
            errors.append(f"query {name}: required, missing")
    if request.headers.get("Content-Type") != MEDIA_TYPE:
        errors.append(f"Content-Type {request.headers.get('Content-Type')!r}, not {MEDIA_TYPE}")
    if not request.body:
        return [*errors, "no body"] if BODY.get("required") else errors
    return errors + schema_errors(closed(MEDIA["schema"]), json.loads(request.body), "body")


def client() -> WebflowClient:
    connection = Connection("webflow", "default", BASE, {"token": "t"})
    return WebflowClient(connection, HttpClient(DispatchConfig()))


def unchecked(**data: Any) -> Event:
    """An event that skipped the schema (defence in depth), with these ``data`` overrides."""
    event = valid("webflow")
    event.data.update(data)
    return event


EVENTS = {
    "displayName only": valid("webflow"),
    "altText only": valid("webflow", changes={"altText": "A golden retriever"}),
    "altText cleared": valid("webflow", changes={"altText": ""}),
    "localized altText": valid("webflow", changes={"altText": "Un chien", "localeId": LOCALE}),
    "every field": valid(
        "webflow", changes={"displayName": "dog.png", "altText": "A dog", "localeId": LOCALE}
    ),
    "odd text": valid("webflow", changes={"displayName": 'naïve "x" &?#/%.png', "altText": "\n"}),
    "asset id all zeros": valid("webflow", asset_id="0" * 24),
    "asset id all f": valid(
        "webflow", asset_id="f" * 24, changes={"localeId": "f" * 24, "altText": "x"}
    ),
}


@pytest.mark.parametrize("event", EVENTS.values(), ids=EVENTS.keys())
def test_built_request_matches_the_operation(event: Event) -> None:
    request = client().build([event], "t")

    assert contract_errors(request) == []
    # And it says what the event meant: this asset, this locale, these changes
    url = urlsplit(on_the_wire(request))
    match = PATH.fullmatch(url.path)
    assert match is not None and unquote(match["asset_id"]) == event.data["asset_id"]
    changes = dict(event.data["changes"])
    locale = changes.pop("localeId", None)
    assert parse_qsl(url.query) == ([("localeId", locale)] if locale else [])
    assert json.loads(request.body) == changes


def test_the_older_shape_breaks_the_contract() -> None:
    # The request the client sent before April 2026's spec: localeId in the body, no query
    old = HttpRequest(
        "PATCH",
        f"{BASE}/v2/assets/580e63fc8c9a982ac9b8b745",
        {"Authorization": "Bearer t", "Content-Type": "application/json"},
        json_body({"displayName": "dog.png", "localeId": LOCALE}),
    )
    assert contract_errors(old) == [
        "body: Additional properties are not allowed ('localeId' was unexpected)"
    ]
    assert contract_errors(HttpRequest("PATCH", f"{BASE}/v2/assets/a/b", old.headers, b"{}"))
    assert contract_errors(
        HttpRequest("PATCH", old.url, old.headers, b"{}", (("locale", LOCALE),))
    ) == ["query locale: not a parameter of the operation"]


def test_nullable_becomes_a_null_alternative() -> None:
    nullable = {"type": "string", "nullable": True, "properties": {"a": {"nullable": True}}}
    assert as_json_schema(nullable) == {
        "type": ["string", "null"],
        "properties": {"a": {"anyOf": [{}, {"type": "null"}]}},
    }


@pytest.mark.parametrize("locale", ["a&b=c#d", "x y/?é", "%2e"])
def test_hostile_values_stay_in_their_place(locale: str) -> None:
    # Given an event that skipped the schema, with a hostile asset id and locale id
    event = unchecked(asset_id="../x?y=1#z", changes={"altText": "a", "localeId": locale})

    url = urlsplit(on_the_wire(client().build([event], "t")))

    # Then the asset id is one path segment and the locale one query value, both intact
    match = PATH.fullmatch(url.path)
    assert match is not None and unquote(match["asset_id"]) == "../x?y=1#z"
    assert parse_qsl(url.query, strict_parsing=True) == [("localeId", locale)]
    assert url.fragment == ""


def test_localized_update_reaches_the_fake_as_a_query_parameter(fakes: FakeVendors) -> None:
    event = valid("webflow", changes={"altText": "Un chien", "localeId": LOCALE})

    [outcome] = deliver(make_config(fakes), event)

    assert outcome.delivered, outcome
    [request] = fakes.webflow.updates()
    assert request.query == {"localeId": LOCALE}
    assert request.body == {"altText": "Un chien"}


ASSET = "/v2/assets/580e63fc8c9a982ac9b8b745"
REFUSED = {
    "localeId in the body": ("", {"displayName": "x", "localeId": LOCALE}),
    "field not in the spec": ("", {"fileName": "x"}),
    "unknown query parameter": (f"?locale={LOCALE}", {"altText": "x"}),
    "localeId not an object id": ("?localeId=fr-FR", {"altText": "x"}),
    "localeId twice": (f"?localeId={LOCALE}&localeId={LOCALE}", {"altText": "x"}),
}


def patch(fakes: FakeVendors, query: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        fakes.base_url("webflow") + ASSET + query,
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={
            "Authorization": f"Bearer {fakes.secrets['webflow_token']}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize(("query", "body"), REFUSED.values(), ids=REFUSED.keys())
def test_fake_refuses_what_the_operation_does_not_take(
    vendors: FakeVendors, query: str, body: dict[str, Any]
) -> None:
    assert patch(vendors, query, body) == 400
    assert len(vendors.webflow.violations) == 1


def test_fake_accepts_and_records_the_current_shape(vendors: FakeVendors) -> None:
    assert patch(vendors, f"?localeId={LOCALE}", {"displayName": "x", "altText": "y"}) == 200
    assert vendors.webflow.violations == []
    [request] = vendors.webflow.updates()
    assert request.query == {"localeId": LOCALE}
