"""Pacing from the vendor's own rate-limit headers, so that 429s are the exception.

After a 429 with ``Retry-After`` every request of the connection waits until then (one
sleeper, not a thundering herd). When ``X-RateLimit-Remaining`` runs low, requests are spaced
``window / X-RateLimit-Limit`` apart until the budget recovers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from consumer.retry import parse_retry_after

LOW_WATER_FRACTION = 0.1


class Pacer:
    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self.blocked_until = 0.0
        self.next_slot = 0.0
        self.interval = 0.0
        self.remaining: int | None = None
        self.limit: int | None = None

    async def wait(self) -> None:
        now = self.clock()
        start = max(now, self.blocked_until)
        if self.interval:
            start = max(start, self.next_slot)
            self.next_slot = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        remaining = _int(headers.get("X-RateLimit-Remaining"))
        limit = _int(headers.get("X-RateLimit-Limit"))
        if limit:
            self.limit = limit
        if remaining is not None:
            self.remaining = remaining
        if status == 429:
            wait = parse_retry_after(headers.get("Retry-After"))
            if wait is not None:
                self.blocked_until = max(self.blocked_until, self.clock() + wait)
        if (
            self.limit
            and self.remaining is not None
            and (self.remaining <= self.limit * LOW_WATER_FRACTION or status == 429)
        ):
            self.interval = self.window_s / self.limit
        else:
            self.interval = 0.0


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
