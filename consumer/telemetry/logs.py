"""Structured logs: one JSON object per line on stderr, level from the configuration.

Fields passed with ``extra={"fields": {...}}`` are merged into the object. Nothing here knows
a secret: callers log event ids, vendors, outcomes and short, redacted error texts.

A line about one event (its fields have ``event_id``) also carries that event's ``asset_id``
and ``source``, so that an operator can follow an asset, or a producer, through the logs. They
are added here, from the event the current task works on (``about_event``), rather than by
every caller: the pipeline, freshness and whatever logs during a delivery get them alike.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar, Token
from typing import Any, Protocol

from consumer import json_codec

LOGGER_NAME = "asset_sync"


class AboutEvent(Protocol):
    """What a log line says about an event besides its id (``consumer.events.Event``)."""

    @property
    def id(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def asset_id(self) -> str: ...


# The event the current task delivers. A context variable, so that each asyncio task (and
# thread) sees its own; a task started during a delivery (a batch's request) inherits it, which
# is why a line gets it only when the line names that same event id.
_EVENT: ContextVar[AboutEvent | None] = ContextVar("asset_sync_log_event", default=None)


def about_event(event: AboutEvent) -> Token[AboutEvent | None]:
    """Lines this task logs about ``event`` from now on carry its asset id and source; give the
    token back to ``reset_event`` when done with it (a plain set and reset, not a context
    manager: this runs once per event, on the pipeline's hot path)."""
    return _EVENT.set(event)


def reset_event(token: Token[AboutEvent | None]) -> None:
    _EVENT.reset(token)


def _identity(event_id: object) -> tuple[str | None, str | None]:
    """The asset id and source of ``event_id``: null when it is not the current event's (an
    invalid event's, whose asset and source are not known for sure)."""
    event = _EVENT.get()
    if event is None or event.id != event_id:
        return None, None
    return event.asset_id, event.source


class JsonFormatter(logging.Formatter):
    """A line per record, cheaply: with the default level every delivered event logs one, so
    what a line costs is paid per event (orjson, the second's text formatted once)."""

    _second: tuple[int, str] = (-1, "")  # one attribute: threads share the formatter

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached, text = self._second
        if cached != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            if "event_id" in fields:  # about one event: asset id and source beside its id
                entry["event_id"] = fields["event_id"]
                entry["asset_id"], entry["source"] = _identity(fields["event_id"])
            entry.update(fields)  # a caller's own asset_id or source wins
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        try:
            return json_codec.dumps(entry, default=str).decode()
        except UnicodeEncodeError:  # a lone surrogate: escaped, as the standard library does
            return json.dumps(entry, default=str)


def setup_logging(level: str = "INFO") -> logging.Logger:
    # What no line carries (logging HOWTO, "Optimization"): the caller's file and line (a
    # stack walk per record), thread, process and multiprocessing names.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries: warnings and up
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    return logger


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
