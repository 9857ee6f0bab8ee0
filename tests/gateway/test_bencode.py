"""The bencode codec: round trips, canonical output, every malformation named, limits held."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.errors import LocalProtocolError, RemoteProtocolError
from sipwarden.gateway.bencode import (
    DEFAULT_MAX_DEPTH,
    MAX_INT_DIGITS,
    BencodeError,
    BencodeValue,
    decode,
    encode,
)

# --- strategies ----------------------------------------------------------------------------

_INTS = st.integers(min_value=-(10**MAX_INT_DIGITS) + 1, max_value=10**MAX_INT_DIGITS - 1)

#: Values exactly as decode() returns them.
values: st.SearchStrategy[BencodeValue] = st.recursive(
    _INTS | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.binary(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def _as_decoded(value: Any) -> BencodeValue:
    """What decode(encode(value)) must give for an encodable value."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list | tuple):
        return [_as_decoded(item) for item in value]
    if isinstance(value, dict):
        return {
            (key.encode("utf-8") if isinstance(key, str) else key): _as_decoded(item)
            for key, item in value.items()
        }
    assert isinstance(value, int | bytes)
    return value


#: Values with the conveniences encode() accepts: str, tuples, str keys.
encodables: st.SearchStrategy[Any] = st.recursive(
    _INTS | st.binary(max_size=20) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


# --- round trips -----------------------------------------------------------------------------


@given(values)
def test_decode_inverts_encode(value: BencodeValue) -> None:
    assert decode(encode(value)) == value


@given(values)
def test_encoding_is_canonical(value: BencodeValue) -> None:
    # Canonical bytes decode and re-encode to themselves (sorted keys, no leading zeros).
    data = encode(value)
    assert encode(decode(data)) == data


@given(encodables)
def test_str_tuples_and_str_keys_encode_as_their_bytes(value: Any) -> None:
    assert decode(encode(value)) == _as_decoded(value)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_bencode_error(data: bytes) -> None:
    # The fuzz invariant (DESIGN convention 9): nothing but RemoteProtocolError escapes.
    error: BencodeError | None = None
    try:
        value = decode(data)
    except BencodeError as exc:
        error = exc
    if error is None:
        assert decode(encode(value)) == value
        return
    assert isinstance(error, RemoteProtocolError)
    assert error.offset is not None
    assert 0 <= error.offset <= len(data)


@given(values, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_refused(value: BencodeValue, extra: bytes) -> None:
    data = encode(value)
    with pytest.raises(BencodeError):
        decode(data + extra)


@given(values)
def test_every_truncation_is_refused(value: BencodeValue) -> None:
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises(BencodeError):
            decode(data[:cut])


# --- known encodings (BEP 3 examples, rtpengine's ng examples) ------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"spam", b"4:spam"),
        ("", b"0:"),
        (3, b"i3e"),
        (-3, b"i-3e"),
        (0, b"i0e"),
        ([b"spam", b"eggs"], b"l4:spam4:eggse"),
        ({"cow": "moo", "spam": "eggs"}, b"d3:cow3:moo4:spam4:eggse"),
        ({"spam": ["a", "b"]}, b"d4:spaml1:a1:bee"),
        # keys sorted as raw bytes, whatever the insertion order
        ({"spam": 1, "cow": 2, "Z": 3}, b"d1:Zi3e3:cowi2e4:spami1ee"),
        ({"command": "ping"}, b"d7:command4:pinge"),
        ("é", b"2:\xc3\xa9"),
    ],
)
def test_known_encodings(value: Any, expected: bytes) -> None:
    assert encode(value) == expected


def test_rtpengine_reply_keys_in_any_order() -> None:
    # rtpengine does not sort its keys ("The ng Control Protocol"): accepted as sent.
    assert decode(b"d6:result2:ok3:sdp3:v=0e") == {b"result": b"ok", b"sdp": b"v=0"}
    assert decode(b"d3:sdp3:v=06:result2:oke") == {b"sdp": b"v=0", b"result": b"ok"}


# --- malformed input: the rule and the offset --------------------------------------------------


@pytest.mark.parametrize(
    ("data", "rule", "offset"),
    [
        (b"", "truncated", 0),
        (b"x", "value", 0),
        (b"i03e", "integer-canonical", 1),
        (b"i-0e", "integer-canonical", 1),
        (b"i-03e", "integer-canonical", 1),
        (b"ie", "integer", 1),
        (b"i-e", "integer", 1),
        (b"i1.5e", "integer", 1),
        (b"i+1e", "integer", 1),
        (b"i12", "truncated", 3),
        (b"i" + b"9" * (MAX_INT_DIGITS + 1) + b"e", "integer", 0),
        (b"i-" + b"9" * (MAX_INT_DIGITS + 1) + b"e", "integer", 0),
        (b"i" + b"9" * 40 + b"e", "integer", 0),
        (b"05:abcde", "string-length", 0),
        (b"5:abc", "string-truncated", 2),
        (b"5abc", "truncated", 4),
        (b"1" * 20 + b":", "string-length", 0),
        (b"l", "truncated", 1),
        (b"li1e", "truncated", 4),
        (b"d", "truncated", 1),
        (b"di1ei2ee", "dict-key", 1),
        (b"dle", "dict-key", 1),
        (b"d1:a", "truncated", 4),
        (b"d1:ai1e1:ai2ee", "dict-duplicate-key", 7),
        (b"i1ei2e", "single-value", 3),
        (b"4:spam ", "single-value", 6),
    ],
)
def test_malformed_names_rule_and_offset(data: bytes, rule: str, offset: int) -> None:
    with pytest.raises(BencodeError) as caught:
        decode(data)
    assert caught.value.rule == rule
    assert caught.value.offset == offset
    assert f"at byte {offset}" in str(caught.value)
    assert f"(rule: {rule})" in str(caught.value)


def test_integers_at_the_digit_limit() -> None:
    biggest = 10**MAX_INT_DIGITS - 1
    assert decode(encode(biggest)) == biggest
    assert decode(encode(-biggest)) == -biggest
    assert decode(b"i18446744073709551615e") == 2**64 - 1  # any 64-bit value fits


# --- limits ------------------------------------------------------------------------------------


def test_depth_limit_on_decode() -> None:
    assert decode(b"l" * DEFAULT_MAX_DEPTH + b"e" * DEFAULT_MAX_DEPTH) is not None
    deep = b"l" * (DEFAULT_MAX_DEPTH + 1) + b"e" * (DEFAULT_MAX_DEPTH + 1)
    with pytest.raises(BencodeError) as caught:
        decode(deep)
    assert caught.value.rule == "max-depth"
    assert caught.value.offset == DEFAULT_MAX_DEPTH
    with pytest.raises(BencodeError, match="max-depth"):
        decode(b"d1:ad1:ali1eeee", max_depth=2)
    assert decode(b"d1:ad1:ali1eeee", max_depth=3) == {b"a": {b"a": [1]}}


def test_a_million_brackets_cost_nothing() -> None:
    # Recursion never goes past max_depth, so no RecursionError, whatever the input.
    with pytest.raises(BencodeError, match="max-depth"):
        decode(b"l" * 60_000)


def test_size_limit_on_decode() -> None:
    data = encode(b"x" * 100)
    assert decode(data, max_size=len(data)) == b"x" * 100
    with pytest.raises(BencodeError) as caught:
        decode(data, max_size=len(data) - 1)
    assert caught.value.rule == "max-size"


def test_depth_limit_on_encode_also_stops_cycles() -> None:
    nested: list[Any] = []
    for _ in range(DEFAULT_MAX_DEPTH + 1):
        nested = [nested]
    with pytest.raises(LocalProtocolError, match="deeper"):
        encode(nested)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(LocalProtocolError, match="deeper"):
        encode(cycle)


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        None,
        True,
        {1: b"x"},
        {"a": 1, b"a": 2},
        {"ok": {"nested": [None]}},
        10**MAX_INT_DIGITS,
        {b"x"},
    ],
)
def test_what_bencode_cannot_hold_is_our_mistake(value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode(value)


def test_decoded_strings_are_bytes_and_keys_keep_arrival_order() -> None:
    value = decode(b"d1:b4:\x00\xff\r\n1:al0:ee")
    assert value == {b"b": b"\x00\xff\r\n", b"a": [b""]}
    assert isinstance(value, dict)
    assert list(value) == [b"b", b"a"]
