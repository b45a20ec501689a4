"""The one error tree of asset-sync.

    AssetSyncError
    ├── UsageError              a person's mistake on the command line (missing file, bad flag)
    ├── ConfigError             a bad configuration; names the key (SPEC section 3)
    └── DeliveryError           raised inside a dispatch attempt, read by the retry policy
        ├── RetryableError      429, 409, 5xx, timeouts, connection errors
        ├── AuthExpiredError    401: refresh the connection's token once, then retry
        └── PermanentError      other 4xx, EnOS non-zero codes: dead-letter at once

Invalid events are not exceptions: the validator returns them as values (``Rejection``).
Third-party errors (aiohttp, kafka-python, jsonschema) are translated into this tree at the
boundary where they occur, so nothing above that boundary sees a foreign exception type.
"""

from __future__ import annotations

from consumer.reasons import Reason


class AssetSyncError(Exception):
    """Root of every error this package raises on purpose."""


class UsageError(AssetSyncError):
    """A command-line mistake; printed as one line, exit 2."""


class ConfigError(AssetSyncError):
    """A configuration value is missing or wrong; the message starts with the key."""

    def __init__(self, key: str, problem: str, *, what: str = "config key") -> None:
        super().__init__(f"{what} {key!r}: {problem}")
        self.key = key
        self.problem = problem


class DeliveryError(AssetSyncError):
    """An attempt to deliver failed; the subclass says what the retry policy does next.

    Messages are short, one line, and never carry a credential: they end up in dead-letter
    headers and logs.
    """

    retry_reason = "error"

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.attempts = 0  # set by the retry policy when it gives up


class RetryableError(DeliveryError):
    """429, 409, 5xx, timeouts, connection errors: back off and try again."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retry_reason: str = "server_error",
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.retry_reason = retry_reason


class AuthExpiredError(DeliveryError):
    """401 (or EnOS token codes): refresh the token once and retry at once."""

    retry_reason = "auth_refresh"

    def __init__(self, message: str, *, status: int | None = None, token: str = "") -> None:
        super().__init__(message, status=status)
        self.token = token


class PermanentError(DeliveryError):
    """The vendor refused the update for good: dead-letter now."""

    reason = Reason.VENDOR_REJECTED


class AuthFailedError(PermanentError):
    """Credentials are refused even after a refresh."""

    reason = Reason.AUTH_FAILED
