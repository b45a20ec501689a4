"""JSON on the hot path: every event is decoded once and every request body encoded once.

orjson (Rust) does both at a fraction of the standard library's cost, and its decoder reuses
one string object per repeated key, so thousands of buffered events do not each carry their
own copies of "asset_id", "changes" and the field names. It is used only where it gives the
same answer as the standard library; everywhere else the standard library decides, so what is
accepted, refused and sent is what it was:

- orjson turns an integer beyond 64 bits into a float (a silent loss of digits); a text where a
  run of 19 or more digits starts a number (not inside a word or right after a quote: ids such
  as Webflow's 24-digit ones are strings) is decoded by the standard library instead, and a
  value holding such an integer is encoded by it;
- a text orjson refuses is decoded again by the standard library (it accepts a few that orjson
  does not, such as lone surrogate escapes, and its error messages are the ones users see).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

# 2**63 has 19 digits: shorter integers fit orjson's. An integer part's digits follow a
# structural character, whitespace or a sign, a fraction's a point; inside strings a run
# mostly follows a letter, a digit or a quote, and is left to orjson. So is an exponent's
# run right after its "e" (orjson reads it as the standard library does, or refuses it).
# The regular expression ``(?<![\w"])\d{19}`` says it, but searching every position of
# every event with it cost ~4 µs; in C it is a fifth of that: each byte becomes its class
# (a digit "0", a letter, "_" or a quote "a", anything else " "), and a run starts a number
# where " " is followed by 19 "0"s, or the text begins with them.
_CLASSES = (
    bytes(
        ord("0") if chr(b).isdigit() else ord("a") if chr(b).isalpha() or chr(b) in '_"' else 32
        for b in range(128)
    )
    + b" " * 128
)
_RUN = b" " + b"0" * 19


def has_long_number(value: bytes) -> bool:
    """Whether a run of 19 or more digits starts a number in ``value``: one orjson may not
    read as the standard library does."""
    classes = value.translate(_CLASSES)
    return _RUN in classes or classes.startswith(_RUN[1:])


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(value: bytes) -> Any:
    """Decode strict JSON (NaN and Infinity refused). Raises ``UnicodeDecodeError``,
    ``ValueError`` or ``RecursionError`` exactly as ``json.loads`` of the UTF-8 text would."""
    if not has_long_number(value):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass  # the standard library gives the verdict and its message
    return json.loads(value.decode("utf-8"), parse_constant=_no_constants)


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact UTF-8 JSON, non-ASCII characters as themselves; ``default`` turns what JSON
    has no type for into something it has, as in ``json.dumps``."""
    try:
        return orjson.dumps(value, default=default)
    except TypeError:  # an integer beyond 64 bits
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=default)
        return text.encode("utf-8")
