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
