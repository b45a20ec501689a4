"""Events as the official CloudEvents Python SDK puts them on Kafka, in both binding modes.

The SDK sends bytes data as ``data_base64`` in structured mode, which receivers must decode
(CloudEvents JSON format, section 3.1); a dict travels as ``data``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cloudevents.core.bindings import kafka
from cloudevents.core.v1.event import CloudEvent

from consumer.events import ErrorKind, Event, Rejection, parse_record
from consumer.schemas import default_schemas
from tests.samples import event_for

VENDORS = default_schemas().vendors


def sdk_event(vendor: str, *, as_bytes: bool) -> tuple[CloudEvent, dict[str, Any]]:
    sample = event_for(vendor)
    attributes = {k: v for k, v in sample.items() if k not in ("data", "time")}
    data = sample["data"]
    payload: Any = json.dumps(data).encode() if as_bytes else data
    if not as_bytes:
        attributes["datacontenttype"] = "application/json"
    return CloudEvent(attributes, payload), data


def parsed(message: kafka.KafkaMessage) -> Event | Rejection:
    headers = [(k, v if isinstance(v, bytes) else v.encode()) for k, v in message.headers.items()]
    return parse_record(message.value, headers)


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "dict"])
@pytest.mark.parametrize("mode", [kafka.to_structured_event, kafka.to_binary_event])
def test_official_sdk_events_are_read_in_both_modes(vendor: str, as_bytes: bool, mode: Any) -> None:
    event, data = sdk_event(vendor, as_bytes=as_bytes)
    result = parsed(mode(event))
    assert isinstance(result, Event), result
    assert (result.id, result.vendor, result.data) == (event.get_id(), vendor, data)


def test_structured_bytes_are_sent_as_data_base64() -> None:
    """The case the SDK produces and the service once dead-lettered."""
    event, _ = sdk_event("webflow", as_bytes=True)
    document = json.loads(kafka.to_structured_event(event).value)
    assert "data_base64" in document
    assert "data" not in document


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"data_base64": "not base64!"}, "is not valid base64"),
        ({"data_base64": 12}, "must be a base64 string"),
        ({"data_base64": "bm90IGpzb24="}, "decoded: not valid JSON"),
        ({"data_base64": "e30=", "data": {}}, "data or data_base64, not both"),
    ],
)
def test_bad_data_base64_is_a_clear_rejection(patch: dict[str, Any], message: str) -> None:
    document = {k: v for k, v in event_for("lexful").items() if k != "data"} | patch
    result = parse_record(json.dumps(document).encode())
    assert isinstance(result, Rejection)
    assert result.errors[0].pointer == "/data_base64"
    assert message in result.message()


def test_decoded_data_is_validated_against_the_vendor_schema() -> None:
    event, _ = sdk_event("trelica", as_bytes=False)
    document = json.loads(kafka.to_structured_event(event).value)
    document["data_base64"] = __import__("base64").b64encode(b'{"asset_id": "x"}').decode()
    del document["data"]
    result = parse_record(json.dumps(document).encode())
    assert isinstance(result, Rejection)
    assert result.kind is ErrorKind.SCHEMA
    assert result.vendor == "trelica"
    assert result.event_id == event.get_id()
