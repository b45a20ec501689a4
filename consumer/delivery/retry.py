"""The retry policy: when to try again, how long to wait, when to give up (SPEC section 4).

Built on the ``backoff`` library with a wait generator of our own, because backoff's
``full_jitter`` would draw 0..Retry-After and retry *before* the server said to: here a
server-given wait is a floor, and jitter only spreads retries above it. The random source is
injectable, so tests are deterministic.

Each attempt can wait at a ``Gate`` first (the connection's circuit breaker,
consumer/delivery/breaker.py); the budget then counts only attempts, and time, of a connection
deemed working.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from contextvars import ContextVar
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import backoff

from consumer.config import RetryConfig
from consumer.errors import DeliveryError, RetryableError

T = TypeVar("T")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def wait_times(
    base_delay_s: float, max_delay_s: float, rand: Callable[[], float] = random.random
) -> Generator[float, RetryableError | None, None]:
    """Exponential backoff with full jitter; a server-given wait (Retry-After) is a floor."""
    error = yield 0.0  # backoff primes the generator with send(None)
    attempt = 0
    while True:
        ceiling = min(max_delay_s, base_delay_s * 2**attempt)
        floor = error.retry_after if error is not None and error.retry_after else None
        # Full jitter below the ceiling; above a server's floor, by at most one base delay.
        error = yield (
            rand() * ceiling if floor is None else floor + rand() * min(base_delay_s, ceiling)
        )
        attempt += 1


class Gate(Protocol):
    """What an attempt waits for before it goes (a connection's circuit breaker), and the
    clock its time budget is read on (one that stands still while attempts wait)."""

    async def acquire(self) -> bool:
        """Wait until an attempt may go; True when it goes as a probe."""
        ...

    def release(self, probe: bool, error: BaseException | None) -> bool:
        """How the attempt went (``error`` None: it succeeded); False when it does not count
        toward the budget (a probe that found the connection still failing)."""
        ...

    def clock(self) -> float: ...


class _NoGate:
    """No gate: attempts go at once, and the budget is wall-clock time."""

    async def acquire(self) -> bool:
        return False

    def release(self, probe: bool, error: BaseException | None) -> bool:
        return True

    clock = staticmethod(time.monotonic)


NO_GATE = _NoGate()

# The delivery now being retried: its gate and when it started on the gate's clock. Read by
# the give-up rule; each delivery runs in its own task, so each sees its own value.
_STARTED: ContextVar[tuple[Gate, float]] = ContextVar("asset_sync_retry_started")


class RetryPolicy:
    """Runs deliveries with retries; ``on_retry(label, error, wait)`` observes every back-off.

    The backoff-decorated function is built once, not per delivery, and only entered after a
    first attempt failed: its set-up per call costs as much as the rest of a delivery.

    With a ``Gate``, each attempt first waits for it, and the budget counts only what the
    connection failed while it was deemed working: ``max_elapsed_s`` is read on the gate's
    clock (a breaker's stands still while it is open), and a probe that fails like the
    attempts before it costs no attempt and no back-off: the attempt waits at the gate again.
    backoff's own ``max_time`` reads the wall clock, so the time budget is kept here instead
    (``giveup`` and the cap of each wait).
    """

    def __init__(
        self,
        config: RetryConfig,
        rand: Callable[[], float] = random.random,
        on_retry: Callable[[str, RetryableError, float], None] | None = None,
    ) -> None:
        self.config = config
        self.rand = rand
        self.on_retry = on_retry
        self._call = backoff.on_exception(
            lambda: _capped(wait_times(config.base_delay_s, config.max_delay_s, rand), self),
            RetryableError,
            max_tries=config.max_attempts,
            jitter=None,
            giveup=self._out_of_time,
            on_backoff=self._backed_off,
            logger=None,
        )(self._once)

    async def run(
        self, attempt: Callable[[], Awaitable[T]], label: str = "", gate: Gate = NO_GATE
    ) -> tuple[T, int]:
        """Call ``attempt`` until it returns; re-raise the last error when out of budget.

        Returns the result and how many attempts it took. A ``PermanentError``, or a
        ``RetryableError`` that outlives ``max_attempts`` or ``max_elapsed_s``, is raised with
        ``attempts`` set on it.
        """
        started = gate.clock()
        try:  # most deliveries succeed at once: no backoff set-up for them
            return await self._gated(attempt, gate), 1
        except RetryableError as error:
            first: RetryableError | None = error
        except DeliveryError as error:
            error.attempts = 1
            raise
        tries: list[Any] = [1, first]
        token = _STARTED.set((gate, started))
        try:
            return await self._call(attempt, label, tries), tries[0]
        except DeliveryError as error:
            error.attempts = tries[0]
            raise
        finally:
            _STARTED.reset(token)

    @staticmethod
    async def _gated(attempt: Callable[[], Awaitable[T]], gate: Gate) -> T:
        """One attempt that counts: waits at the gate first, and again after each failed
        probe (the connection is still failing: not this event's attempt to spend)."""
        while True:
            probe = await gate.acquire()
            try:
                result = await attempt()
            except BaseException as error:
                if not gate.release(probe, error) and isinstance(error, RetryableError):
                    continue
                raise
            gate.release(probe, None)
            return result

    @classmethod
    async def _once(cls, attempt: Callable[[], Awaitable[T]], _label: str, tries: list[Any]) -> T:
        """backoff's first call re-raises the first attempt's error (already made in
        ``run``), so backoff waits, counts and gives up exactly as if it had made it."""
        if tries[1] is not None:
            error, tries[1] = tries[1], None
            raise error
        tries[0] += 1
        return await cls._gated(attempt, _STARTED.get()[0])

    def time_left(self) -> float:
        """Of the budget of the delivery being retried (read by the wait generator)."""
        gate, started = _STARTED.get()
        return self.config.max_elapsed_s - (gate.clock() - started)

    def _out_of_time(self, error: Exception) -> bool:
        """Out of time, or a server asks us to wait past the deadline: no early retry."""
        left = self.time_left()
        retry_after = error.retry_after if isinstance(error, RetryableError) else None
        return left <= 0 or (retry_after is not None and retry_after > left)

    def _backed_off(self, details: Mapping[str, Any]) -> None:
        if self.on_retry is not None:
            self.on_retry(details["args"][1], details["exception"], float(details["wait"]))


def _capped(
    waits: Generator[float, RetryableError | None, None], policy: RetryPolicy
) -> Generator[float, RetryableError | None, None]:
    """``waits``, none past the end of the time budget."""
    error = yield next(waits)
    while True:
        error = yield max(0.0, min(waits.send(error), policy.time_left()))
