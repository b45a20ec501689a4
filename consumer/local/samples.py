"""Sample events shaped like the vendors' seed examples, for the demo and the benchmarks."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

MISSING_LEXFUL_ASSET = "00000000-0000-4000-8000-000000000404"  # the simulator answers 404

SEEDS: dict[str, dict[str, Any]] = {
    "lexful": {
        "asset_type": "contacts",
        "asset_id": "019983a9-c4c0-73af-aec9-463feeadc2e7",
        "changes": {
            "title": "Chief Technology Officer",
            "important": True,
            "visibility": "restricted",
        },
    },
    "webflow": {
        "asset_id": "580e63fc8c9a982ac9b8b745",
        "changes": {"displayName": "hero-image.png"},
    },
    "autodesk": {
        "project_id": "b.0c0b4d5e-1f2a-4b3c-8d9e-0a1b2c3d4e5f",
        "asset_id": "286c1ef7-70f6-4ebd-8f87-e7f591ec6b1f",
        "changes": {
            "clientAssetId": "AH-1000",
            "categoryId": "42",
            "statusId": "5cd53aeb-6657-4fb3-a077-f700fb29e644",
        },
    },
    "trelica": {
        "asset_id": "646fcb4fb829ba9df2a94471",
        "changes": {
            "status": "Deployed",
            "assignedToEmail": "john.doe@example.com",
            "locationName": "London, UK",
            "notes": None,
        },
    },
    "enos": {
        "org_id": "yourOrgId",
        "asset_id": "Instance_cshan_001",
        "changes": {
            "name": {"defaultValue": "daniu", "i18nValue": {"en_US": "English"}},
            "timezone": "+08:00",
            "tags": {"year": "2000"},
        },
    },
}


def envelope(vendor: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "cmdb://demo",
        "type": "assetsync.asset.update",
        "vendor": vendor,
        "data": data,
    }


def asset_id(vendor: str, n: int) -> str:
    """The n-th distinct asset id of the vendor's id format."""
    if vendor == "webflow":
        return f"{n:024x}"
    if vendor in ("lexful", "autodesk"):
        return str(uuid.UUID(int=n + 1, version=4))
    return f"asset-{n}"


def event(vendor: str, n: int, assets: int = 50, projects: int = 5) -> dict[str, Any]:
    """The n-th sample update of the vendor: ``assets`` distinct assets, in turn."""
    data = copy.deepcopy(SEEDS[vendor])
    data["asset_id"] = asset_id(vendor, n % assets)
    if vendor == "autodesk":
        data["project_id"] = str(uuid.UUID(int=1000 + n % projects, version=4))
    marker = f"update {n}"
    field = {
        "lexful": "title",
        "webflow": "displayName",
        "autodesk": "clientAssetId",
        "trelica": "notes",
        "enos": "description",
    }[vendor]
    data["changes"][field] = marker
    return envelope(vendor, data)


def sample_events(per_vendor: int) -> list[bytes]:
    """``per_vendor`` updates for each vendor, interleaved, plus one Lexful update of an
    asset the simulator does not know (it ends as a dead-letter)."""
    events = [json.dumps(event(v, n)).encode() for n in range(per_vendor) for v in SEEDS]
    missing = event("lexful", 0)
    missing["data"]["asset_id"] = MISSING_LEXFUL_ASSET
    return [*events, json.dumps(missing).encode()]


def invalid_records() -> list[tuple[bytes, bytes]]:
    """Records that must be dead-lettered by validation, one per kind."""
    wrong_enum = event("trelica", 0)
    wrong_enum["data"]["changes"]["platform"] = "BeOS"
    unknown = event("webflow", 0)
    unknown["vendor"] = "acme"
    return [
        (b"demo:bad-json", b"{not json"),
        (b"demo:bad-enum", json.dumps(wrong_enum).encode()),
        (b"demo:unknown-vendor", json.dumps(unknown).encode()),
    ]
