"""The JSON log line (consumer/telemetry/logs.py): what the formatter writes, now that it is
paid once per delivered event (orjson, the timestamp's second formatted once)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.telemetry.logs import LOGGER_NAME, JsonFormatter, get_logger, setup_logging


def line(
    formatter: JsonFormatter, msg: str = "m", created: float | None = None, **fields: object
) -> tuple[str, dict[str, Any]]:
    record = logging.LogRecord(LOGGER_NAME, logging.INFO, __file__, 1, msg, None, None)
    if created is not None:
        record.created, record.msecs = created, (created - int(created)) * 1000
    record.fields = fields
    text = formatter.format(record)
    return text, json.loads(text)


def expected_ts(created: float) -> str:
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(created)))
    return f"{second}.{int((created - int(created)) * 1000):03d}Z"


def test_each_line_has_the_time_of_its_record_across_seconds() -> None:
    formatter = JsonFormatter()
    for created in (1_700_000_000.123, 1_700_000_000.987, 1_700_000_001.004, 1_699_999_999.5):
        assert line(formatter, created=created)[1]["ts"] == expected_ts(created)


def test_values_json_has_no_type_for_are_written_as_text() -> None:
    _, parsed = line(JsonFormatter(), path=Path("/tmp/x"), error=ValueError("bad"))
    assert parsed["path"] == "/tmp/x"
    assert parsed["error"] == "bad"


def test_an_integer_beyond_64_bits_keeps_its_digits() -> None:
    _, parsed = line(JsonFormatter(), offset=2**70)
    assert parsed["offset"] == 2**70


@pytest.mark.parametrize("msg", ["café ✓", "lone \ud800 surrogate", 'quote " and \\ and \n'])
def test_any_text_makes_one_line_of_json_that_reads_back(msg: str) -> None:
    text, parsed = line(JsonFormatter(), msg=msg)
    assert "\n" not in text
    assert parsed["msg"] == msg


@pytest.fixture
def logging_globals() -> Iterator[None]:
    saved = (logging._srcfile, logging.logThreads, logging.logProcesses)
    saved_mp, root, ours = logging.logMultiprocessing, logging.getLogger(), get_logger()
    handlers, levels = root.handlers[:], (root.level, ours.level)
    try:
        yield
    finally:
        logging._srcfile, logging.logThreads, logging.logProcesses = saved
        logging.logMultiprocessing = saved_mp
        root.handlers[:] = handlers
        root.setLevel(levels[0])
        ours.setLevel(levels[1])


def test_records_skip_the_callers_stack_walk(logging_globals: None) -> None:
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return False  # not written

    logger = setup_logging("INFO")
    logger.addFilter(keep)
    logger.info("x")
    logger.removeFilter(keep)
    [record] = seen
    assert (record.lineno, record.threadName, record.processName) == (0, None, None)
