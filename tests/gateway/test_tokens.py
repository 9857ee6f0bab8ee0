"""The sealed routing tokens: they must hide what they carry and refuse forgeries."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwarden.gateway.tokens import IV_BYTES, MAX_TOKEN, TokenSigner

KEY = b"0123456789abcdef0123456789abcdef"
FIELDS = ("sip:pbx@10.0.0.5:5080;transport=udp", "udp", "10.0.0.5", "5080")
# What the parser hands over: text decoded from the wire with surrogateescape, so
# any surrogate is one of \udc80-\udcff; the unit separator never occurs in a field.
texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x1f")
    | st.sampled_from("\udc80\udcc3\udcff"),
    max_size=80,
)


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def test_round_trip() -> None:
    signer = TokenSigner(KEY)
    assert signer.open("contact", signer.seal("contact", FIELDS)) == FIELDS


@given(st.lists(texts, min_size=1, max_size=6))
def test_round_trip_any_fields(fields: list[str]) -> None:
    signer = TokenSigner(KEY)
    assert signer.open("contact", signer.seal("contact", fields)) == tuple(fields)


def test_deterministic_and_uri_safe() -> None:
    """Equal plaintexts give equal tokens (retransmissions stay byte-identical)."""
    signer = TokenSigner(KEY)
    token = signer.seal("contact", FIELDS)
    assert token == TokenSigner(KEY).seal("contact", FIELDS)
    assert token.replace("-", "").replace("_", "").isalnum()  # RFC 3261 paramchar
    assert signer.seal("contact", (*FIELDS[:3], "5081")) != token


def test_hides_the_plaintext() -> None:
    token = TokenSigner(KEY).seal("contact", FIELDS)
    raw = _raw(token)
    for field in FIELDS:
        assert field.encode() not in raw
        assert field not in token


def test_every_flipped_bit_is_refused() -> None:
    signer = TokenSigner(KEY)
    raw = _raw(signer.seal("route", FIELDS))
    for index in range(len(raw)):
        for bit in (0x01, 0x80):
            forged = bytearray(raw)
            forged[index] ^= bit
            assert signer.open("route", _text(bytes(forged))) is None, (index, bit)


def test_bound_to_its_purpose_and_key() -> None:
    """A Contact token cannot be replayed as a Record-Route token, nor opened by another key."""
    token = TokenSigner(KEY).seal("contact", FIELDS)
    assert TokenSigner(KEY).open("route", token) is None
    assert TokenSigner(b"another key of 32 bytes, really!").open("contact", token) is None


@pytest.mark.parametrize(
    "token",
    ["", "a", "!!!!", "A" * 21, "=" * 40, "\u00e9t\u00e9", "A" * (MAX_TOKEN + 1)],
)
def test_garbage_is_refused(token: str) -> None:
    assert TokenSigner(KEY).open("contact", token) is None


def test_truncated_and_extended_tokens_are_refused() -> None:
    signer = TokenSigner(KEY)
    raw = _raw(signer.seal("contact", FIELDS))
    assert signer.open("contact", _text(raw[:IV_BYTES])) is None
    assert signer.open("contact", _text(raw[:-1])) is None
    assert signer.open("contact", _text(raw + b"\x00")) is None


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        TokenSigner(b"too short")


def test_digest_is_keyed_and_stable() -> None:
    signer = TokenSigner(KEY)
    branch = signer.digest("INVITE", "a84b4c76e66710")
    assert branch == TokenSigner(KEY).digest("INVITE", "a84b4c76e66710")
    assert branch != TokenSigner(b"another key of 32 bytes, really!").digest(
        "INVITE", "a84b4c76e66710"
    )
    assert len(signer.digest("x", size=10)) == 14  # 10 bytes, unpadded base64
