"""Loads ``schemas/`` (the only definition of a valid event) and builds its validators once.

Two validators are built from the same files: ``jsonschema_rs`` answers "valid or not" on the
hot path in about a microsecond; ``jsonschema`` (the reference implementation) is asked only
for an invalid event, to produce the detailed errors with their JSON pointers. A differential
test keeps the two in agreement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ENVELOPE_ID = "https://schemas.asset-sync.dev/v1/envelope.json"


def schemas_dir() -> Path:
    """``schemas/`` in the source tree, or the copy an installed wheel carries."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_schemas", here.parent / "schemas"):
        if (candidate / "envelope.json").is_file():
            return candidate
    raise FileNotFoundError("schemas/envelope.json not found")


@dataclass(frozen=True)
class SchemaSet:
    """The loaded schema documents and the two validators built from them."""

    documents: dict[str, dict[str, Any]]
    fast: Any  # jsonschema_rs validator: is_valid() on the hot path
    reference: jsonschema.Draft202012Validator

    @cached_property  # asked for every event
    def vendors(self) -> tuple[str, ...]:
        """The vendors the envelope knows, read from its ``vendor`` enum."""
        return tuple(self.documents[ENVELOPE_ID]["properties"]["vendor"]["enum"])

    @cached_property
    def event_type(self) -> str:
        return str(self.documents[ENVELOPE_ID]["properties"]["type"]["const"])


def load_schemas(directory: Path | None = None) -> SchemaSet:
    """Read every ``*.json`` in the directory, check each schema, and link them by ``$id``."""
    directory = directory or schemas_dir()
    documents: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(document)
        documents[document["$id"]] = document
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(doc, default_specification=DRAFT202012))
        for uri, doc in documents.items()
    )
    envelope = documents[ENVELOPE_ID]
    reference = jsonschema.Draft202012Validator(
        envelope, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    fast = jsonschema_rs.validator_for(
        envelope,
        registry=jsonschema_rs.Registry(list(documents.items())),
        validate_formats=True,
        offline=True,
    )
    return SchemaSet(documents=documents, fast=fast, reference=reference)


@cache
def default_schemas() -> SchemaSet:
    """The process-wide schema set, built on first use."""
    return load_schemas()
