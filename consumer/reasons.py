"""Why an event was dead-lettered: the ``dlq.reason`` values of SPEC section 5."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    UNKNOWN_VENDOR = "unknown_vendor"
    UNKNOWN_CONNECTION = "unknown_connection"
    VENDOR_REJECTED = "vendor_rejected"
    AUTH_FAILED = "auth_failed"
    RETRIES_EXHAUSTED = "retries_exhausted"
    EXPIRED = "expired"  # parked longer than parking.max_age_s
    INTERNAL_ERROR = "internal_error"  # a bug of ours: dead-lettered, never a stuck offset
