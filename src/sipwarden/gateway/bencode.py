"""A small, strict, bounded bencode codec (the dictionary format of rtpengine's ng protocol).

Bencode (BEP 3, "The BitTorrent Protocol Specification", section "bencoding") has four
kinds of value, and this module maps them to Python like so:

=================  ======================  ==============================================
bencode            encoded as              decoded to
=================  ======================  ==============================================
integer            ``i-42e``               ``int``
byte string        ``4:spam``              ``bytes`` (``str`` is accepted when encoding,
                                           as UTF-8)
list               ``l...e``               ``list``
dictionary         ``d...e``               ``dict[bytes, ...]``
=================  ======================  ==============================================

Strict where BEP 3 is strict: no leading zeros, no ``-0``, keys are byte strings, no
duplicate keys, nothing after the top-level value. Lenient in one place on purpose:
dictionary keys are accepted in any order, because rtpengine does not sort them (its ng
protocol documentation, "The ng Control Protocol": "The requirement stipulated by the
bencode standard that dictionary keys must be present in lexicographical order is not
currently honoured"). The encoder always sorts, so its output is canonical.

Bounded: a document longer than ``max_size`` bytes or nested deeper than ``max_depth`` is
refused before any work is spent on it, and an integer may have at most
:data:`MAX_INT_DIGITS` digits, so a hostile or broken peer costs a fixed amount of time
and memory. The decoder is recursive, but never deeper than ``max_depth``.

Errors: bytes that break a rule raise :class:`BencodeError` (a
:class:`~sipwarden.errors.RemoteProtocolError` naming the byte offset and the rule);
a value that cannot be encoded raises :class:`~sipwarden.errors.LocalProtocolError`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, NoReturn, TypeAlias

from sipwarden.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "MAX_INT_DIGITS",
    "BencodeError",
    "BencodeValue",
    "Encodable",
    "decode",
    "encode",
]

#: What :func:`decode` returns.
BencodeValue: TypeAlias = int | bytes | list["BencodeValue"] | dict[bytes, "BencodeValue"]

#: What :func:`encode` accepts: ``str`` is written as UTF-8, tuples as lists, and a
#: mapping's keys may be ``str`` or ``bytes``.
Encodable: TypeAlias = (
    int
    | bytes
    | str
    | Sequence["Encodable"]
    | Mapping[str, "Encodable"]
    | Mapping[bytes, "Encodable"]
)

#: Largest document :func:`decode` accepts by default: one UDP datagram's payload is
#: never longer, and an ng reply (an SDP body with a few media) is far shorter.
DEFAULT_MAX_SIZE: Final = 65_535

#: Deepest nesting accepted by default. rtpengine's deepest replies (``query``:
#: tags → medias → streams → endpoint) are 6 levels deep.
DEFAULT_MAX_DEPTH: Final = 32

#: Digits of an integer, sign not counted: enough for any 64-bit value, which is what
#: rtpengine (a C program) produces; Python's own int() limit is far higher.
MAX_INT_DIGITS: Final = 20


class BencodeError(RemoteProtocolError):
    """The bytes are not one well-formed bencode value within the limits."""

    def __init__(self, message: str, *, rule: str, offset: int) -> None:
        super().__init__(message, rule=rule, offset=offset)


# --- encoding -------------------------------------------------------------------------------


def encode(value: Encodable, *, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """The bencoding of ``value``, dictionary keys sorted (canonical, BEP 3).

    Raises :class:`~sipwarden.errors.LocalProtocolError` for a value bencode cannot hold
    (a float, ``None``, a bool, a non-string key), for two keys that are equal once
    encoded (``"a"`` and ``b"a"``), and for nesting deeper than ``max_depth``, which is
    also what stops a list that contains itself.
    """
    chunks: list[bytes] = []
    _encode_into(value, chunks, depth=0, max_depth=max_depth)
    return b"".join(chunks)


def _encode_into(value: object, chunks: list[bytes], *, depth: int, max_depth: int) -> None:
    # bool is an int subclass; bencode has no booleans and silently writing 1/0 hides bugs.
    if isinstance(value, bool):
        raise LocalProtocolError(f"bencode has no booleans: {value!r}")
    if isinstance(value, int):
        # The decoder's limit, so that whatever encode() writes, decode() reads back.
        if abs(value) >= 10**MAX_INT_DIGITS:
            raise LocalProtocolError(f"integer has more than {MAX_INT_DIGITS} digits")
        chunks.append(b"i%de" % value)
    elif isinstance(value, bytes | bytearray | memoryview | str):
        raw = _as_bytes(value)
        chunks.append(b"%d:" % len(raw))
        chunks.append(raw)
    elif isinstance(value, Mapping):
        _check_depth(depth, max_depth)
        chunks.append(b"d")
        for key, item in _sorted_items(value):
            chunks.append(b"%d:" % len(key))
            chunks.append(key)
            _encode_into(item, chunks, depth=depth + 1, max_depth=max_depth)
        chunks.append(b"e")
    elif isinstance(value, list | tuple):
        _check_depth(depth, max_depth)
        chunks.append(b"l")
        for item in value:
            _encode_into(item, chunks, depth=depth + 1, max_depth=max_depth)
        chunks.append(b"e")
    else:
        raise LocalProtocolError(f"bencode cannot hold a {type(value).__name__}: {value!r:.60}")


def _as_bytes(value: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def _check_depth(depth: int, max_depth: int) -> None:
    if depth >= max_depth:
        raise LocalProtocolError(f"bencode value nested deeper than {max_depth} levels")


def _sorted_items(mapping: Mapping[object, object]) -> list[tuple[bytes, object]]:
    items: dict[bytes, object] = {}
    for key, item in mapping.items():
        if not isinstance(key, bytes | str):
            raise LocalProtocolError(f"bencode dictionary keys are strings, not {key!r:.60}")
        raw = _as_bytes(key)
        if raw in items:
            raise LocalProtocolError(f"bencode dictionary key {raw!r:.60} given twice")
        items[raw] = item
    # BEP 3: "Keys must be strings and appear in sorted order (sorted as raw strings)".
    return sorted(items.items())


# --- decoding -------------------------------------------------------------------------------


def decode(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> BencodeValue:
    """The one bencode value that ``data`` holds, with nothing after it.

    Raises :class:`BencodeError` (offset and rule) for anything else: a document longer
    than ``max_size``, nesting deeper than ``max_depth``, truncation, a leading zero,
    ``-0``, a non-string or duplicate key, trailing bytes.
    """
    if len(data) > max_size:
        raise BencodeError(
            f"document of {len(data)} bytes is longer than the limit of {max_size}",
            rule="max-size",
            offset=max_size,
        )
    decoder = _Decoder(bytes(data), max_depth)
    value = decoder.value(depth=0)
    if decoder.pos != len(data):
        raise BencodeError(
            "bytes after the end of the value", rule="single-value", offset=decoder.pos
        )
    return value


_DIGITS: Final = frozenset(b"0123456789")
# Longest length prefix that can possibly fit: the document's size bounds every string.
_MAX_LENGTH_DIGITS: Final = len(str(DEFAULT_MAX_SIZE)) + 8


class _Decoder:
    """A cursor over one document; each method consumes one value and moves ``pos``."""

    __slots__ = ("data", "max_depth", "pos")

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.max_depth = max_depth
        self.pos = 0

    def value(self, *, depth: int) -> BencodeValue:
        lead = self._peek("value")
        if lead == ord("i"):
            return self.integer()
        if lead in _DIGITS:
            return self.string()
        if lead == ord("l"):
            return self.list_value(depth=depth)
        if lead == ord("d"):
            return self.dict_value(depth=depth)
        raise BencodeError(
            f"unexpected byte {bytes([lead])!r}: a value starts with i, l, d or a digit",
            rule="value",
            offset=self.pos,
        )

    def integer(self) -> int:
        # BEP 3: "i" digits "e"; "i-0e is invalid. All encodings with a leading zero,
        # such as i03e, are invalid, other than i0e".
        start = self.pos
        end = self.data.find(b"e", start + 1, start + MAX_INT_DIGITS + 3)
        if end == -1:
            self._missing_end(start, MAX_INT_DIGITS + 3, "integer")
        body = self.data[start + 1 : end]
        digits = body[1:] if body.startswith(b"-") else body
        if not digits or not set(digits) <= _DIGITS:
            raise BencodeError(
                f"integer {body!r:.30} is not [-]digits", rule="integer", offset=start + 1
            )
        if len(digits) > MAX_INT_DIGITS:
            raise BencodeError("integer is too long", rule="integer", offset=start)
        if digits.startswith(b"0") and (len(digits) > 1 or body.startswith(b"-")):
            raise BencodeError(
                f"integer {body!r} has a leading zero or is -0",
                rule="integer-canonical",
                offset=start + 1,
            )
        self.pos = end + 1
        return int(body)

    def string(self) -> bytes:
        # BEP 3: length prefix (base ten ASCII) ":" bytes.
        start = self.pos
        colon = self.data.find(b":", start, start + _MAX_LENGTH_DIGITS + 1)
        if colon == -1:
            self._missing_end(start, _MAX_LENGTH_DIGITS + 1, "string-length", b":")
        prefix = self.data[start:colon]
        if not set(prefix) <= _DIGITS:
            raise BencodeError(
                f"string length {prefix!r:.30} is not digits", rule="string-length", offset=start
            )
        if prefix.startswith(b"0") and len(prefix) > 1:
            raise BencodeError(
                f"string length {prefix!r} has a leading zero", rule="string-length", offset=start
            )
        length = int(prefix)
        end = colon + 1 + length
        if end > len(self.data):
            raise BencodeError(
                f"string of {length} bytes runs past the end of the document",
                rule="string-truncated",
                offset=colon + 1,
            )
        self.pos = end
        return self.data[colon + 1 : end]

    def list_value(self, *, depth: int) -> list[BencodeValue]:
        self._enter(depth)
        items: list[BencodeValue] = []
        while self._peek("list") != ord("e"):
            items.append(self.value(depth=depth + 1))
        self.pos += 1
        return items

    def dict_value(self, *, depth: int) -> dict[bytes, BencodeValue]:
        self._enter(depth)
        items: dict[bytes, BencodeValue] = {}
        while (lead := self._peek("dictionary")) != ord("e"):
            key_offset = self.pos
            if lead not in _DIGITS:
                raise BencodeError(
                    "dictionary key is not a byte string", rule="dict-key", offset=key_offset
                )
            key = self.string()
            if key in items:
                raise BencodeError(
                    f"dictionary key {key!r:.40} given twice",
                    rule="dict-duplicate-key",
                    offset=key_offset,
                )
            items[key] = self.value(depth=depth + 1)
        self.pos += 1
        return items

    def _enter(self, depth: int) -> None:
        if depth >= self.max_depth:
            raise BencodeError(
                f"nested deeper than {self.max_depth} levels", rule="max-depth", offset=self.pos
            )
        self.pos += 1  # the "l" or "d"

    def _peek(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise BencodeError(f"document ends inside a {what}", rule="truncated", offset=self.pos)
        return self.data[self.pos]

    def _missing_end(self, start: int, window: int, rule: str, end: bytes = b"e") -> NoReturn:
        # Truncation and an over-long field both end up here; say which one it was.
        if start + window >= len(self.data):
            raise BencodeError(
                f"document ends before the {end.decode()!r} of a {rule}",
                rule="truncated",
                offset=len(self.data),
            )
        raise BencodeError(f"{rule} is too long", rule=rule, offset=start)
