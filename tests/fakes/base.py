"""What every fake vendor shares: recording, scripted failures, and contract violations.

A fake answers exactly as its seed page says when the request honours the contract; when it
does not, it answers 400/401/404 like the vendor would *and* records a violation, so a test
can assert ``fake.violations == []`` and catch a request the real vendor would refuse.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Received:
    """One request as the fake saw it."""

    vendor: str
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # header names are case-insensitive (RFC 9110)
    body: Any
    at: float
    status: int = 0  # the answer's status, filled in once answered


RECEIVED = web.RequestKey("received", Received)


@dataclass(frozen=True)
class Reply:
    """A scripted answer: status, headers and body (None: the vendor's normal success body)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay_s: float = 0.0
    reset: bool = False  # drop the connection instead of answering
    raw: bytes | None = None  # send these bytes as the body (e.g. invalid JSON)
    drip_s: float = 0.0  # send the body one byte at a time, this long apart
    hang: bool = False  # answer nothing until the fake's release() or reset(), then this


class VendorFake:
    """Base of the five fakes. Subclasses add routes and check their vendor's contract."""

    name = ""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.violations: list[str] = []
        self.script: deque[Reply] = deque()
        self.always: Reply | None = None
        self.every: tuple[int, Reply] | None = None  # every n-th update gets this answer
        self.refuse: dict[str, Reply] = {}  # a request whose path contains the key gets this
        # a request with this bearer token gets this reply: one tenant of the vendor misbehaves
        self.by_token: dict[str, Reply] = {}
        self._released = 0  # bumped by release(): every hanging request then answers
        self.keep = True  # keep every Received (tests); the long-running simulator does not
        self.counts: dict[int, int] = {}  # answers by status, kept either way
        self.ok = 0  # successful updates, and when the first and the last happened
        self.first_ok = self.last_ok = 0.0
        # per path (one asset, unbatched vendors), the highest "update N" accepted, and how
        # often an accepted one came after a higher N: per-asset order, kept either way
        self.last_update: dict[str, int] = {}
        self.inversions = 0
        self.ok_updates = 0
        self._outage: tuple[float, float, Reply] | None = None
        self.latency_s = 0.0
        self._count = 0
        self.tokens: set[str] = set()
        self.static_tokens: set[str] = set()  # configured ones, valid again after reset()
        self.token_requests = 0

    # --- test controls -------------------------------------------------------------------
    def reset(self) -> None:
        """Forget what was received and scripted (tokens already issued stay valid)."""
        self.received.clear()
        self.violations.clear()
        self.script.clear()
        self.always = None
        self.every = None
        self.refuse = {}
        self.by_token = {}
        self.release()
        self.latency_s = 0.0
        self.token_requests = 0
        self.tokens |= self.static_tokens
        self.counts.clear()
        self.ok, self.first_ok, self.last_ok = 0, 0.0, 0.0
        self.last_update.clear()
        self.inversions = 0
        self.ok_updates = 0
        self._outage = None

    def fail_next(self, *replies: Reply) -> None:
        """The next requests to the update endpoint get these answers, in order."""
        self.script.extend(replies)

    def outage(self, seconds: float, reply: Reply) -> None:
        """From the next update request on, answer ``reply`` for ``seconds``."""
        self._outage = (0.0, seconds, reply)

    def release(self) -> None:
        """Requests hanging on a ``Reply(hang=True)`` answer now (a hang never outlives its
        test: a handler still waiting would hold up the server's shutdown)."""
        self._released += 1

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (as if it expired)."""
        self.tokens.clear()

    def succeeded(self) -> list[Received]:
        """Update requests the fake answered with success."""
        return [r for r in self.updates() if 200 <= r.status < 300]

    def updates(self) -> list[Received]:
        """Requests that reached the update endpoint (token calls excluded)."""
        return [r for r in self.received if not r.path.endswith(self.token_paths)]

    token_paths: tuple[str, ...] = ()

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    # --- helpers for subclasses ----------------------------------------------------------
    def issue_token(self) -> str:
        token = "tok-" + secrets.token_hex(12)
        self.tokens.add(token)
        self.token_requests += 1
        return token

    def violation(self, message: str, status: int = 400) -> web.Response:
        self.violations.append(message)
        return web.json_response({"error": message}, status=status)

    on_request: Any = None  # called with each request received (the simulator's live log)

    async def record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        received = Received(
            vendor=self.name,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=body,
            at=time.monotonic(),
        )
        request[RECEIVED] = received
        if self.keep:
            self.received.append(received)
        if self.on_request is not None:
            self.on_request(received)
        return body

    def basic_ok(self, request: web.Request, user: str, password: str) -> bool:
        """HTTP Basic credentials, as the token endpoints take them."""
        expected = base64.b64encode(f"{user}:{password}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def bearer(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    async def scripted(self, request: web.Request) -> web.StreamResponse | None:
        """Apply latency and the next scripted reply; None means answer normally."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        self._count += 1
        reply = self.script.popleft() if self.script else self.always
        if self._outage is not None:
            began, seconds, outage = self._outage
            if not began:
                began = time.monotonic()
                self._outage = (began, seconds, outage)
            if time.monotonic() - began < seconds:
                reply = outage
        for part, refusal in self.refuse.items():
            if part in request.path:
                reply = refusal
        if self.by_token and (token := self.bearer(request)) in self.by_token:
            reply = self.by_token[token]
        if reply is None and self.every is not None and self._count % self.every[0] == 0:
            reply = self.every[1]
        if reply is None:
            return None
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.hang:
            released = self._released
            while self._released == released:
                await asyncio.sleep(0.05)
        if reply.reset:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        if reply.drip_s:
            response = web.StreamResponse(status=reply.status)
            response.content_type = "application/json"
            await response.prepare(request)
            for byte in reply.raw or b'{"status": "slow"}':
                await response.write(bytes([byte]))
                await asyncio.sleep(reply.drip_s)
            await response.write_eof()
            return response
        if reply.raw is not None:
            return web.Response(
                body=reply.raw, status=reply.status, content_type="application/json"
            )
        if reply.status == 200 and reply.body is None:
            return None
        return web.json_response(
            reply.body if reply.body is not None else {"status": reply.status},
            status=reply.status,
            headers=reply.headers,
        )

    def json_body(self, body: Any, request: web.Request) -> web.Response | None:
        """The contract every vendor shares: a JSON object body, declared as JSON."""
        if request.content_type != "application/json":
            return self.violation(f"Content-Type {request.content_type!r} is not JSON", 415)
        if not isinstance(body, dict):
            return self.violation("body is not a JSON object")
        return None
