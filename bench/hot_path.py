"""Scenario 14 (issue 16): the service's own work per event, without Kafka and its noise.

A drain through the broker measures everything at once, and on 2 cores shared with the broker
and the simulator its CPU per event moves by 15-30 % between runs of the same code. Here one
process runs what an event costs the service after it is fetched: ``parse_record``, the
pipeline (per-asset queues, lanes, offsets, dedup), the dispatcher (breaker, retry policy,
pacer, metrics) and the Webflow module, for events no earlier round sent (updates of 5,000
assets, 10 of each a round at full size). Four ways to answer:

- ``instant``: an HTTP client that answers 200 after two suspensions of the event loop (as a
  real client's send and body read are), with the Go simulator's headers; the figure is the
  service's Python alone, steady to about 2 % between runs;
- ``coalescing``: the same with ``coalesce: true`` on the connection (an asset's queued
  updates go as one request): the service's Python per event when it sends fewer requests;
- ``simulator``: the service's own pyreqwest client against the Go simulator (bench/simulator):
  the Python plus the HTTP client's calls and its Rust thread;
- ``aiohttp``: the same through aiohttp's client, tuned as in scenario 13: a client on the
  event loop's own thread, whose requests cross no thread (pyreqwest's cross twice), for
  what an event costs the service with each kind of client.

Each mode runs in a fresh interpreter under uvloop, with the service's collector tuning, after
one warm-up round; the figure is CPU-µs per event (the process, and its main thread).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.harness import Simulator, go_binary
from bench.http_clients import aiohttp_send, aiohttp_session
from bench.scenarios import Row

MODES = {  # mode: how its requests are answered, as the report says
    "instant": "instant answers",
    "coalescing": "instant answers, coalescing",
    "simulator": "Go simulator, pyreqwest",
    "aiohttp": "Go simulator, aiohttp tuned",
}
ROUNDS = 3  # measured, after a warm-up one


class InstantHttp:
    """Answers every request 200 after two suspensions, with the simulator's headers."""

    def __init__(self) -> None:
        from pyreqwest.http import HeaderMap

        self.headers = HeaderMap(
            {
                "Content-Type": "application/json; charset=utf-8",
                "X-RateLimit-Limit": "1000000",
                "X-RateLimit-Remaining": "1000000",
            }
        )

    async def send(self, request: Any) -> Any:
        from consumer.delivery.http import HttpResponse

        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return HttpResponse(200, self.headers, b"{}", 0.0)

    async def close(self) -> None:
        return None


class AiohttpHttp:
    """The service's HttpClient interface over scenario 13's tuned aiohttp session."""

    def __init__(self) -> None:
        self.session: Any = None

    async def send(self, request: Any) -> Any:
        from consumer.delivery.http import HttpResponse

        if self.session is None:  # inside the event loop
            self.session = aiohttp_session(tuned=True)
        started = time.monotonic()
        status, headers, body = await aiohttp_send(self.session, request)
        return HttpResponse(status, headers, body, time.monotonic() - started)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def rounds(
    base: str, token: str, count: int, http: Any, coalesce: bool = False
) -> list[tuple[float, float]]:
    """A warm-up round and ROUNDS measured ones of ``count`` new events each; per measured
    round, CPU-µs per event of the process and of this (the event loop's) thread."""
    from consumer.broker.dead_letter import SourceRecord
    from consumer.broker.offsets import OffsetTracker
    from consumer.config import parse_config
    from consumer.delivery.dispatcher import Dispatcher
    from consumer.delivery.pipeline import Pipeline
    from consumer.events import parse_record
    from consumer.local.samples import event

    raw = {
        "kafka": {"topic": "bench"},
        "dispatch": {"max_in_flight": 256},
        "connections": {
            "webflow": {"default": {"base_url": base, "token": token, "coalesce": coalesce}}
        },
    }
    config = parse_config(raw, {})
    dispatcher = Dispatcher(config, http=http)
    pipeline = Pipeline(config, dispatcher, None, OffsetTracker())  # type: ignore[arg-type]
    figures = []
    for r in range(ROUNDS + 1):
        values = [
            json.dumps(event("webflow", n, assets=5000)).encode()
            for n in range(r * count, (r + 1) * count)
        ]
        now_ms = int(time.time() * 1000)
        cpu, main = time.process_time(), time.thread_time()
        for i, value in enumerate(values):
            record = SourceRecord("bench", 0, r * count + i, now_ms, None, value, ())
            pipeline.submit(record, parse_record(value, ()))
            if i % 500 == 499:  # as the poll loop does between fetches
                await asyncio.sleep(0)
        if not await pipeline.wait_idle(600):
            raise RuntimeError("the pipeline did not finish")
        cpu, main = time.process_time() - cpu, time.thread_time() - main
        if r:
            figures.append((cpu / count * 1e6, main / count * 1e6))
    await dispatcher.close()
    return figures


def child(mode: str, base: str, token: str, count: int) -> None:
    """One mode in this process; prints its rounds as JSON."""
    import uvloop

    from consumer.cli import tune_gc

    tune_gc()
    http: Any = None  # None: the service's own HttpClient
    if mode in ("instant", "coalescing"):
        http = InstantHttp()
    elif mode == "aiohttp":
        http = AiohttpHttp()
    coalesce = mode == "coalescing"
    print(json.dumps(uvloop.run(rounds(base, token, count, http, coalesce))))


def hot_path(quick: bool) -> list[Row]:
    count = 20_000 if quick else 50_000
    rows = []
    for mode, answer in MODES.items():
        if mode in ("instant", "coalescing"):
            figures = _run(mode, "http://vendor.invalid", "bench-token", count)
        else:
            with Simulator([], command=[str(go_binary("webflow-simulator"))]) as sim:
                webflow = sim.connections["webflow"]["default"]
                figures = _run(mode, webflow["base_url"], webflow["token"], count)
        process = statistics.median(f[0] for f in figures)
        main = statistics.median(f[1] for f in figures)
        print(
            f"  14 {mode}: CPU-µs per event {[round(f[0], 1) for f in figures]}, "
            f"main thread {[round(f[1], 1) for f in figures]}",
            flush=True,
        )
        scenario = "14 the service's work per event, no Kafka"
        rows.append(Row(scenario, f"CPU-µs per event, {answer}", process, "µs"))
        rows.append(Row(scenario, f"of which the event loop's thread, {answer}", main, "µs"))
    return rows


def _run(mode: str, base: str, token: str, count: int) -> list[tuple[float, float]]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.hot_path", mode, base, token, str(count)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    return [tuple(f) for f in json.loads(out.stdout)]


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
