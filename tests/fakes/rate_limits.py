"""How a vendor counts one credential's requests: a token bucket or a fixed window.

Both are shared by every process that uses the credential (the fake is one server), answer
with ``X-RateLimit-Limit``/``X-RateLimit-Remaining`` like Webflow, and refuse beyond the limit
with a ``Retry-After``. The clock is injectable so a simulation can run them in virtual time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Verdict = tuple[bool, dict[str, str]]  # allowed, and the rate-limit headers of the answer


class TokenBucket:
    """``rate_per_s`` refilled continuously up to ``burst``; ``Remaining`` is the bucket.

    ``announced`` is the ``X-RateLimit-Limit`` (default ``burst``): a vendor at 20/s may
    announce 1200 (a minute's worth, with ``rate_window_s: 60``). A refusal says
    ``Retry-After: ceil(1 / rate)`` (1 s for any rate of at least one a second).
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        announced: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst
        self.announced = announced or burst
        self.clock = clock
        self._bucket, self._last = float(burst), clock()

    def take(self) -> Verdict:
        now = self.clock()
        self._bucket = min(self.burst, self._bucket + (now - self._last) * self.rate_per_s)
        self._last = now
        headers = {"X-RateLimit-Limit": str(self.announced)}
        if self._bucket >= 1:
            self._bucket -= 1
            return True, {**headers, "X-RateLimit-Remaining": str(int(self._bucket))}
        wait = math.ceil(1 / self.rate_per_s)
        return False, {**headers, "X-RateLimit-Remaining": "0", "Retry-After": str(wait)}


class FixedWindow:
    """``limit`` requests per window of ``window_s``, all available at the window's start
    (windows start at multiples of ``window_s`` of the clock, like a minute's).

    A refusal's ``Retry-After`` is the time to the next window: whole seconds, rounded up,
    as HTTP says, for windows of a minute or more; for a window scaled down to seconds (20
    per 1 s for 60 per minute, in tests) it is scaled down too, to hundredths.
    """

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window_s = limit, window_s
        self.clock = clock
        self._window, self._used = -1, 0

    def take(self) -> Verdict:
        now = self.clock()
        window = int(now // self.window_s)
        if window != self._window:
            self._window, self._used = window, 0
        headers = {"X-RateLimit-Limit": str(self.limit)}
        if self._used < self.limit:
            self._used += 1
            return True, {**headers, "X-RateLimit-Remaining": str(self.limit - self._used)}
        left = (window + 1) * self.window_s - now
        wait = str(math.ceil(left)) if self.window_s >= 60 else f"{math.ceil(left * 100) / 100:g}"
        return False, {**headers, "X-RateLimit-Remaining": "0", "Retry-After": wait}


Limiter = TokenBucket | FixedWindow
