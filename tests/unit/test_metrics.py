"""What the metrics say about themselves matches the label values the code emits."""

from __future__ import annotations

import re
from pathlib import Path

from consumer import metrics

ROOT = Path(__file__).resolve().parents[2]


def test_request_code_help_names_the_transport_codes_the_client_emits() -> None:
    """The help once said 'connection_error' while the label value was 'connection'."""
    emitted = set(re.findall(r'retry_reason="(\w+)"', (ROOT / "consumer/http.py").read_text()))
    assert emitted == {"timeout", "connection"}
    quoted = set(re.findall(r"'(\w+)'", metrics.VENDOR_REQUESTS._documentation))
    assert quoted == emitted
