"""``asset-sync validate FILE…``: check events in files against ``schemas/``.

A file holds one JSON event (pretty-printed or not) or JSON Lines. Every error is printed as
``file:line: pointer: message``; the exit code says whether all were valid (0), any was
invalid (1), or a file could not be read (2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from consumer.events import Rejection, parse_record
from consumer.schemas import default_schemas

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def iter_events(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line number, raw event)``: the whole file if it is one JSON value, else lines."""
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        for number, line in enumerate(data.splitlines(), start=1):
            if line.strip():
                yield number, line
        return
    yield 1, data


def validate_files(paths: list[Path], out: TextIO) -> int:
    schemas = default_schemas()
    checked = invalid = unreadable = 0
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror or exc}", file=out)
            unreadable += 1
            continue
        for line, raw in iter_events(data):
            checked += 1
            result = parse_record(raw, None, schemas)
            if isinstance(result, Rejection):
                invalid += 1
                for error in result.errors:
                    print(f"{path}:{line}: {error}", file=out)
    print(f"{checked} event(s) checked, {invalid} invalid", file=out)
    if unreadable:
        return EXIT_UNREADABLE
    return EXIT_INVALID if invalid else EXIT_OK
