"""consumer/json_codec.py gives the standard library's answers, only faster."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import json_codec
from consumer.delivery.http import json_body
from consumer.events import ErrorKind, Rejection, parse_record
from tests.samples import event_for


def test_an_integer_beyond_64_bits_keeps_every_digit() -> None:
    big = 123456789012345678901234567890
    text = f'{{"serial": {big}, "small": -9223372036854775808}}'.encode()
    assert json_codec.loads(text) == {"serial": big, "small": -(2**63)}
    assert json_codec.dumps({"serial": big}) == f'{{"serial":{big}}}'.encode()


def test_an_event_with_a_long_integer_is_delivered_with_it_unchanged() -> None:
    event = event_for("trelica")
    event["data"]["changes"]["customFields"] = {"serial": 2**70}
    parsed = parse_record(json.dumps(event).encode())
    assert not isinstance(parsed, Rejection)
    assert parsed.data["changes"]["customFields"]["serial"] == 2**70
    assert b'"serial":1180591620717411303424' in json_body(parsed.data["changes"])


@pytest.mark.parametrize(
    "text",
    [
        b"-9999999999999999999",
        b"[18446744073709551616]",
        b'{"n":\n -9223372036854775809}',
        b'{"n":[1,-12345678901234567890]}',
        b"0.12345678901234567890123",
        b"1e-1234567890123456789",
        b"1E+1234567890123456789",
        b"1e0000000000000000000005",
        b"[1E1234567890123456789]",
    ],
)
def test_a_number_of_19_digits_or_more_anywhere_reads_as_the_standard_library_reads_it(
    text: bytes,
) -> None:
    ours, theirs = json_codec.loads(text), json.loads(text)
    assert ours == theirs and type(ours) is type(theirs)


def test_a_long_run_of_digits_inside_a_string_does_not_need_the_standard_library() -> None:
    # Webflow item ids are 24 digits long in the samples and the bench: not numbers
    for text in [b'{"asset_id": "000000000000000000000007"}', b'["x1234567890123456789012"]']:
        assert not json_codec.has_long_number(text)
    assert json_codec.has_long_number(b'{"n": 1234567890123456789}')
    assert json_codec.has_long_number(b"1234567890123456789")


# the rule has_long_number answers, as a regular expression
LONG_NUMBER = re.compile(rb'(?<![\w"])\d{19}')


# pieces that make the rule's cases: runs of 18, 19 and 20 digits after a quote, a letter,
# "_", a sign, a point, an exponent, a non-ASCII letter, or at the start
PIECES = ["1234567890123456789", "123456789012345678", "0", '"', "a", "_", " ", "-", ".", "e", "é"]


@given(
    st.binary(max_size=40)
    | st.lists(st.sampled_from(PIECES), max_size=8).map("".join).map(str.encode)
)
def test_has_long_number_answers_as_the_regular_expression_of_the_rule(text: bytes) -> None:
    assert json_codec.has_long_number(text) == (LONG_NUMBER.search(text) is not None)


@pytest.mark.parametrize(
    "text",
    [b'{"a": NaN}', b'{"a": Infinity}', b"[1, 2", b'{"a": 1,}', b"\xef\xbb\xbf{}", b""],
)
def test_what_the_standard_library_refuses_is_refused_with_its_message(text: bytes) -> None:
    with pytest.raises(ValueError) as theirs:
        json.loads(text.decode(), parse_constant=json_codec._no_constants)
    with pytest.raises(ValueError) as ours:
        json_codec.loads(text)
    assert str(ours.value) == str(theirs.value)


def test_invalid_utf8_is_reported_at_its_byte() -> None:
    parsed = parse_record(b'{"a": "\xff"}')
    assert isinstance(parsed, Rejection) and parsed.kind is ErrorKind.INVALID_UTF8
    assert "byte 7" in parsed.message()


def test_what_only_the_standard_library_accepts_is_still_accepted() -> None:
    # a lone surrogate escape: orjson refuses it, json.loads (and so asset-sync) never did
    assert json_codec.loads(b'{"a": "\\ud800"}') == {"a": "\ud800"}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_json_value_round_trips_as_the_standard_library_reads_it(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert json_codec.loads(text.encode("utf-8", "surrogatepass")) == json.loads(text)
    assert json.loads(json_codec.dumps(value)) == json.loads(text)
