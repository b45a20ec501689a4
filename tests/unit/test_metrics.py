"""What the metrics say about themselves matches the label values the code emits."""

from __future__ import annotations

import re
from pathlib import Path

from consumer.telemetry import metrics

ROOT = Path(__file__).resolve().parents[2]


def test_request_code_help_names_the_transport_codes_the_client_emits() -> None:
    """The help once said 'connection_error' while the label value was 'connection'."""
    http = (ROOT / "consumer/delivery/http.py").read_text()
    emitted = set(re.findall(r'retry_reason="(\w+)"', http))
    assert emitted == {"timeout", "connection"}
    quoted = set(re.findall(r"'(\w+)'", metrics.VENDOR_REQUESTS._documentation))
    assert quoted == emitted
