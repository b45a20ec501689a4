"""The vendor simulator: ``python -m tests.fakes [--chaos]`` serves all five fakes.

It prints one JSON line on stdout with the ``connections`` config section (base URLs and
freshly made credentials), then a live log line per request on stderr. With ``--chaos`` some
answers are 429/409/500 (retried) and a few are refusals (dead-lettered), so a demo shows
every path. Stops on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading

from tests.fakes import FakeVendors, Received, Reply
from tests.fakes.rate_limits import FixedWindow, TokenBucket

MISSING_ASSET = "00000000-0000-4000-8000-000000000404"  # Lexful answers 404 for it


def chaos(fakes: FakeVendors) -> None:
    fakes.webflow.every = (7, Reply(429, {"Retry-After": "1"}, {"code": "too_many_requests"}))
    fakes.autodesk.every = (5, Reply(409, body={"developerMessage": "version conflict"}))
    fakes.trelica.every = (6, Reply(500, body={"error": "internal"}))
    fakes.lexful.every = (9, Reply(503))
    fakes.enos.every = (8, Reply(200, body={"code": 99500, "msg": "busy"}))
    fakes.lexful.refuse[MISSING_ASSET] = Reply(404, body={"error": "asset not found"})


def live_log(received: Received) -> None:
    body = json.dumps(received.body)[:120] if received.body is not None else ""
    query = "?" + "&".join(f"{k}={v}" for k, v in received.query.items()) if received.query else ""
    print(
        f"[{received.vendor:8}] {received.method} {received.path}{query} {body}",
        file=sys.stderr,
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes")
    parser.add_argument("--chaos", action="store_true", help="answer some requests 429/409/500")
    parser.add_argument("--quiet", action="store_true", help="no live log")
    parser.add_argument("--latency-ms", type=float, default=0, help="every vendor's latency")
    parser.add_argument("--webflow-rate", type=float, help="Webflow token bucket, requests/s")
    parser.add_argument(
        "--webflow-announce",
        type=int,
        help="the token bucket's X-RateLimit-Limit (default its size, e.g. 1200 for 20/s a minute)",
    )
    parser.add_argument(
        "--webflow-window",
        metavar="N/SECONDS",
        help="Webflow fixed window instead: N requests per window, all at its start (60/60)",
    )
    parser.add_argument(
        "--webflow-429-for",
        type=float,
        default=0,
        help="Webflow answers 429 (Retry-After: 2) for this many seconds",
    )
    parser.add_argument(
        "--trelica-503-for",
        type=float,
        default=0,
        help="Trelica answers 503 for this many seconds from its first update",
    )
    args = parser.parse_args()
    fakes = FakeVendors()
    if args.chaos:
        chaos(fakes)
    for fake in fakes.fakes.values():
        fake.latency_s = args.latency_ms / 1000
        fake.keep = False  # the simulator runs long: keep no request history
    if args.webflow_rate:
        size = max(1, int(args.webflow_rate))
        fakes.webflow.limit_to(TokenBucket(args.webflow_rate, size, args.webflow_announce))
    if args.webflow_window:
        count, seconds = args.webflow_window.split("/")
        fakes.webflow.limit_to(FixedWindow(int(count), float(seconds)))
    if args.webflow_429_for:
        fakes.webflow.outage(
            args.webflow_429_for, Reply(429, {"Retry-After": "2"}, {"code": "too_many_requests"})
        )
    if args.trelica_503_for:
        fakes.trelica.outage(args.trelica_503_for, Reply(503, body={"error": "down"}))
    if not args.quiet:
        for fake in fakes.fakes.values():
            fake.on_request = live_log
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with fakes:
        print(json.dumps({"connections": fakes.connections()}), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
