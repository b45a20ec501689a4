"""The fast validator (hot path) and jsonschema (the reference) agree on every document.

Both are built from the same files in schemas/, so a disagreement is a bug in one of them or a
format they read differently; this test is what lets the hot path trust the fast one.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consumer.schemas import default_schemas
from tests.samples import event_for, seed_events
from tests.unit.test_events import INVALID

SCHEMAS = default_schemas()
SCHEMA_FILES = sorted((Path(__file__).parents[2] / "schemas").glob("*.json"))


def agree(document: Any) -> None:
    fast = SCHEMAS.fast.is_valid(document)
    reference = SCHEMAS.reference.is_valid(document)
    assert fast == reference, f"fast={fast} reference={reference}: {document!r}"


@pytest.mark.parametrize("document", seed_events() + [e for _, e, _ in INVALID])
def test_validators_agree_on_every_fixture(document: dict[str, Any]) -> None:
    agree(document)


# Values shaped like what the schemas check: near-miss UUIDs, dates, emails, ids, zones.
TRICKY_VALUES = [
    "019983a9-c4c0-73af-aec9-463feeadc2e7",
    "019983a9c4c073afaec9463feeadc2e7",
    "{019983a9-c4c0-73af-aec9-463feeadc2e7}",
    "urn:uuid:019983a9-c4c0-73af-aec9-463feeadc2e7",
    "019983A9-C4C0-73AF-AEC9-463FEEADC2E7",
    "2026-11-23T10:00:00Z",
    "2026-11-23t10:00:00z",
    "2026-11-23T10:00:00.123456+05:30",
    "2026-11-23 10:00:00Z",
    "2026-02-30T10:00:00Z",
    "2026-11-23T24:00:00Z",
    "2016-12-31T23:59:60Z",
    "2026-11-23",
    "a@b.co",
    "a@b",
    "@b.co",
    "a b@c.d",
    "580e63fc8c9a982ac9b8b745",
    "580E63FC8C9A982AC9B8B745",
    "b.",
    "..",
    "a..b",
    "+08:00",
    "+8:00",
    "Asia/Shanghai",
    "UTC",
    "Europe/Isle_of_Man",
    "mailto:x",
    "x y",
    "",
    " ",
    "\u00e9",
    "http://example.com/a",
    "//x",
    "1e3",
    "AH-1000",
    "42",
]
TRICKY = st.sampled_from(TRICKY_VALUES)
VALUE = (
    TRICKY
    | st.none()
    | st.booleans()
    | st.integers(-10, 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.lists(TRICKY, max_size=3)
)
FIELDS = {
    "lexful": ["asset_id", "asset_type", "changes.visibility", "changes.owned_by", "changes.id"],
    "webflow": [
        "asset_id",
        "changes.displayName",
        "changes.altText",
        "changes.localeId",
        "changes.other",
    ],
    "autodesk": [
        "project_id",
        "asset_id",
        "changes.statusId",
        "changes.categoryId",
        "changes.locationId",
        "changes.customAttributes.ca1",
        "changes.barcode",
    ],
    "trelica": [
        "asset_id",
        "changes.purchaseDate",
        "changes.assignedToEmail",
        "changes.platform",
        "changes.netPrice",
        "changes.netPriceCurrency",
        "changes.customFields.k",
        "changes.statusType",
    ],
    "enos": [
        "org_id",
        "asset_id",
        "mode",
        "changes.timezone",
        "changes.tags.k",
        "changes.name.defaultValue",
        "changes.name.i18nValue.en_US",
    ],
}
ENVELOPE = ["id", "source", "time", "connection", "subject", "dataschema", "specversion"]


def put(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = document
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


PAIRS = [(vendor, path) for vendor, paths in FIELDS.items() for path in paths] + [
    ("webflow", f"@{name}") for name in ENVELOPE
]


@pytest.mark.parametrize(("vendor", "path"), PAIRS)
def test_validators_agree_on_every_tricky_value_in_every_checked_field(
    vendor: str, path: str
) -> None:
    for value in TRICKY_VALUES:
        document = copy.deepcopy(event_for(vendor))
        if path.startswith("@"):
            document[path[1:]] = value
        else:
            put(document["data"], path, value)
        agree(document)


@settings(max_examples=1500, deadline=None)
@given(vendor=st.sampled_from(sorted(FIELDS)), data=st.data())
@example(vendor="trelica", data=None)
def test_validators_agree_on_generated_documents(vendor: str, data: Any) -> None:
    document = copy.deepcopy(event_for(vendor))
    if data is not None:
        for _ in range(data.draw(st.integers(1, 3))):
            if data.draw(st.booleans()):
                put(document["data"], data.draw(st.sampled_from(FIELDS[vendor])), data.draw(VALUE))
            else:
                put(document, data.draw(st.sampled_from(ENVELOPE)), data.draw(VALUE))
    agree(document)


def test_every_format_the_schemas_use_is_checked_by_the_reference() -> None:
    """jsonschema skips a format it has no checker for (a missing optional package): the
    reference would then accept what the fast validator refuses. pyproject.toml names the
    packages of the formats used, not jsonschema's whole format extra."""
    used = set(re.findall(r'"format":\s*"([^"]+)"', "".join(p.read_text() for p in SCHEMA_FILES)))
    assert used, "no format found: the search is wrong"
    checker = SCHEMAS.reference.format_checker
    assert checker is not None
    checked = set(checker.checkers)
    assert used <= checked, f"formats without a checker: {sorted(used - checked)}"
