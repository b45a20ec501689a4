"""Counting what arrived where: by the marker each sample update carries."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from consumer.local.samples import event
from tests.fakes import FakeVendors
from tests.samples import received_markers

VENDORS = ["lexful", "webflow", "autodesk", "trelica", "enos"]
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def updates(count: int, assets: int = 400) -> tuple[list[Record], set[tuple[str, str]]]:
    """``count`` valid updates spread over the vendors and ``assets`` assets each, keyed as
    recommended; and the (vendor, marker) pairs a vendor must receive for them."""
    records: list[Record] = []
    expected = set()
    for n in range(count):
        vendor = VENDORS[n % len(VENDORS)]
        ev = event(vendor, n, assets=assets)
        records.append((f"{vendor}:{ev['data']['asset_id']}".encode(), json.dumps(ev).encode(), []))
        expected.add((vendor, f"update {n}"))
    return records, expected


def delivered(vendors: FakeVendors) -> Counter[tuple[str, str]]:
    """How often each (vendor, marker) reached its vendor with a success answer."""
    counts: Counter[tuple[str, str]] = Counter()
    for vendor in VENDORS:
        for request in vendors.fakes[vendor].succeeded():
            for marker in received_markers(request.body, vendor):
                counts[(vendor, marker)] += 1
    return counts


def dlq_reasons(records: list[Any]) -> Counter[str]:
    return Counter(dict(r.headers).get("dlq.reason", b"?").decode() for r in records)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
