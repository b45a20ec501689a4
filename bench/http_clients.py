"""Scenario 13 (issue 16): the vendor HTTP client alone, the part of an event's cost the
profile put first (aiohttp's request path: about half of the service's CPU).

Each client sends the same Webflow ``PATCH`` requests (built by the service's own Webflow
module) to the compiled simulator (bench/simulator), 256 at a time, in a process of its own
under uvloop; the figure is that process's CPU-seconds per 1,000 answered requests and its
requests/s, after one warm-up pass. Clients alternate, round after round:

- ``service``: the service's own ``HttpClient`` (consumer/delivery/http.py, pyreqwest);
- ``aiohttp``: aiohttp's client as the service used it until pyreqwest replaced it;
- ``aiohttp-tuned``: the same with every per-request extra aiohttp lets one switch off;
- ``aiosonic``, ``curl_cffi``, ``rnet``: when installed (not dependencies of the project:
  ``pip install aiosonic curl-cffi rnet`` to weigh them too).
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.util import find_spec
from typing import Any

from bench.harness import Simulator, go_binary
from bench.scenarios import Row

CONCURRENCY = 256
OPTIONAL = ("aiosonic", "curl_cffi", "rnet")  # weighed when installed
Send = Callable[[Any], Awaitable[int]]  # one request; returns the status


def requests(base: str, token: str, count: int) -> list[Any]:
    """The service's own Webflow requests (HttpRequest), ``count`` of them over 5,000 assets."""
    from consumer.config import Connection, DispatchConfig
    from consumer.delivery.http import HttpClient
    from consumer.events import Event
    from consumer.vendors.webflow import WebflowClient

    connection = Connection("webflow", "default", base, {"token": token})
    client = WebflowClient(connection, HttpClient(DispatchConfig()))
    out = []
    for n in range(count):
        data = {"asset_id": f"{n % 5000:024x}", "changes": {"displayName": f"update {n}"}}
        event = Event(id=str(n), source="bench", vendor="webflow", connection="default", data=data)
        out.append(client.build([event], token))
    return out


async def service_client() -> tuple[Send, Callable[[], Awaitable[None]]]:
    from consumer.config import DispatchConfig
    from consumer.delivery.http import HttpClient

    client = HttpClient(DispatchConfig(max_in_flight=CONCURRENCY))

    async def send(request: Any) -> int:
        return (await client.send(request)).status

    return send, client.close


def aiohttp_session(tuned: bool) -> Any:
    """aiohttp's client as the service used it until pyreqwest replaced it, or ``tuned``:
    with every per-request extra aiohttp lets one switch off."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=CONCURRENCY, limit_per_host=0, keepalive_timeout=30)
    if tuned:  # no timeout object, no decompression, no automatic headers, no proxy look-up
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
        )
    return aiohttp.ClientSession(  # consumer/delivery/http.py before pyreqwest
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=65, sock_connect=5, sock_read=30),
        raise_for_status=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def aiohttp_send(session: Any, request: Any) -> tuple[int, Any, bytes]:
    """One HttpRequest through an aiohttp session: status, headers, body."""
    from yarl import URL

    url = URL(request.url, encoded=True)
    if request.query:
        url = url.with_query(list(request.query))
    async with session.request(
        request.method,
        url,
        headers=dict(request.headers),
        data=request.body,
        allow_redirects=False,
    ) as response:
        body = await response.read()
        return response.status, response.headers, body


async def aiohttp_client(tuned: bool) -> tuple[Send, Callable[[], Awaitable[None]]]:
    session = aiohttp_session(tuned)

    async def send(request: Any) -> int:
        status, headers, _ = await aiohttp_send(session, request)
        dict(headers)
        return int(status)

    return send, session.close


async def aiosonic_client() -> tuple[Send, Callable[[], Awaitable[None]]]:
    import aiosonic
    from aiosonic.connectors import TCPConnector
    from aiosonic.pools import PoolConfig

    # as many connections as requests at a time (its default pool holds 30)
    pool = PoolConfig(size=CONCURRENCY, max_conn_requests=None)
    sonic = aiosonic.HTTPClient(connector=TCPConnector(pool_configs={":default": pool}))

    async def send(request: Any) -> int:
        url = request.url + "?" + "&".join(f"{k}={v}" for k, v in request.query)
        response = await sonic.request(
            url, method=request.method, headers=dict(request.headers), data=request.body
        )
        await response.content()
        return int(response.status_code)

    async def close() -> None:
        await sonic.connector.cleanup()

    return send, close


async def curl_cffi_client() -> tuple[Send, Callable[[], Awaitable[None]]]:
    from curl_cffi import AsyncSession

    session: Any = AsyncSession(max_clients=CONCURRENCY)

    async def send(request: Any) -> int:
        response = await session.request(
            request.method,
            request.url,
            params=list(request.query),
            headers=dict(request.headers),
            data=request.body,
        )
        return int(response.status_code)

    return send, session.close


async def rnet_client() -> tuple[Send, Callable[[], Awaitable[None]]]:
    import rnet

    client = rnet.Client()

    async def send(request: Any) -> int:
        response = await client.request(
            rnet.Method.PATCH,
            request.url,
            query=list(request.query),
            headers=dict(request.headers),
            body=request.body,
        )
        await response.bytes()
        return int(response.status)

    async def close() -> None:
        return None

    return send, close


CLIENTS: dict[str, Callable[[], Awaitable[tuple[Send, Callable[[], Awaitable[None]]]]]] = {
    "service": service_client,
    "aiohttp": lambda: aiohttp_client(tuned=False),
    "aiohttp-tuned": lambda: aiohttp_client(tuned=True),
    "aiosonic": aiosonic_client,
    "curl_cffi": curl_cffi_client,
    "rnet": rnet_client,
}


async def drive(name: str, batch: list[Any]) -> None:
    send, close = await CLIENTS[name]()
    work = iter(batch)
    refused = 0

    async def worker() -> None:
        nonlocal refused
        for request in work:
            if await send(request) != 200:
                refused += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    await close()
    if refused:
        raise SystemExit(f"{name}: {refused} requests refused")


def child(name: str, base: str, token: str, count: int) -> None:
    """One client in this process: a warm-up pass, then the measured one; prints JSON."""
    import uvloop

    batch = requests(base, token, count)
    uvloop.run(drive(name, batch[: count // 5]))
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    uvloop.run(drive(name, batch))
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"rate": count / seconds, "cpu_per_1000": cpu / count * 1000}))


def http_clients(repeat: int, quick: bool) -> list[Row]:
    count = 20_000 if quick else 50_000
    names = ["service", "aiohttp", "aiohttp-tuned"]
    names += [n for n in OPTIONAL if find_spec(n) is not None]
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    command = [str(go_binary("webflow-simulator"))]
    for _ in range(repeat):
        for name in names:  # a fresh simulator each: its counters and connections
            with Simulator([], command=command) as sim:
                webflow = sim.connections["webflow"]["default"]
                args = [webflow["base_url"], webflow["token"], str(count)]
                out = subprocess.run(
                    [sys.executable, "-m", "bench.http_clients", name, *args],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                results[name].append(json.loads(out.stdout))
    rows = []
    service = results["service"]
    for name in names[1:]:
        for measure, unit, key in (
            ("CPU-ms per 1,000 requests", "ms", "cpu_per_1000"),
            ("requests/s", "requests/s", "rate"),
        ):
            scale = 1000 if key == "cpu_per_1000" else 1
            rows.append(
                Row(
                    f"13 HTTP client alone, {count:,} Webflow PATCHes, {CONCURRENCY} at a time",
                    f"{measure}: the service's (pyreqwest; baseline: {name})",
                    statistics.median(r[key] for r in service) * scale,
                    unit,
                    statistics.median(r[key] for r in results[name]) * scale,
                    "for the choice of client",
                    None,
                )
            )
    return rows


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
