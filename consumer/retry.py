"""The retry policy: when to try again, how long to wait, when to give up (SPEC section 4).

Built on the ``backoff`` library with a wait generator of our own, because backoff's
``full_jitter`` would draw 0..Retry-After and retry *before* the server said to: here a
server-given wait is a floor, and jitter only spreads retries above it. The random source is
injectable, so tests are deterministic.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from contextvars import ContextVar
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

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


# When the delivery now being retried started: read by the give-up rule. Each delivery runs in
# its own task, so each sees its own value.
_STARTED: ContextVar[float] = ContextVar("asset_sync_retry_started")


class RetryPolicy:
    """Runs deliveries with retries; ``on_retry(label, error, wait)`` observes every back-off.

    The backoff-decorated function is built once, not per delivery, and only entered after a
    first attempt failed: its set-up per call costs as much as the rest of a delivery.
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
            lambda: wait_times(config.base_delay_s, config.max_delay_s, rand),
            RetryableError,
            max_tries=config.max_attempts,
            max_time=self._time_left,  # read when backoff is entered, after the 1st attempt
            jitter=None,
            giveup=self._out_of_time,
            on_backoff=self._backed_off,
            logger=None,
        )(self._once)

    async def run(self, attempt: Callable[[], Awaitable[T]], label: str = "") -> tuple[T, int]:
        """Call ``attempt`` until it returns; re-raise the last error when out of budget.

        Returns the result and how many attempts it took. A ``PermanentError``, or a
        ``RetryableError`` that outlives ``max_attempts`` or ``max_elapsed_s``, is raised with
        ``attempts`` set on it.
        """
        started = time.monotonic()
        try:  # most deliveries succeed at once: no backoff set-up for them
            return await attempt(), 1
        except RetryableError as error:
            first: RetryableError | None = error
        except DeliveryError as error:
            error.attempts = 1
            raise
        tries: list[Any] = [1, first]
        token = _STARTED.set(started)
        try:
            return await self._call(attempt, label, tries), tries[0]
        except DeliveryError as error:
            error.attempts = tries[0]
            raise
        finally:
            _STARTED.reset(token)

    @staticmethod
    async def _once(attempt: Callable[[], Awaitable[T]], _label: str, tries: list[Any]) -> T:
        """backoff's first call re-raises the first attempt's error (already made in
        ``run``), so backoff waits, counts and gives up exactly as if it had made it."""
        if tries[1] is not None:
            error, tries[1] = tries[1], None
            raise error
        tries[0] += 1
        return await attempt()

    def _time_left(self) -> float:
        return self.config.max_elapsed_s - (time.monotonic() - _STARTED.get())

    def _out_of_time(self, error: Exception) -> bool:
        """A server that asks us to wait past the deadline gets no early retry."""
        elapsed = time.monotonic() - _STARTED.get()
        return (
            isinstance(error, RetryableError)
            and error.retry_after is not None
            and elapsed + error.retry_after > self.config.max_elapsed_s
        )

    def _backed_off(self, details: Mapping[str, Any]) -> None:
        if self.on_retry is not None:
            self.on_retry(details["args"][1], details["exception"], float(details["wait"]))
