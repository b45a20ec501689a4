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


class AssetSyncError(Exception):
    """Root of every error this package raises on purpose."""


class UsageError(AssetSyncError):
    """A command-line mistake; printed as one line, exit 2."""


class ConfigError(AssetSyncError):
    """A configuration value is missing or wrong; the message starts with the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key {key!r}: {problem}")
        self.key = key
        self.problem = problem
