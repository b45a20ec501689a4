"""From a Kafka record to a validated event, in either CloudEvents Kafka binding mode.

``parse_record`` never raises for bad input: it returns an ``Event`` or a ``Rejection`` whose
kind maps onto a ``dlq.reason``. Anything an upstream producer can put in a record (invalid
UTF-8, NaN, 10k-deep nesting, huge numbers, odd headers) ends up as a ``Rejection``.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from jsonschema import ValidationError
from jsonschema.exceptions import best_match

from consumer import json_codec
from consumer.reasons import Reason
from consumer.schemas import SchemaSet, default_schemas

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
MAX_ERROR_MESSAGE = 300
MAX_ERRORS = 20

Headers = Sequence[tuple[str, bytes | None]]

# CloudEvents distributed-tracing extension: W3C trace context. A version-00 traceparent is
# exactly 55 characters; a later version may append fields (W3C: read the first four). The
# ids may not be all zeros and version ff is invalid. tracestate travels as printable ASCII.
_TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-[ -~]*)?"
)
_TRACESTATE = re.compile(r"[ -~]{0,512}")
_TRACE_HEADERS = frozenset({"ce_traceparent", "ce_tracestate"})
# Whether parse_record times itself (Event.parsed): only while tracing is on, so that an
# event costs no clock reading otherwise (consumer/telemetry/tracing.py switches it on).
_timed = False


def time_parsing(on: bool = True) -> None:
    global _timed  # noqa: PLW0603 - one switch for the whole process, as tracing is
    _timed = on


class ErrorKind(StrEnum):
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    INVALID_HEADER = "invalid_header"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_VENDOR = "unknown_vendor"
    SCHEMA = "schema"

    @property
    def reason(self) -> Reason:
        if self in (ErrorKind.INVALID_UTF8, ErrorKind.INVALID_JSON):
            return Reason.INVALID_JSON
        if self is ErrorKind.UNKNOWN_VENDOR:
            return Reason.UNKNOWN_VENDOR
        return Reason.INVALID_EVENT


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem, located by its JSON pointer into the (structured) event."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer}: {self.message}" if self.pointer else self.message


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record is not a valid event, with what its envelope did say (for logs, the
    dead-letter headers and metric labels): the id, and the vendor when it is a known one."""

    kind: ErrorKind
    errors: tuple[FieldError, ...]
    event_id: str | None = None
    vendor: str | None = None
    traceparent: str | None = None  # kept in the dead-letter record's headers
    tracestate: str | None = None

    @property
    def reason(self) -> Reason:
        return self.kind.reason

    def message(self, limit: int = 4096) -> str:
        """One line for ``dlq.error`` and logs, at most ``limit`` bytes of UTF-8."""
        text = "; ".join(str(e) for e in self.errors).replace("\n", " ")
        encoded = text.encode("utf-8")
        if len(encoded) <= limit:
            return text
        return encoded[: limit - 3].decode("utf-8", errors="ignore") + "..."


@dataclass(slots=True)  # not frozen: see consumer/outcome.py
class Event:
    """A valid asset-change event. ``data`` has passed its vendor's schema."""

    id: str
    source: str
    vendor: str
    connection: str
    data: dict[str, Any]
    time: str | None = None
    # CloudEvents ``sequence`` extension (``ce_sequence`` in binary mode); an integer in a
    # structured event is kept as its decimal string. With ``time``, it orders an asset's
    # updates (consumer/state/freshness.py).
    sequence: str | None = None
    # CloudEvents distributed-tracing extension (``ce_traceparent`` in binary mode), passed on
    # to the vendor as W3C trace-context headers; a malformed one is ignored (None).
    traceparent: str | None = None
    tracestate: str | None = None
    # When parse_record began and ended (time.time_ns()): the span ``validate`` when tracing
    # is on (consumer/telemetry/tracing.py); None when it is off, or validated some other way.
    parsed: tuple[int, int] | None = field(default=None, compare=False, repr=False)

    @property
    def asset_id(self) -> str:
        return str(self.data["asset_id"])

    @property
    def asset_key(self) -> tuple[str, str, str]:
        """Updates with the same key are delivered in offset order."""
        return (self.vendor, self.connection, self.asset_id)


def _reject(kind: ErrorKind, pointer: str, message: str) -> Rejection:
    return Rejection(kind, (FieldError(pointer, message),))


def _loads(value: bytes) -> Any | Rejection:
    try:
        return json_codec.loads(value)
    except UnicodeDecodeError as exc:
        return _reject(ErrorKind.INVALID_UTF8, "", f"not UTF-8 (byte {exc.start})")
    except RecursionError:
        return _reject(ErrorKind.INVALID_JSON, "", "JSON nested too deeply")
    except ValueError as exc:  # JSONDecodeError, NaN, integers beyond the digit limit
        return _reject(ErrorKind.INVALID_JSON, "", f"not valid JSON: {_clip(str(exc))}")


def _header_map(headers: Headers | None) -> dict[str, bytes | None]:
    if not headers:  # most records carry none
        return {}
    return {str(k).lower(): v for k, v in headers}


def _binary_envelope(headers: dict[str, bytes | None]) -> dict[str, Any] | Rejection:
    """Binary mode: attributes from ``ce_*`` headers (``content-type`` is datacontenttype)."""
    envelope: dict[str, Any] = {}
    for name, raw in headers.items():
        attr = (
            "datacontenttype"
            if name == "content-type"
            else name[3:]
            if name.startswith("ce_")
            else None
        )
        if attr is None:
            continue
        if name in _TRACE_HEADERS and not _is_text(raw):
            continue  # a malformed trace context is ignored, never a reason to refuse
        if not isinstance(raw, bytes):
            return _reject(ErrorKind.INVALID_HEADER, f"/{attr}", f"header {name} has no value")
        try:
            envelope[attr] = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _reject(ErrorKind.INVALID_HEADER, f"/{attr}", f"header {name} is not UTF-8")
    return envelope


def _is_text(raw: bytes | None) -> bool:
    try:
        return raw is not None and bool(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return False


def trace_context(document: dict[str, Any]) -> tuple[str | None, str | None]:
    """The event's ``traceparent`` and ``tracestate``, or None for what is absent or
    malformed: W3C drops a tracestate whose traceparent is invalid."""
    parent = document.get("traceparent")
    if not isinstance(parent, str) or _TRACEPARENT.fullmatch(parent) is None:
        return None, None
    if parent.startswith("00") and len(parent) != 55:
        return None, None
    state = document.get("tracestate")
    if not isinstance(state, str) or not state or _TRACESTATE.fullmatch(state) is None:
        state = None
    return parent, state


def parse_record(
    value: bytes | None, headers: Headers | None = None, schemas: SchemaSet | None = None
) -> Event | Rejection:
    """Turn a record's value and headers into an ``Event`` or a ``Rejection``."""
    started = time.time_ns() if _timed else 0
    schemas = schemas or default_schemas()
    header_map = _header_map(headers)
    if value is None:
        return _reject(ErrorKind.INVALID_JSON, "", "the record has no value")
    body = _loads(value)
    if isinstance(body, Rejection):
        return body
    if "ce_specversion" in header_map:
        envelope = _binary_envelope(header_map)
        if isinstance(envelope, Rejection):
            return envelope
        envelope["data"] = body
        document: Any = envelope
    else:
        content_type = header_map.get("content-type")
        if content_type is not None and not content_type.lower().startswith(
            STRUCTURED_CONTENT_TYPE.encode()
        ):
            return _reject(
                ErrorKind.UNSUPPORTED_CONTENT_TYPE,
                "",
                f"content-type {_clip(repr(content_type))} without ce_specversion "
                f"header: neither structured nor binary CloudEvents mode",
            )
        document = body
    result = validate_document(document, schemas)
    if _timed and isinstance(result, Event):
        result.parsed = (started, time.time_ns())
    return result


def validate_document(document: Any, schemas: SchemaSet | None = None) -> Event | Rejection:
    """Validate a structured-mode event already decoded from JSON."""
    schemas = schemas or default_schemas()
    decoded = _decode_data_base64(document)
    result = decoded if isinstance(decoded, Rejection) else _validate(decoded, schemas)
    if isinstance(result, Rejection) and isinstance(document, dict):
        event_id, vendor = document.get("id"), document.get("vendor")
        traceparent, tracestate = trace_context(document)
        return replace(
            result,
            event_id=event_id if isinstance(event_id, str) else None,
            vendor=vendor if vendor in schemas.vendors else None,
            traceparent=traceparent,
            tracestate=tracestate,
        )
    return result


def _decode_data_base64(document: Any) -> Any:
    """CloudEvents JSON format: binary data travels as ``data_base64``, and a receiver must
    decode it (the official SDKs send bytes this way). Ours is JSON, validated as ``data``."""
    if not isinstance(document, dict) or "data_base64" not in document:
        return document
    encoded = document["data_base64"]
    if "data" in document:
        return _reject(
            ErrorKind.SCHEMA, "/data_base64", "an event has data or data_base64, not both"
        )
    if not isinstance(encoded, str):
        return _reject(ErrorKind.SCHEMA, "/data_base64", "must be a base64 string")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return _reject(ErrorKind.SCHEMA, "/data_base64", "is not valid base64")
    data = _loads(raw)
    if isinstance(data, Rejection):
        pointer = FieldError("/data_base64", f"decoded: {data.message(MAX_ERROR_MESSAGE)}")
        return Rejection(data.kind, (pointer,))
    decoded = {k: v for k, v in document.items() if k != "data_base64"}
    decoded["data"] = data
    return decoded


def _validate(document: Any, schemas: SchemaSet) -> Event | Rejection:
    if not isinstance(document, dict):
        return _reject(
            ErrorKind.NOT_AN_OBJECT, "", f"an event is a JSON object, not {type(document).__name__}"
        )
    kind = document.get("type")
    if isinstance(kind, str) and kind != schemas.event_type:
        return _reject(
            ErrorKind.UNKNOWN_TYPE,
            "/type",
            f"unknown event type {_clip(repr(kind))}, expected {schemas.event_type!r}",
        )
    vendor = document.get("vendor")
    if isinstance(vendor, str) and vendor not in schemas.vendors:
        return _reject(
            ErrorKind.UNKNOWN_VENDOR,
            "/vendor",
            f"unknown vendor {_clip(repr(vendor))}, one of {', '.join(schemas.vendors)}",
        )
    try:
        valid = schemas.fast.is_valid(document)
    except (ValueError, RecursionError) as exc:  # jsonschema_rs refuses what it cannot convert
        return _reject(ErrorKind.SCHEMA, "", f"cannot be validated: {_clip(str(exc))}")
    if not valid:
        return Rejection(ErrorKind.SCHEMA, _field_errors(document, schemas))
    traceparent, tracestate = trace_context(document) if "traceparent" in document else (None, None)
    return Event(
        id=document["id"],
        source=document["source"],
        vendor=document["vendor"],
        connection=document.get("connection", "default"),
        data=document["data"],
        time=document.get("time"),
        sequence=None if (sequence := document.get("sequence")) is None else str(sequence),
        traceparent=traceparent,
        tracestate=tracestate,
    )


def _field_errors(document: dict[str, Any], schemas: SchemaSet) -> tuple[FieldError, ...]:
    """Ask the reference validator why: one error per offending field, with its pointer."""
    errors: dict[str, FieldError] = {}  # one message per field is enough
    try:
        for error in schemas.reference.iter_errors(document):
            for field_error in _explain(error):
                errors.setdefault(field_error.pointer, field_error)
            if len(errors) >= MAX_ERRORS:
                break
    except RecursionError:
        errors.setdefault("", FieldError("", "nested too deeply to explain"))
    if not errors:  # the two validators disagree: keep the fast one's word
        return (FieldError("", "does not match the event schema"),)
    return tuple(sorted(errors.values(), key=lambda e: e.pointer))[:MAX_ERRORS]


def _pointer(path: Iterable[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _explain(error: ValidationError) -> list[FieldError]:
    pointer = _pointer(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        return [
            FieldError(f"{pointer}/{_pointer([k])[1:]}", "is not accepted by this vendor")
            for k in error.instance
            if k not in known
        ]
    if error.validator == "not" and error.validator_value == {}:  # common.json#/$defs/read_only
        return [FieldError(pointer, "is read-only: the vendor sets it, an event may not")]
    if error.validator in ("anyOf", "oneOf") and error.context:
        # "x is not valid under any of the given schemas" says nothing; for a nullable field
        # the interesting branch is the non-null one.
        branches = [e for e in error.context if e.validator_value != "null"] or error.context
        return [FieldError(pointer, _clip(best_match(branches).message))]
    return [FieldError(pointer, _clip(error.message))]


def _clip(text: str, limit: int = MAX_ERROR_MESSAGE) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
