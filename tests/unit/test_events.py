"""Event parsing and validation: every schema rule, both CloudEvents modes, hostile input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.events import ErrorKind, Event, Rejection, parse_record
from consumer.reasons import Reason
from tests.samples import encode, event_for, seed_events

VENDORS = ["lexful", "webflow", "autodesk", "trelica", "enos"]


@pytest.mark.parametrize("event", seed_events(), ids=lambda e: e["vendor"])
def test_seed_examples_are_valid(event: dict[str, Any]) -> None:
    result = parse_record(encode(event))
    assert isinstance(result, Event), result
    assert result.vendor == event["vendor"]
    assert result.connection == "default"
    assert result.data == event["data"]


def rejected(event: Any) -> Rejection:
    result = parse_record(encode(event))
    assert isinstance(result, Rejection), f"accepted: {event}"
    return result


def pointers(event: Any) -> set[str]:
    return {e.pointer for e in rejected(event).errors}


def with_changes(vendor: str, changes: dict[str, Any], **data: Any) -> dict[str, Any]:
    return event_for(vendor, changes=changes, **data)


# (case, event, pointer expected among the errors)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "lexful visibility enum",
        with_changes("lexful", {"visibility": "public"}),
        "/data/changes/visibility",
    ),
    ("lexful owned_by uuid", with_changes("lexful", {"owned_by": "bob"}), "/data/changes/owned_by"),
    ("lexful asset_id uuid", event_for("lexful", asset_id="12"), "/data/asset_id"),
    ("lexful response-only id", with_changes("lexful", {"id": "x"}), "/data/changes/id"),
    (
        "lexful response-only organization_id",
        with_changes("lexful", {"organization_id": "x"}),
        "/data/changes/organization_id",
    ),
    (
        "lexful response-only created_at",
        with_changes("lexful", {"created_at": "x"}),
        "/data/changes/created_at",
    ),
    ("lexful asset_type with slash", event_for("lexful", asset_type="a/../b"), "/data/asset_type"),
    ("lexful asset_type ..", event_for("lexful", asset_type=".."), "/data/asset_type"),
    ("lexful empty changes", with_changes("lexful", {}), "/data/changes"),
    (
        "webflow asset_id not 24-hex",
        event_for("webflow", asset_id="580e63fc8c9a982ac9b8b74"),
        "/data/asset_id",
    ),
    ("webflow unknown field", with_changes("webflow", {"fileName": "x"}), "/data/changes/fileName"),
    (
        "webflow altText type",
        with_changes("webflow", {"altText": None}),
        "/data/changes/altText",
    ),
    (
        "webflow localeId not an object id",
        with_changes("webflow", {"altText": "x", "localeId": "fr-FR"}),
        "/data/changes/localeId",
    ),
    (
        "webflow localeId alone (an empty update)",
        with_changes("webflow", {"localeId": "65427cf400e02b306eaa04a0"}),
        "/data/changes",
    ),
    (
        "webflow response field",
        with_changes("webflow", {"hostedUrl": "x"}),
        "/data/changes/hostedUrl",
    ),
    (
        "webflow displayName type",
        with_changes("webflow", {"displayName": 3}),
        "/data/changes/displayName",
    ),
    ("autodesk project id", event_for("autodesk", project_id="b.xyz"), "/data/project_id"),
    (
        "autodesk project id with query",
        event_for("autodesk", project_id="0c0b4d5e-1f2a-4b3c-8d9e-0a1b2c3d4e5f?x=1"),
        "/data/project_id",
    ),
    ("autodesk asset id", event_for("autodesk", asset_id="AH-1000"), "/data/asset_id"),
    (
        "autodesk unknown field",
        with_changes("autodesk", {"isActive": True}),
        "/data/changes/isActive",
    ),
    (
        "autodesk statusId uuid",
        with_changes("autodesk", {"statusId": "5"}),
        "/data/changes/statusId",
    ),
    (
        "trelica platform enum",
        with_changes("trelica", {"platform": "BeOS"}),
        "/data/changes/platform",
    ),
    (
        "trelica platform not nullable",
        with_changes("trelica", {"platform": None}),
        "/data/changes/platform",
    ),
    (
        "trelica date-time",
        with_changes("trelica", {"purchaseDate": "last tuesday"}),
        "/data/changes/purchaseDate",
    ),
    (
        "trelica email",
        with_changes("trelica", {"assignedToEmail": "not-an-email"}),
        "/data/changes/assignedToEmail",
    ),
    (
        "trelica read-only statusType",
        with_changes("trelica", {"statusType": "Deployed"}),
        "/data/changes/statusType",
    ),
    (
        "trelica read-only externalId",
        with_changes("trelica", {"externalId": "e"}),
        "/data/changes/externalId",
    ),
    (
        "trelica read-only createdDtm",
        with_changes("trelica", {"createdDtm": None}),
        "/data/changes/createdDtm",
    ),
    ("trelica asset id with hash", event_for("trelica", asset_id="a#b"), "/data/asset_id"),
    ("trelica asset id with control char", event_for("trelica", asset_id="a\nb"), "/data/asset_id"),
    (
        "enos name needs defaultValue",
        with_changes("enos", {"name": {"i18nValue": {}}}),
        "/data/changes/name",
    ),
    ("enos timezone", with_changes("enos", {"timezone": "+8"}), "/data/changes/timezone"),
    (
        "enos tags string to string",
        with_changes("enos", {"tags": {"year": 2000}}),
        "/data/changes/tags/year",
    ),
    (
        "enos replace needs attributes",
        event_for("enos", mode="replace", changes={"description": "d"}),
        "/data/changes",
    ),
    ("enos mode enum", event_for("enos", mode="merge"), "/data/mode"),
    (
        "enos org id with ampersand",
        event_for("enos", org_id="o&isPatchUpdate=false"),
        "/data/org_id",
    ),
    ("envelope time", {**event_for("webflow"), "time": "2026-13-01T00:00:00Z"}, "/time"),
    ("envelope specversion", {**event_for("webflow"), "specversion": "0.3"}, "/specversion"),
    ("envelope connection name", {**event_for("webflow"), "connection": "a b"}, "/connection"),
    ("envelope data missing", {k: v for k, v in event_for("webflow").items() if k != "data"}, ""),
]


@pytest.mark.parametrize(
    ("event", "pointer"), [(e, p) for _, e, p in INVALID], ids=[c for c, _, _ in INVALID]
)
def test_each_rule_is_enforced_with_a_pointer_to_the_field(
    event: dict[str, Any], pointer: str
) -> None:
    result = rejected(event)
    assert result.kind is ErrorKind.SCHEMA
    assert result.reason is Reason.INVALID_EVENT
    assert pointer in {e.pointer for e in result.errors}, result.errors


def test_nullable_fields_accept_null_to_clear() -> None:
    event = with_changes(
        "trelica", {"notes": None, "purchaseDate": None, "assignedToEmail": None, "netPrice": None}
    )
    assert isinstance(parse_record(encode(event)), Event)


def test_enos_replace_with_attributes_and_iana_timezone_is_valid() -> None:
    event = event_for(
        "enos", mode="replace", changes={"attributes": {"power": 5}, "timezone": "Asia/Shanghai"}
    )
    assert isinstance(parse_record(encode(event)), Event)


def test_lexful_unknown_fields_pass_because_they_depend_on_the_asset_type() -> None:
    assert isinstance(parse_record(encode(with_changes("lexful", {"anything": [1]}))), Event)


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        (b"\xff\xfe{", ErrorKind.INVALID_UTF8, Reason.INVALID_JSON),
        (b"{not json", ErrorKind.INVALID_JSON, Reason.INVALID_JSON),
        (b'{"a": NaN}', ErrorKind.INVALID_JSON, Reason.INVALID_JSON),
        (b"1" * 5000, ErrorKind.INVALID_JSON, Reason.INVALID_JSON),
        (b"[" * 100_000 + b"]" * 100_000, ErrorKind.INVALID_JSON, Reason.INVALID_JSON),
        (b"[1, 2]", ErrorKind.NOT_AN_OBJECT, Reason.INVALID_EVENT),
        (
            encode({**event_for("webflow"), "type": "other.type"}),
            ErrorKind.UNKNOWN_TYPE,
            Reason.INVALID_EVENT,
        ),
        (
            encode({**event_for("webflow"), "vendor": "acme"}),
            ErrorKind.UNKNOWN_VENDOR,
            Reason.UNKNOWN_VENDOR,
        ),
    ],
    ids=["utf8", "json", "nan", "huge-int", "deep", "array", "type", "vendor"],
)
def test_malformed_records_are_errors_of_their_own_kind(
    value: bytes, kind: ErrorKind, reason: Reason
) -> None:
    result = parse_record(value)
    assert isinstance(result, Rejection)
    assert result.kind is kind
    assert result.reason is reason


def test_binary_mode_reads_attributes_from_ce_headers() -> None:
    event = event_for("webflow")
    headers = [(f"ce_{k}", str(v).encode()) for k, v in event.items() if k != "data"]
    headers.append(("content-type", b"application/json"))
    result = parse_record(encode(event["data"]), headers)
    assert isinstance(result, Event)
    assert (result.id, result.vendor, result.data) == (event["id"], "webflow", event["data"])


def test_binary_mode_header_without_value_is_rejected() -> None:
    event = event_for("webflow")
    headers: list[tuple[str, bytes | None]] = [
        (f"ce_{k}", str(v).encode()) for k, v in event.items() if k != "data"
    ]
    headers.append(("ce_subject", None))
    result = parse_record(encode(event["data"]), headers)
    assert isinstance(result, Rejection)
    assert result.kind is ErrorKind.INVALID_HEADER


def test_binary_mode_data_is_validated_against_the_vendor_schema() -> None:
    event = event_for("webflow")
    headers = [(f"ce_{k}", str(v).encode()) for k, v in event.items() if k != "data"]
    result = parse_record(encode({"asset_id": "nope", "changes": {}}), headers)
    assert isinstance(result, Rejection)
    assert {"/data/asset_id", "/data/changes"} <= {e.pointer for e in result.errors}


def test_unknown_content_type_without_ce_headers_is_rejected() -> None:
    result = parse_record(encode(event_for("webflow")), [("content-type", b"text/plain")])
    assert isinstance(result, Rejection)
    assert result.kind is ErrorKind.UNSUPPORTED_CONTENT_TYPE


def test_structured_content_type_is_accepted() -> None:
    headers = [("content-type", b"application/cloudevents+json; charset=utf-8")]
    assert isinstance(parse_record(encode(event_for("enos")), headers), Event)


def test_error_message_is_one_line_of_at_most_4_kib() -> None:
    event = with_changes("webflow", {f"f{i}" * 50: "x\ny" for i in range(200)})
    message = rejected(event).message()
    assert "\n" not in message
    assert len(message.encode()) <= 4096


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_are_rejections_never_exceptions(value: bytes) -> None:
    assert isinstance(parse_record(value), Event | Rejection)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    vendor=st.sampled_from(VENDORS),
    junk=JSON,
    where=st.sampled_from(["data", "changes", "asset_id", "id", "time", "connection"]),
)
def test_junk_in_any_field_is_a_rejection_or_event(vendor: str, junk: Any, where: str) -> None:
    event = event_for(vendor)
    if where in ("changes", "asset_id"):
        event["data"][where] = junk
    else:
        event[where] = junk
    result = parse_record(json.dumps(event).encode())
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.errors and all(e.message for e in result.errors)


def test_huge_strings_are_rejected_with_a_short_message() -> None:
    event = with_changes("webflow", {"displayName": "x" * 2_000_000})
    message = rejected(event).message()
    assert len(message) < 1000
