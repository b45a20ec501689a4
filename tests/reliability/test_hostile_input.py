"""Hostile input: 10k junk records mixed with good events. Junk is dead-lettered with a
reason, good events are delivered, memory stays flat, nothing crashes."""

from __future__ import annotations

import random
import time

from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, produce
from tests.reliability.helpers import Record, delivered, dlq_reasons, rss_mb, updates
from tests.samples import encode, event_for
from tests.service_helpers import wait_until

JUNK = 10_000
GOOD = 1_000


def junk_records(rng: random.Random) -> list[Record]:
    """Ten kinds of junk, in turn."""
    good = event_for("webflow")
    kinds = [
        lambda i: (None, rng.randbytes(rng.randint(0, 300)), []),
        lambda i: (b"utf8", b'{"id": "\xff\xfe' + str(i).encode() + b'"}', []),
        lambda i: (b"deep", b"[" * 10_000 + b"]" * 10_000, []),
        lambda i: (b"huge-number", b'{"specversion": "1.0", "id": 1' + b"9" * 5000 + b"}", []),
        lambda i: (b"nan", b'{"id": NaN}', []),
        lambda i: (
            b"header-empty",
            encode(good),
            [("ce_specversion", b""), ("ce_id", b"\x00\xff")],
        ),
        lambda i: (
            b"header-bytes",
            encode(good["data"]),
            [("ce_specversion", b"1.0"), ("ce_id", b"\xff"), ("ce_vendor", b"webflow")],
        ),
        # binary-mode headers that contradict the body: a whole structured event as `data`
        lambda i: (
            b"contradiction",
            encode(event_for("trelica")),
            [(f"ce_{k}", str(v).encode()) for k, v in good.items() if k != "data"],
        ),
        lambda i: (b"wrong-vendor-data", encode({**event_for("enos"), "vendor": "lexful"}), []),
        lambda i: (b"text", b"\x00\x01 not an event at all", [("content-type", b"text/plain")]),
    ]
    records = [kinds[i % len(kinds)](i) for i in range(JUNK)]
    big = b'{"specversion": "1.0", "padding": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    records[:3] = [(b"two-mb", big, []) for _ in range(3)]  # 2 MB values
    return records  # type: ignore[return-value]


def test_junk_is_dead_lettered_good_is_delivered_memory_flat(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    rng = random.Random(8)
    junk = junk_records(rng)
    good, expected = updates(GOOD)
    mixed = junk + good
    rng.shuffle(mixed)
    service = start_service()
    assert service.proc is not None
    baseline_rss = rss_mb(service.proc.pid)
    produce(kafka_bootstrap, source_topic, mixed)
    samples = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not set(delivered(vendors)) >= expected:
        samples.append(rss_mb(service.proc.pid))
        time.sleep(0.5)
    assert set(delivered(vendors)) >= expected, "every good event delivered"
    dlq = consume_all(kafka_bootstrap, f"{source_topic}.dlq", expected=JUNK, timeout_s=120)
    assert len(dlq) == JUNK
    reasons = dlq_reasons(dlq)
    assert set(reasons) <= {"invalid_json", "invalid_event", "unknown_vendor"}
    assert all(dict(r.headers).get("dlq.error") for r in dlq)
    assert service.proc.poll() is None, "the service is still running"
    peak = max(samples)
    print(
        f"\nhostile input: {JUNK} junk ({dict(reasons)}), {GOOD} good delivered; "
        f"RSS {baseline_rss:.0f} MB at start, peak {peak:.0f} MB"
    )
    assert peak < baseline_rss + 150, "memory stays bounded"
    wait_until(
        lambda: service.metric("asset_sync_buffered_events") == 0,
        timeout_s=30,
        message="buffer empty",
    )
    assert service.terminate() == 0
