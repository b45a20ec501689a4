"""A circuit breaker per connection (vendor + connection name): a vendor that keeps failing
is left alone, then tried again with one request at a time.

    closed ──(failure_threshold failures in a row)──► open ──(open_s)──► half-open
      ▲                                                 ▲                    │ one probe
      └────────────── the probe got an answer ──────────┴─ it failed too ◄───┘

A failure is what says the vendor or the way to it is broken: a 5xx (and 408, and answers the
vendor module reads as a server error), a timeout, a refused or reset connection, a token
endpoint answering 5xx. A 429 or 409 is an answer of a working vendor (rate limiting is the
pacer's job), as is every other answer: those count as successes. Each failed probe doubles
the wait before the next one, up to ``max_open_s``.

Unlike the usual breaker, which fails calls at once while it is open, attempts *wait* here:
an event never gives up because its vendor is down (SPEC section 4). So the retry policy asks
``acquire`` before each attempt and tells ``release`` how it went; while the breaker is not
closed, its budget clock (``closed_seconds``) stands still, so waiting costs no retry budget.

An operator's pause (``asset-sync ctl pause``, consumer/state/control.py) uses the same wait: while
a connection is paused no attempt is let go, whatever the state, and the budget clock stands
still too; attempts already let go finish. Resuming lets the waiters go in arrival order. The
pause is no state of the machine (``asset_sync_connection_state`` stays the breaker's): a
paused connection can be open as well.

Why not a library: ``pybreaker``, ``aiobreaker`` and ``purgatory`` all fail calls while open
and keep no queue of waiters; their half-open state lets several calls through, and none has
a clock of closed time. ``Breaker`` is the state machine as a value (injectable clock, no
I/O); ``CircuitBreaker`` puts asyncio waiting around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from enum import Enum, IntEnum

from consumer.config import BreakerConfig
from consumer.errors import DeliveryError, RetryableError


class State(IntEnum):
    """The value of ``asset_sync_connection_state``."""

    CLOSED = 0
    HALF_OPEN = 1  # the wait is over: the next attempt is the probe (or it is under way)
    OPEN = 2


class Admission(Enum):
    GO = "go"  # closed: an ordinary attempt
    PROBE = "probe"  # half-open: the one attempt that tells whether the vendor is back
    WAIT = "wait"


def trips(error: BaseException) -> bool:
    """Whether an attempt's error says the connection is failing (see the module doc)."""
    if not isinstance(error, RetryableError):
        return False
    if error.retry_reason in ("server_error", "timeout", "connection"):
        return True
    return error.status is not None and (error.status >= 500 or error.status == 408)


class Breaker:
    """The state machine of one connection. ``on_change`` hears every state entered."""

    def __init__(
        self,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.on_change = on_change
        self.failures = 0  # in a row, while closed
        self.interval = 0.0  # the last wait before a probe
        self.open_until = 0.0
        self.probing = False
        self.paused = False
        self._state = State.CLOSED
        self._closed_total = 0.0
        self._closed_since = clock()

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self.clock() >= self.open_until:
            self._enter(State.HALF_OPEN)
        return self._state

    def admit(self) -> Admission:
        """May an attempt go now? A ``PROBE`` answer makes this attempt the probe."""
        if self.paused:
            return Admission.WAIT
        state = self.state
        if state is State.CLOSED:
            return Admission.GO
        if state is State.HALF_OPEN and not self.probing:
            self.probing = True
            return Admission.PROBE
        return Admission.WAIT

    @property
    def available(self) -> bool:
        """Closed and not paused (reads no ``state``: that may end the open wait)."""
        return not self.paused and self._state is State.CLOSED

    @property
    def probe_due(self) -> bool:
        """Not paused, and the next attempt would be the probe (reads no ``state``)."""
        if self.paused or self._state is State.CLOSED:
            return False
        return self._state is State.HALF_OPEN or self.clock() >= self.open_until

    def opens_in(self) -> float | None:
        """Seconds until the open wait ends (0 or less: it is over); None when the breaker is
        not open. Reads no ``state``: that would end the wait as a side effect, and a caller
        that was just told to wait (``admit``) would then find nothing left to time, so the
        waiters would wait for good (seen about once in four outages)."""
        if self._state is not State.OPEN:
            return None
        return self.open_until - self.clock()

    def succeeded(self, probe: bool) -> None:
        """An attempt got an answer that is not a failure."""
        if self.state is State.CLOSED:
            self.failures = 0
        elif probe and self.probing:
            self.probing = False
            self.failures = 0
            self._enter(State.CLOSED)
        # else: an attempt let go before the breaker opened; the probe decides

    def failed(self, probe: bool) -> None:
        """An attempt failed in a way that ``trips``."""
        if self.state is State.CLOSED:
            self.failures += 1
            if self.config.failure_threshold and self.failures >= self.config.failure_threshold:
                self._open(self.config.open_s)
        elif probe and self.probing:
            self.probing = False
            self._open(min(self.config.max_open_s, self.interval * 2))

    def abandoned(self, probe: bool) -> None:
        """The probe was called off before an answer (shutdown, revocation): the next
        waiting attempt probes instead."""
        if probe and self.probing:
            self.probing = False

    def pause(self, paused: bool) -> None:
        """An operator paused (or resumed) the connection: nothing is admitted meanwhile."""
        if paused != self.paused:
            self._change(self._state, paused)

    def closed_seconds(self) -> float:
        """How long the breaker has been closed and not paused, in all: the retry budget's
        clock."""
        if self._running():
            return self._closed_total + self.clock() - self._closed_since
        return self._closed_total

    def _running(self) -> bool:
        return self._state is State.CLOSED and not self.paused

    def _open(self, interval: float) -> None:
        self.interval = interval
        self.open_until = self.clock() + interval
        self._enter(State.OPEN)

    def _enter(self, state: State) -> None:
        self._change(state, self.paused)
        if self.on_change is not None:
            self.on_change(state)

    def _change(self, state: State, paused: bool) -> None:
        """Enter ``state`` and ``paused``, keeping the budget clock: it runs only while the
        breaker is closed and the connection not paused."""
        was = self._running()
        self._state, self.paused = state, paused
        if was and not self._running():
            self._closed_total += self.clock() - self._closed_since
        elif self._running() and not was:
            self._closed_since = self.clock()


class CircuitBreaker:
    """A ``Breaker`` for asyncio: attempts wait in arrival order while it is not closed.

    The retry policy calls ``acquire`` before an attempt and ``release`` after it. When the
    open wait ends, the first waiter goes as the probe; if it fails, it waits again behind the
    others, so a probe is not always the same event (one event that the vendor always fails
    cannot keep the breaker open against events that would pass).
    """

    def __init__(
        self,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        self.machine = Breaker(config, clock, on_change)
        self.attempts = 0  # let go by ``acquire`` and not yet ``release``d: on their way
        # told of every pause and resume: the connection's pacer holds its queue as well
        self.on_pause: list[Callable[[bool], None]] = []
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._resumed: asyncio.Event | None = None  # made on first use, on the loop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def paused(self) -> bool:
        return self.machine.paused

    @property
    def available(self) -> bool:
        return self.machine.available

    @property
    def probe_due(self) -> bool:
        return self.machine.probe_due

    def pause(self, paused: bool) -> None:
        """Pause (no attempt goes; those under way finish) or resume (the waiters go, in
        arrival order, as far as the breaker's state lets them)."""
        self.machine.pause(paused)
        for listener in self.on_pause:
            listener(paused)
        if not paused and self._resumed is not None:
            self._resumed.set()
            self._resumed = None
        self._wake()

    async def resumed(self) -> None:
        """Return once the connection is not paused (at once when it is not)."""
        while self.paused:
            if self._resumed is None:
                self._resumed = asyncio.Event()
            await self._resumed.wait()

    def clock(self) -> float:
        """The retry budget's clock: it only runs while the breaker is closed."""
        return self.machine.closed_seconds()

    async def acquire(self) -> bool:
        """Wait until an attempt may go; True when it goes as the probe."""
        if not self._waiters:
            admission = self.machine.admit()
            if admission is not Admission.WAIT:
                self.attempts += 1
                return admission is Admission.PROBE
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # let go, then cancelled at once
                self.release(future.result(), asyncio.CancelledError())
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            raise

    def release(self, probe: bool, error: BaseException | None) -> bool:
        """How the attempt let go by ``acquire`` went: ``error`` None is a success. An
        error that is no ``DeliveryError`` (a cancellation, a defect of ours) says nothing of
        the vendor: a probe that ends so hands the probe on.

        Returns whether the attempt counts toward its event's retry budget: all do but a
        probe that failed, which only says that the connection is still failing.
        """
        self.attempts -= 1
        counts = True
        if error is None or (isinstance(error, DeliveryError) and not trips(error)):
            self.machine.succeeded(probe)
        elif isinstance(error, DeliveryError):
            self.machine.failed(probe)
            counts = not probe
        else:
            self.machine.abandoned(probe)
        self._wake()
        return counts

    def _wake(self) -> None:
        """Let go what the state allows, in arrival order, and set the timer of the wait."""
        while self._waiters:
            if self._waiters[0].done():  # cancelled
                self._waiters.popleft()
                continue
            admission = self.machine.admit()
            if admission is Admission.WAIT:
                break
            self.attempts += 1
            self._waiters.popleft().set_result(admission is Admission.PROBE)
        self._arm()

    def _arm(self) -> None:
        """While open, a timer ends the wait: it lets the probe go and shows half-open."""
        wait = self.machine.opens_in()
        if wait is None and self._timer is None:
            return  # the usual case: closed, nothing to time
        loop = asyncio.get_running_loop()
        if self._timer is not None and (wait is None or self._timer_loop is not loop):
            self._timer.cancel()
            self._timer = None
        if wait is not None and self._timer is None:
            self._timer = loop.call_later(max(0.0, wait), self._ring)
            self._timer_loop = loop

    def _ring(self) -> None:
        self._timer = None
        _ = self.machine.state  # the wait may be over: shown half-open even with no waiter
        self._wake()
