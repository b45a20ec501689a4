"""Seed-shaped valid events, one or more per vendor, shared by the tests."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "events.jsonl"


def seed_events() -> list[dict[str, Any]]:
    """The README/seed examples, one per vendor (examples/events.jsonl)."""
    return [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]


def event_for(vendor: str, **data_overrides: Any) -> dict[str, Any]:
    """A fresh copy of the seed event of ``vendor`` with a new id and ``data`` overrides."""
    event = copy.deepcopy(next(e for e in seed_events() if e["vendor"] == vendor))
    event["id"] = str(uuid.uuid4())
    event["data"].update(data_overrides)
    return event


def encode(event: Any) -> bytes:
    return json.dumps(event).encode()


MARK_FIELD = {
    "lexful": "title",
    "webflow": "displayName",
    "autodesk": "clientAssetId",
    "trelica": "notes",
    "enos": "description",
}


def marked(vendor: str, marker: str, **data_overrides: Any) -> dict[str, Any]:
    """An event whose ``changes`` carry ``marker``, so each delivery can be told apart."""
    event = event_for(vendor, **data_overrides)
    event["data"]["changes"] = {MARK_FIELD[vendor]: marker}
    return event


def received_markers(body: Any, vendor: str) -> list[str]:
    """The markers in one request body the fake received (Autodesk batches carry many)."""
    field = MARK_FIELD[vendor]
    if vendor == "autodesk":
        return [changes[field] for changes in body.values() if field in changes]
    if vendor == "enos":
        return [body["asset"][field]] if field in body.get("asset", {}) else []
    return [body[field]] if field in body else []
