"""Pacing from the vendor's own rate-limit headers, so that 429s are the exception.

The limit is the smaller of the one configured for the connection (``rate_limit: 60/min``)
and the one the vendor states (``X-RateLimit-Limit`` per ``rate_window_s``). Requests go in
arrival order through a local token bucket refilled at just under that rate times a *share*.
Replicas that use one credential each hold a share of it; nothing tells them how many they
are (Kafka tells a member its partitions, not the group's size), so each corrects its own
share by additive increase / multiplicative decrease, as TCP does:

- a 429 cuts the share, once per congestion: answers to requests sent before the cut do not
  cut again;
- so does ``Remaining`` running low on a vendor that refills smoothly (a token bucket that
  drains means the replicas together send faster than it refills), before any 429; and a
  fixed window used up well before its end (whose reset every replica then waits for, instead
  of learning it from a 429 each);
- answers that say enough remains let a replica whose requests wait for the pacer grow its
  share a little, never past the stated limit.

Only the request at the head of the queue holds a place in time, so a 429 voids nothing and
nothing queued (hundreds of deliveries) delays the next request: after a 429 nothing goes
before ``Retry-After``, then one request goes alone (a probe) and the rest follow its success
at the pace. Until the first answer the limit is unknown, so the first request is a probe too
(a vendor refusing for minutes costs one call per ``Retry-After``, not one per delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping

from consumer.delivery.retry import parse_retry_after

# Pace a little under the stated rate: at exactly the vendor's rate its bucket is empty in
# steady state, and any delay in its bookkeeping or ours turns a request into a 429
# (measured: 7.8% of requests at 100%, none at 97%).
PACE_MARGIN = 0.97
# AIMD: a cut multiplies the share by DECREASE; answers with room add INCREASE of the limit
# per refill time of the vendor (``_refill_s``) while requests wait for the pacer. Tuned in a
# simulation of 1-3 replicas against both kinds of vendor (tests/unit/test_pacing.py).
DECREASE = 0.7
INCREASE = 0.01
MIN_SHARE = 0.05
# A fixed window used up more than WINDOW_SLACK of it before its end means the group is too
# fast (less is within what the answers tell of the reset); the cut is by the part used up
# early, at least WINDOW_CUT and at most 1 - DECREASE.
WINDOW_SLACK = 0.1
WINDOW_CUT = 0.2
DEFAULT_BLOCK_S = 1.0  # a 429 without Retry-After still holds every request this long
_HELD_S = 1.0  # a request waited for its slot this recently: the pacer is what limits


class Pacer:
    def __init__(
        self,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        configured: float | None = None,
    ) -> None:
        self.window_s = window_s  # the window X-RateLimit-Limit counts over
        self.clock = clock
        self.configured = configured  # requests/s, the connection's rate_limit
        self.limit: int | None = None
        self.remaining: int | None = None
        self.share = 1.0
        self.blocked_until = 0.0
        self.tokens = 0.0
        now = clock()
        self._refilled = now
        self._gate_open = False  # closed until the first answer, and again after a 429
        self.paused = False  # an operator's pause (consumer/state/control.py): nothing goes
        self._probe_out = False
        self._in_flight = 0
        self._queue: deque[asyncio.Future[None]] = deque()
        self._changed: asyncio.Event | None = None
        self._held_at = -math.inf
        self._grown_at = now
        self._cut_at = -math.inf
        # What the answers told of the vendor's counting (reset when its limit changes):
        self._peak = 0  # the most it said remains: its bucket, or its window, in effect
        self._seen: tuple[float, int] | None = None  # the last Remaining, and when counted
        self._watched_since: float | None = None
        # A fixed window (Remaining jumped back up at once): the last reset fell after the
        # first and by the second of these times.
        self._reset: tuple[float, float] | None = None

    # --- the pace ------------------------------------------------------------------------------
    @property
    def ceiling(self) -> float:
        """Requests per second allowed for the credential (0 while nobody has said)."""
        stated = self.limit / self.window_s if self.limit else 0.0
        if self.configured and stated:
            return min(self.configured, stated)
        return self.configured or stated

    @property
    def rate(self) -> float:
        """Requests per second this pacer sends: its share of the ceiling, with a margin."""
        return self.ceiling * self.share * PACE_MARGIN

    def _capacity(self) -> float:
        """The burst allowed after a quiet spell: the share of what the vendor said remains
        at most, or of one second at the configured rate."""
        return max(1.0, (self._peak or self.ceiling) * self.share * PACE_MARGIN)

    def _refill(self, now: float, rate: float) -> None:
        if now > self._refilled:
            self.tokens = min(self._capacity(), self.tokens + (now - self._refilled) * rate)
            self._refilled = now

    def _refill_s(self) -> float:
        """How long the vendor takes to give back what it lets remain at most: about a
        second for a bucket of a second's worth, the window for a fixed window. A change of
        pace shows in its answers after about this long."""
        ceiling = self.ceiling
        return max(1.0, self._peak / ceiling) if self._peak and ceiling else 1.0

    # --- requests ------------------------------------------------------------------------------
    async def wait(self) -> bool:
        """Wait for this request's turn; True when it goes as the probe."""
        if not self._queue:
            go = self._take(self.clock())
            if go is not None:
                return go
        turn = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        if len(self._queue) == 1:
            turn.set_result(None)
        try:
            await turn  # the head of the queue: the only request that holds a place in time
            while True:
                now = self.clock()
                go = self._take(now)
                if go is not None:
                    return go
                delay = self._delay(now)
                if delay is None:  # the probe is out, or paused: wait for a change
                    await self._change().wait()
                else:  # then look again: a 429 may have come meanwhile
                    await asyncio.sleep(delay)
        finally:
            self._leave(turn)

    def _take(self, now: float) -> bool | None:
        """Let one request go now (returns whether it is the probe), or None."""
        if self.paused or now < self.blocked_until:
            return None
        probe = not self._gate_open
        if probe and self._probe_out:
            return None
        rate = self.rate
        if rate:
            self._refill(now, rate)
            if self.tokens < 1:
                self._held_at = now
                return None
            self.tokens -= 1
        self._probe_out = self._probe_out or probe
        self._in_flight += 1
        return probe

    def _delay(self, now: float) -> float | None:
        if self.paused:
            return None  # until resumed
        if now < self.blocked_until:
            return self.blocked_until - now
        if not self._gate_open and self._probe_out:
            return None
        return max((1 - self.tokens) / self.rate, 1e-3)

    def _leave(self, turn: asyncio.Future[None]) -> None:
        if self._queue and self._queue[0] is turn:
            self._queue.popleft()
            # The next in line goes to the head, unless it was cancelled too: then its own
            # _leave, when its task runs, hands the head on.
            if self._queue and not self._queue[0].done():
                self._queue[0].set_result(None)
        else:  # cancelled while queued
            with contextlib.suppress(ValueError):
                self._queue.remove(turn)

    def pause(self, paused: bool) -> None:
        """An operator paused (resumed) the connection: requests queued here wait too, in
        their order, instead of going because they passed the breaker before the pause."""
        self.paused = paused
        if not paused:
            self._notify()

    def _change(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # --- answers -------------------------------------------------------------------------------
    def answered(self, probe: bool = True) -> None:
        """A request got its answer (or failed without one). The probe's answer opens the
        gate; a 429 (``observe``, right after) closes it again."""
        self._in_flight = max(0, self._in_flight - 1)
        if probe:
            self._probe_out = False
            if not self._gate_open:
                self._gate_open = True
                self._notify()

    def abandoned(self) -> None:
        """The probe was called off before an answer (its delivery was cancelled, e.g. by a
        rebalance): the gate stays closed and the next request in line probes instead."""
        self._in_flight = max(0, self._in_flight - 1)
        self._probe_out = False
        self._notify()

    def observe(self, status: int, headers: Mapping[str, str], sent: float | None = None) -> None:
        """Learn from the answer to a request that left at ``sent`` (this pacer's clock)."""
        now = self.clock()
        sent = now if sent is None else sent  # the vendor counted it between sent and now
        limit = _int(headers.get("X-RateLimit-Limit"))
        remaining = _int(headers.get("X-RateLimit-Remaining"))
        if limit and limit != self.limit:
            self.limit, self._peak, self._seen, self._watched_since = limit, 0, None, None
            self._reset = None
        if remaining is not None:
            self.remaining = remaining
        # A request sent before the last cut was sent at the old pace: it cannot ask for another.
        fresh = sent >= self._cut_at
        if status == 429:
            self._refused(now, sent, fresh, parse_retry_after(headers.get("Retry-After")))
        elif remaining is not None:
            self._room(now, sent, fresh, remaining)
        else:
            self._grow(now)

    def _refused(self, now: float, sent: float, fresh: bool, wait: float | None) -> None:
        wait = DEFAULT_BLOCK_S if wait is None else wait
        if self._reset is not None:  # a fixed window refuses until it starts again
            rounding = 1.0 if wait >= 1 and float(wait).is_integer() else 0.0
            self._reset = (sent + wait - rounding, now + wait)
        if fresh:
            self._cut(now, wait)
        self._block(now + wait)
        self._gate_open = self._probe_out = False  # after the block, a probe first
        self._notify()

    def _block(self, until: float) -> None:
        """Nothing goes before ``until``; then one slot, then the pace. Requests that waited
        meanwhile held no slot: nothing to void, nothing queued ahead of the next one."""
        self.blocked_until = max(self.blocked_until, until)
        self.tokens, self._refilled = 1.0, self.blocked_until

    def _room(self, now: float, sent: float, fresh: bool, remaining: int) -> None:
        """What an answer's ``Remaining`` says about the pace of all who share the credential.
        Times are bounds: the vendor counted the request after ``sent`` and before ``now``."""
        self._peak = max(self._peak, remaining)
        if self._seen is None or sent >= self._seen[0]:  # not overtaken by a later one
            if self._seen is not None:
                before_sent, before = self._seen
                # More came back at once than a bucket refills meanwhile: a fixed window
                # started anew, after the last count and before this one. (A vendor whose
                # Remaining never nears its stated limit, a 20/s bucket announced as 1200 a
                # minute, is no fixed window.)
                jump = remaining - before - self.ceiling * (now - before_sent)
                big = self.limit and self._peak * 2 >= self.limit
                if jump > max(2, self._peak / 4) and big:
                    self._reset = (before_sent, now)
            self._seen = (sent, remaining)
        if self._watched_since is None:
            self._watched_since = sent
        # Never burst past what the vendor says is left (less what is on its way there).
        if self.rate:
            self._refill(now, self.rate)
        self.tokens = min(self.tokens, max(0.0, float(remaining - self._in_flight)))
        if remaining <= 0 and self._reset is not None:
            # A fixed window used up: whoever sends before it starts again is refused, so
            # nobody here does. Used up well before its end, it says we were too fast.
            after, by = self._next_reset(sent)  # the first that may follow the count
            early = after - now  # at least this long before the window's end
            if fresh and early > WINDOW_SLACK * self.window_s:
                self._cut(now, early)
            self._block(by)
            return
        if remaining * 2 >= self._peak:
            self._grow(now)
            return
        self._grown_at = now
        # A bucket below a quarter is draining: together the replicas are too fast. In a
        # fixed window Remaining runs low before every reset whatever the pace, so it says
        # nothing there; one that was watched for a window without a reset is none.
        watched = sent - self._watched_since >= min(self.window_s, 2 * self._refill_s())
        draining = remaining * 4 < self._peak and self._reset is None and watched
        if draining and fresh and now - self._cut_at >= self._refill_s():
            self._cut(now)

    def _next_reset(self, t: float) -> tuple[float, float]:
        """The first reset of the fixed window that may still come after ``t``: it falls
        after the first time and by the second."""
        assert self._reset is not None
        after, by = self._reset
        windows = max(0, math.ceil((t - by) / self.window_s))
        return after + windows * self.window_s, by + windows * self.window_s

    def _grow(self, now: float) -> None:
        # Only a pacer that holds requests back grows (a quiet one learns nothing of its
        # room), by INCREASE per refill time, never past the stated limit.
        held = bool(self._queue) or now - self._held_at <= _HELD_S
        rate = self.rate
        spell = min(now - self._grown_at, max(1.0, 2 / rate if rate else 1.0))
        if held and self.share < 1.0:
            self.share = min(1.0, self.share + INCREASE * spell / self._refill_s())
        self._grown_at = now

    def _cut(self, now: float, early: float | None = None) -> None:
        """Multiplicative decrease. A fixed window used up ``early`` seconds before its end
        says by how much the group was too fast: by that part, at least WINDOW_CUT."""
        factor = DECREASE
        if self._reset is not None and early is not None and early < self.window_s:
            factor = max(DECREASE, min(1 - WINDOW_CUT, 1 - early / self.window_s))
        self.share = max(MIN_SHARE, self.share * factor)
        self._cut_at = now
        self.tokens = min(self.tokens, self._capacity())


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
