"""Parse and rewrite SDP bodies (RFC 8866, which obsoletes RFC 4566; same section numbers).

The gateway reads what a call offers (media, addresses, SRTP) and rewrites it
for topology hiding and media anchoring; the monitor only reads. Both go
through :func:`parse_sdp`::

    sd = parse_sdp(body)                       # strict: the gateway
    if not sd.offers_srtp():
        ...                                    # SRTP policy
    sd.set_origin(username="-", address="203.0.113.7")
    sd.set_connection_address("203.0.113.7")
    sd.media[0].set_port(40000)
    out = sd.serialize()

Design choices, each for a reason:

* **Raw lines are kept.** Every line is stored as its text and its own line
  end, so an unchanged description serialises byte for byte (a signature or
  hash over the body survives), and an edit regenerates only the lines it
  touches. CRLF and bare LF both end a record (RFC 4566 5: "a parser SHOULD be
  tolerant and also accept records terminated with a single newline"); each
  line keeps the one it came with, and lines the editor adds take the line end
  of the first line.
* **Decoding is ISO-8859-1 (latin-1).** SDP is bytes: ``s=`` and ``i=`` may be
  in the charset that ``a=charset`` names (RFC 4566 6), so the body need not
  be UTF-8. Latin-1 maps each byte to one code point, which makes decoding
  total, byte offsets equal to string offsets, and ``value.encode("latin-1")``
  the exact original bytes. Every ``str`` this module returns is such a
  "latin-1 view" and every ``str`` its editing methods accept must be one too
  (code points up to U+00FF); pass ``bytes`` to text setters to insert other
  encodings verbatim, and use :meth:`SessionDescription.decode_text` to show
  a text field to a human. Unlike ``surrogateescape``, a latin-1 view never
  holds a lone surrogate, so an attacker's bytes cannot make a log write fail.
* **Editing is in place.** Editing methods mutate the description, mark it
  dirty and return ``None`` (the ``remove_*`` methods return how many lines
  went). They validate their arguments (:class:`~sipwarden.errors.LocalProtocolError`
  on misuse) so an edit can never inject a line end or produce a line that a
  strict parse would reject.
* **Strict and lenient.** Strict mode (the gateway) raises
  :class:`~sipwarden.errors.RemoteProtocolError` for a broken rule, naming it
  (``RULE_*`` below) and its byte offset in the body. It checks: ``v=0`` first;
  every line ``<letter>=<value>`` with a known letter and no NUL or stray CR;
  the RFC 4566 5 field order; ``o=``, ``s=`` and a ``t=`` present; the ``o=``,
  ``c=``, ``m=``, ``t=``, ``b=`` grammars, attribute names, ports 0-65535;
  ``c=``/``o=`` address types (:data:`CONNECTION_TYPES`) and addresses (an
  ``IP4`` address is a dotted quad or a host name, multicast needs a TTL);
  a ``c=`` for every media description; at most ``max_lines`` lines. The
  checks run in passes (line form, order, field contents), so with several
  problems the one raised is not always the first by position. Lenient mode
  (the monitor) records the same
  errors as strings in :attr:`SessionDescription.defects`, keeps the offending
  lines and goes on; it still raises when the body is not SDP at all (empty,
  or its first line is not a ``<letter>=`` record of a known type) and when it
  exceeds ``max_lines``. A few deviations seen in the wild are tolerated in
  both modes and only noted in ``defects``: an empty ``s=`` (RFC 3264's own
  examples have one) and blank lines after the last record.
* **Parsing is eager but shallow, and mostly C-speed.** The lines become
  tuples in one ``zip``, one regex over the string of type letters checks the
  field order, one scan of the body finds lines that need a closer look, and
  Python code runs per line only for ``v=``, ``o=``, ``s=``, ``c=``, ``m=``,
  ``t=`` and ``b=`` (a typical 15-line offer parses in ~15 us). Attribute
  values are only split on access (crypto keys, fingerprints, rtcp), and the
  helpers skip malformed ones rather than raise.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from typing import Final, NamedTuple

from sipwarden.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CONNECTION_TYPES",
    "DEFAULT_MAX_LINES",
    "DIRECTIONS",
    "Attribute",
    "Connection",
    "Crypto",
    "Fingerprint",
    "KeyParam",
    "MediaDescription",
    "Origin",
    "Rtcp",
    "SessionDescription",
    "parse_sdp",
]

# A WebRTC offer with audio, video and data runs to ~120 lines and a large
# simulcast offer to a few hundred; 1024 bounds the work a hostile body costs.
DEFAULT_MAX_LINES: Final = 1024

# <nettype> <addrtype> pairs a strict parse accepts in o= and c= (RFC 4566 5.7,
# the IANA "addrtype" registry): IN with IPv4/IPv6, and RFC 7195 circuit-switched
# bearers. Other registered pairs (RFC 3108 ATM) never reach a SIP gateway.
CONNECTION_TYPES: Final = frozenset({("IN", "IP4"), ("IN", "IP6"), ("PSTN", "E164")})

# RFC 3264 5.1 / RFC 4566 6: the direction attributes; sendrecv is the default.
DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")

# The rules broken, named as in RemoteProtocolError.rule.
RULE_NOT_SDP: Final = "RFC 4566 5 session description"
RULE_LINE: Final = "RFC 4566 5 <type>=<value>"
RULE_TYPE: Final = "RFC 4566 5 type letter"
RULE_ORDER: Final = "RFC 4566 5 field order"
RULE_BYTES: Final = "RFC 4566 9 byte-string"
RULE_MAX_LINES: Final = "max_lines"
RULE_V: Final = "RFC 4566 5.1 v="
RULE_O: Final = "RFC 4566 5.2 o="
RULE_S: Final = "RFC 4566 5.3 s="
RULE_C: Final = "RFC 4566 5.7 c="
RULE_B: Final = "RFC 4566 5.8 b="
RULE_T: Final = "RFC 4566 5.9 t="
RULE_A: Final = "RFC 4566 5.13 a="
RULE_M: Final = "RFC 4566 5.14 m="

# --- grammar (RFC 4566 9) -----------------------------------------------------

# token-char = %x21 / %x23-27 / %x2A-2B / %x2D-2E / %x30-39 / %x41-5A / %x5E-7E
# Note that "/" is not a token-char: proto = token *("/" token) splits on it.
_T = r"[!#-'*+\-.0-9A-Z^-~]+"
_TOKEN = re.compile(_T)
# non-ws-string = 1*(VCHAR/%x80-FF); written without \S because Python's \S
# treats U+0085 and U+00A0 (bytes 0x85, 0xA0 in a latin-1 view) as spaces.
_NWS = r"[!-~\x80-\xff]+"
_NON_WS = re.compile(_NWS)
# origin-field: username SP sess-id SP sess-version SP nettype SP addrtype SP unicast-address
_ORIGIN = re.compile(rf"({_NWS}) ([0-9]+) ([0-9]+) ({_T}) ({_T}) ({_NWS})")
# media-field: media SP port ["/" integer] SP proto 1*(SP fmt)
_MEDIA = re.compile(rf"({_T}) ([0-9]+)(?:/([0-9]+))? ({_T}(?:/{_T})*)((?: {_T})+)")
_PROTO = re.compile(rf"{_T}(?:/{_T})*")
# connection-field: nettype SP addrtype SP connection-address
_CONNECTION = re.compile(rf"({_T}) ({_T}) ({_NWS})")
# time-fields: start-time SP stop-time (NTP seconds, 0 for unbounded)
_TIME = re.compile(r"[0-9]+ [0-9]+")
# bandwidth-fields: bwtype ":" bandwidth
_BANDWIDTH = re.compile(rf"{_T}:[0-9]+")
# IP4-address; decimal-uchar has no leading zeros (0177 would be ambiguous).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
# FQDN: RFC 4566 9 allows 4*(alpha-numeric / "-" / "."); we also ask for a
# letter (RFC 1123 2.1: no all-numeric top label), so "300.1.1.1" is not
# accepted as a host name in place of an invalid IPv4 address.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_FQDN = re.compile(rf"(?=[0-9.\-]*[A-Za-z]){_LABEL}(?:\.{_LABEL})*\.?")
# RFC 4568 9.1: crypto-suite = 1*(ALPHA / DIGIT / "_"); tag = 1*9DIGIT
_CRYPTO_SUITE = re.compile(r"[A-Za-z0-9_]+")
_CRYPTO_TAG = re.compile(r"[0-9]{1,9}")
# RFC 8122 5 (was RFC 4572 5): fingerprint = 2UHEX *(":" 2UHEX); lower-case hex
# is accepted because deployed stacks send it.
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*")
_BLANKS = re.compile(r"[ \t]+")
# What a text value may not hold: NUL, CR, LF (byte-string), or anything
# outside the latin-1 view.
_BAD_TEXT = re.compile(r"[\x00\r\n]|[^\x00-\xff]")

_KNOWN_TYPES: Final = frozenset("vosiuepcbtrzkam")
# RFC 4566 5: "the fields MUST appear in the order shown". Ranks for the
# session part and for a media description; repeatable types may follow
# themselves. "t" may also follow "r" (a new time description).
_SESSION_RANK: Final = {
    "v": 0, "o": 1, "s": 2, "i": 3, "u": 4, "e": 5, "p": 6, "c": 7,
    "b": 8, "t": 9, "r": 10, "z": 11, "k": 12, "a": 13,
}  # fmt: skip
_SESSION_REPEATABLE: Final = frozenset("epbtra")
_MEDIA_RANK: Final = {"m": 0, "i": 1, "c": 2, "b": 3, "k": 4, "a": 5}
_MEDIA_REPEATABLE: Final = frozenset("cba")
# Optional fields a caller may strip (topology hiding: e=, p=, u=, i= can
# name people and hosts); required or structural ones may not be removed.
_REMOVABLE_SESSION: Final = frozenset("iuepbzk")
_REMOVABLE_MEDIA: Final = frozenset("ibk")

# A line: (type letter, or "?" for an opaque line that a lenient parse kept;
# full text without its line end; line end "\r\n" / "\n" / ""). Plain tuples,
# built all at once by zip() in the parser.
_Line = tuple[str, str, str]
_OPAQUE: Final = "?"


# --- typed values ---------------------------------------------------------------


class Origin(NamedTuple):
    """``o=`` (RFC 4566 5.2). ``sess_id``/``sess_version`` stay digit strings:
    they are often NTP timestamps and may exceed 64 bits."""

    username: str
    sess_id: str
    sess_version: str
    nettype: str
    addrtype: str
    address: str


class Connection(NamedTuple):
    """``c=`` (RFC 4566 5.7). ``ttl`` and ``number`` only for multicast."""

    nettype: str
    addrtype: str
    address: str
    ttl: int | None = None
    number: int | None = None


class Attribute(NamedTuple):
    """``a=name`` (``value`` None) or ``a=name:value`` (RFC 4566 5.13)."""

    name: str
    value: str | None


class KeyParam(NamedTuple):
    """One ``key-method ":" key-info`` of an ``a=crypto`` line (RFC 4568 9.1).

    The repr hides ``info``: it holds the SRTP master key and salt, which must
    never reach a log.
    """

    method: str
    info: str

    def __repr__(self) -> str:
        return f"KeyParam(method={self.method!r}, info=<{len(self.info)} chars redacted>)"

    @property
    def key_salt(self) -> str | None:
        """The base64 key||salt of an ``inline`` key, else None."""
        return self.info.split("|", 1)[0] if self.method == "inline" else None

    @property
    def lifetime(self) -> str | None:
        """``inline`` lifetime (e.g. ``2^20``), if given (RFC 4568 6.1)."""
        return self._inline_part(lambda part: "^" in part or part.isdigit())

    @property
    def mki(self) -> str | None:
        """``inline`` MKI as ``value:length``, if given (RFC 4568 6.1)."""
        return self._inline_part(lambda part: ":" in part)

    def _inline_part(self, wanted: Callable[[str], bool]) -> str | None:
        if self.method != "inline":
            return None
        for part in self.info.split("|")[1:]:
            if wanted(part):
                return part
        return None


class Crypto(NamedTuple):
    """A parsed ``a=crypto`` line (RFC 4568 9.1)."""

    tag: int
    suite: str
    key_params: tuple[KeyParam, ...]
    session_params: tuple[str, ...]


class Fingerprint(NamedTuple):
    """``a=fingerprint`` (RFC 8122 5, was RFC 4572 5)."""

    hash_func: str
    value: str


class Rtcp(NamedTuple):
    """``a=rtcp`` (RFC 3605 2.1); the address fields are None when absent."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None


# --- small helpers --------------------------------------------------------------


def _excerpt(text: str) -> str:
    """A short, escaped quote of peer input for an error message."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _fail(strict: bool, defects: list[str], message: str, rule: str, offset: int) -> None:
    """Raise in strict mode, record the same error as a defect in lenient mode."""
    error = RemoteProtocolError(message, rule=rule, offset=offset)
    if strict:
        raise error
    defects.append(str(error))


def _is_ipv6(address: str) -> bool:
    # ipaddress accepts "%zone" suffixes, which IP6-address does not.
    if "%" in address:
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def _small_int(digits: str, limit: int) -> int | None:
    """int(digits) if it is 1*DIGIT and <= limit; length-checked before int()."""
    if not digits.isdigit() or not digits.isascii() or len(digits) > len(str(limit)):
        return None
    value = int(digits)
    return value if value <= limit else None


def _check_address(
    nettype: str, addrtype: str, field: str, multicast: bool
) -> tuple[str, int | None, int | None, str | None]:
    """Check a connection-address (``multicast``) or unicast-address for its types.

    Returns (address, ttl, number, problem); the values are best effort when
    there is a problem, so lenient mode can still show them.
    """
    if (
        addrtype == "IP4"
        and nettype == "IN"
        and "/" not in field
        and _IPV4.fullmatch(field) is not None
        and (not multicast or field[3:4] != "." or not "224" <= field[:3] <= "239")
    ):
        return field, None, None, None  # the common case: a unicast IPv4 literal
    if (nettype, addrtype) not in CONNECTION_TYPES:
        return field, None, None, f"unknown network/address type {nettype} {addrtype}"
    if nettype != "IN":
        return field, None, None, None
    if "/" in field:
        address, slash, rest = field.partition("/")
        ttl_s, slash2, number_s = rest.partition("/")
    else:
        address, slash, ttl_s, slash2, number_s = field, "", "", "", ""
    if addrtype == "IP4":
        is_ip = _IPV4.fullmatch(address) is not None
        if not is_ip and _FQDN.fullmatch(address) is None:
            return address, None, None, f"{_excerpt(address)} is not an IPv4 address or domain name"
        # 224.0.0.0/4; the address is a valid dotted quad when is_ip holds.
        is_multicast = is_ip and address[3:4] == "." and "224" <= address[:3] <= "239"
        if not slash:
            if multicast and is_multicast:
                # RFC 4566 5.7: IPv4 multicast MUST carry a TTL.
                return address, None, None, "IPv4 multicast address without /ttl"
            return address, None, None, None
        ttl = _small_int(ttl_s, 255)
        number = _small_int(number_s, 65535) if slash2 else None
        if not multicast or not is_multicast:
            return address, ttl, number, "/ttl is only allowed on an IPv4 multicast address"
        if ttl is None:
            return address, None, number, f"TTL {_excerpt(ttl_s)} is not 0-255"
        if slash2 and not number:
            return address, ttl, None, f"address count {_excerpt(number_s)} is not 1-65535"
        return address, ttl, number, None
    # IP6
    is_ip = ":" in address and _is_ipv6(address)
    if not is_ip and (":" in address or _FQDN.fullmatch(address) is None):
        return address, None, None, f"{_excerpt(address)} is not an IPv6 address or domain name"
    if not slash:
        return address, None, None, None
    number = _small_int(ttl_s, 65535)
    if not multicast or not address.lower().startswith("ff"):
        return address, None, number, "/number is only allowed on an IPv6 multicast address"
    if slash2:
        # RFC 4566 5.7: "the TTL value MUST NOT be present for IPv6 multicast".
        return address, None, number, "IPv6 multicast must not carry a TTL"
    if not number:
        return address, None, None, f"address count {_excerpt(ttl_s)} is not 1-65535"
    return address, None, number, None


def _parse_connection(value: str) -> tuple[Connection | None, str | None]:
    """Parse a c= value; returns (best-effort connection, problem)."""
    match = _CONNECTION.fullmatch(value)
    if match is None:
        fields = [f for f in _BLANKS.split(value) if f]
        loose = Connection(fields[0], fields[1], fields[2]) if len(fields) == 3 else None
        return loose, "c= must be <nettype> SP <addrtype> SP <connection-address>"
    nettype, addrtype, field = match.groups()
    address, ttl, number, problem = _check_address(nettype, addrtype, field, True)
    return Connection(nettype, addrtype, address, ttl, number), problem


def _parse_origin(value: str) -> tuple[Origin | None, str | None]:
    """Parse an o= value; returns (best-effort origin, problem)."""
    match = _ORIGIN.fullmatch(value)
    if match is None:
        fields = [f for f in _BLANKS.split(value) if f]
        loose = Origin(*fields) if len(fields) == 6 else None
        return loose, (
            "o= must be <username> <sess-id> <sess-version> <nettype> <addrtype> "
            "<unicast-address>, digits for the ids, single spaces between"
        )
    origin = Origin(*match.groups())
    _, _, _, problem = _check_address(
        origin.nettype, origin.addrtype, origin.address, multicast=False
    )
    return origin, problem


class _MediaLine(NamedTuple):
    media: str
    port: int
    port_count: int
    proto: str
    formats: tuple[str, ...]


def _parse_media_line(value: str) -> tuple[_MediaLine, str | None]:
    """Parse an m= value; returns (best-effort fields, problem)."""
    match = _MEDIA.fullmatch(value)
    if match is not None:
        media, port_s, count_s, proto, formats = match.groups()
        # The regex guarantees ASCII digits; the length check keeps int() cheap.
        port = int(port_s) if len(port_s) <= 5 and int(port_s) <= 65535 else None
        count = 1 if count_s is None else _small_int(count_s, 65535)
        fields = _MediaLine(media, port or 0, count or 1, proto, tuple(formats[1:].split(" ")))
        if port is None:
            return fields, f"port {_excerpt(port_s)} is out of range 0-65535"
        if not count:
            return fields, f"port count {_excerpt(count_s)} is not 1-65535"
        return fields, None
    # Lenient view: blank-separated fields, whatever parses.
    parts = [f for f in _BLANKS.split(value) if f]
    media = parts[0] if parts else ""
    port_s, _, count_s = (parts[1] if len(parts) > 1 else "").partition("/")
    port = _small_int(port_s, 65535)
    count = _small_int(count_s, 65535) if count_s else 1
    proto = parts[2] if len(parts) > 2 else ""
    fields = _MediaLine(media, port or 0, count or 1, proto, tuple(parts[3:]))
    if len(parts) < 4:
        problem = "m= must be <media> SP <port>[/<count>] SP <proto> 1*(SP <fmt>)"
    elif port is None:
        problem = f"port {_excerpt(port_s)} is not a number 0-65535"
    else:
        problem = "m= must be <media> SP <port>[/<count>] SP <proto> 1*(SP <fmt>) of tokens"
    return fields, problem


def _wsp_fields(value: str) -> list[str]:
    """Fields separated by 1*WSP (SP / HTAB, RFC 5234), not by Python's wider idea of space."""
    if "\t" in value or "  " in value:
        return [f for f in _BLANKS.split(value) if f]
    value = value.strip(" ")
    return value.split(" ") if value else []


def _parse_crypto(value: str) -> Crypto | None:
    # a=crypto:<tag> 1*WSP <crypto-suite> 1*WSP <key-params> *(1*WSP <session-param>)
    fields = _wsp_fields(value)
    if len(fields) < 3 or not _CRYPTO_TAG.fullmatch(fields[0]):
        return None
    if not _CRYPTO_SUITE.fullmatch(fields[1]):
        return None
    params: list[KeyParam] = []
    for param in fields[2].split(";"):
        method, colon, info = param.partition(":")
        if not colon or not info or not _TOKEN.fullmatch(method):
            return None
        params.append(KeyParam(method, info))
    return Crypto(int(fields[0]), fields[1], tuple(params), tuple(fields[3:]))


def _parse_fingerprint(value: str) -> Fingerprint | None:
    fields = _wsp_fields(value)
    if len(fields) != 2 or not _TOKEN.fullmatch(fields[0]):
        return None
    if not _FINGERPRINT.fullmatch(fields[1]):
        return None
    return Fingerprint(fields[0], fields[1])


def _parse_rtcp(value: str) -> Rtcp | None:
    fields = _wsp_fields(value)
    if not fields:
        return None
    port = _small_int(fields[0], 65535)
    if port is None:
        return None
    if len(fields) == 1:
        return Rtcp(port)
    if len(fields) == 4:
        return Rtcp(port, fields[1], fields[2], fields[3])
    return None


def _attr_values(lines: Iterable[_Line], name: str) -> list[str | None]:
    """Values of the ``a=name`` lines among ``lines``, in order (None for a flag)."""
    prefix = "a=" + name
    size = len(prefix)
    values: list[str | None] = []
    for kind, text, _ in lines:
        if kind == "a" and text.startswith(prefix):
            if len(text) == size:
                values.append(None)
            elif text[size] == ":":
                values.append(text[size + 1 :])
    return values


def _attr_name(text: str) -> str:
    colon = text.find(":", 2)
    return text[2:] if colon < 0 else text[2:colon]


def _check_token(value: str, what: str) -> str:
    if _TOKEN.fullmatch(value) is None:
        raise LocalProtocolError(f"{what} must be a token (RFC 4566 9), got {value!r}")
    return value


def _check_text(value: str | bytes, what: str) -> str:
    """A text value as a latin-1 view: bytes verbatim, str as given."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    bad = _BAD_TEXT.search(text)
    if bad is not None:
        raise LocalProtocolError(
            f"{what} must not contain NUL, CR, LF or code points above U+00FF "
            f"(found {bad.group()!r}); pass bytes for other charsets"
        )
    return text


def _check_port(port: int, what: str = "port") -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise LocalProtocolError(f"{what} must be an int 0-65535, got {port!r}")
    return port


def _check_digits(value: str | int, what: str) -> str:
    digits = str(value)
    if isinstance(value, bool) or not (digits.isdigit() and digits.isascii()):
        raise LocalProtocolError(f"{what} must be 1*DIGIT, got {value!r}")
    return digits


def _infer_addrtype(address: str, current: str | None) -> str:
    """IP4/IP6 from an IP literal; for a domain name keep the current type."""
    if _IPV4.fullmatch(address):
        return "IP4"
    if ":" in address:
        return "IP6"
    return current or "IP4"


def _checked_address(address: str, addrtype: str | None, current: str | None) -> tuple[str, str]:
    """Validate an address the caller wants to write; returns (address, addrtype)."""
    kind = _check_token(addrtype, "addrtype") if addrtype is not None else None
    kind = kind or _infer_addrtype(address, current)
    _, _, _, problem = _check_address("IN", kind, address, False)
    if problem is not None or "/" in address:
        raise LocalProtocolError(f"cannot write address {address!r} as IN {kind}: {problem}")
    return address, kind


# --- the description ------------------------------------------------------------


class _Section:
    """What the session part and a media description share: lines and attributes."""

    __slots__ = ("_lines",)

    _lines: list[_Line]

    def _root(self) -> SessionDescription:
        raise NotImplementedError

    def _ranks(self) -> dict[str, int]:
        raise NotImplementedError

    # reading

    @property
    def attributes(self) -> list[Attribute]:
        """The ``a=`` lines of this level, in order."""
        result: list[Attribute] = []
        for kind, text, _ in self._lines:
            if kind == "a":
                colon = text.find(":", 2)
                if colon < 0:
                    result.append(Attribute(text[2:], None))
                else:
                    result.append(Attribute(text[2:colon], text[colon + 1 :]))
        return result

    def get_attributes(self, name: str) -> list[str | None]:
        """Values of this level's ``a=name`` lines, in order (None for a flag)."""
        return _attr_values(self._lines, name)

    def has_attribute(self, name: str) -> bool:
        """Whether this level has an ``a=name`` line (flag or with a value)."""
        return bool(_attr_values(self._lines, name))

    # editing

    def _new_line(self, kind: str, value: str) -> _Line:
        return (kind, f"{kind}={value}", self._root()._eol)

    def _insert_line(self, line: _Line) -> None:
        """Insert after the last line whose rank is <= the new line's (RFC 4566 5 order)."""
        ranks = self._ranks()
        rank = ranks[line[0]]
        lines = self._lines
        index = len(lines)
        while index > 0:
            existing = ranks.get(lines[index - 1][0])
            if existing is not None and existing <= rank:
                break
            index -= 1
        lines.insert(index, line)
        self._root()._dirty = True

    def add_attribute(self, name: str, value: str | bytes | None = None) -> None:
        """Append ``a=name`` or ``a=name:value`` at the end of this level."""
        _check_token(name, "attribute name")
        text = name if value is None else f"{name}:{_check_text(value, 'attribute value')}"
        self._insert_line(self._new_line("a", text))

    def remove_attributes(self, name: str) -> int:
        """Remove this level's ``a=name`` lines; returns how many went."""
        before = len(self._lines)
        self._lines[:] = [
            line for line in self._lines if line[0] != "a" or _attr_name(line[1]) != name
        ]
        removed = before - len(self._lines)
        if removed:
            self._root()._dirty = True
        return removed

    def replace_attributes(self, name: str, values: Iterable[str | bytes | None]) -> None:
        """Replace this level's ``a=name`` lines by one line per value.

        The new lines take the place of the first old one (or go at the end of
        this level when there was none); an empty ``values`` removes them all.
        """
        _check_token(name, "attribute name")
        new = [
            self._new_line(
                "a", name if value is None else f"{name}:{_check_text(value, 'attribute value')}"
            )
            for value in values
        ]
        lines = self._lines
        first = next(
            (i for i, line in enumerate(lines) if line[0] == "a" and _attr_name(line[1]) == name),
            None,
        )
        self.remove_attributes(name)
        if first is None:
            for line in new:
                self._insert_line(line)
        else:
            lines[first:first] = new
        self._root()._dirty = True

    def set_direction(self, direction: str) -> None:
        """Set this level's direction attribute (RFC 3264 5.1), replacing any other."""
        if direction not in DIRECTIONS:
            raise LocalProtocolError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        lines = self._lines
        first = next(
            (i for i, line in enumerate(lines) if line[0] == "a" and line[1][2:] in DIRECTIONS),
            None,
        )
        for other in DIRECTIONS:
            self.remove_attributes(other)
        line = self._new_line("a", direction)
        if first is None:
            self._insert_line(line)
        else:
            lines.insert(first, line)
            self._root()._dirty = True

    def _remove_fields(self, kinds: str, allowed: frozenset[str]) -> int:
        wanted = set(kinds)
        if not wanted <= allowed:
            raise LocalProtocolError(
                f"only optional fields {''.join(sorted(allowed))} may be removed, got {kinds!r}"
            )
        before = len(self._lines)
        self._lines[:] = [line for line in self._lines if line[0] not in wanted]
        removed = before - len(self._lines)
        if removed:
            self._root()._dirty = True
        return removed


class MediaDescription(_Section):
    """One media description: an ``m=`` line and the lines up to the next (RFC 4566 5.14).

    Read the fields as properties; change them with the ``set_*`` methods,
    which rewrite only the lines concerned.
    """

    __slots__ = (
        "_connection",
        "_formats",
        "_media",
        "_port",
        "_port_count",
        "_proto",
        "_sd",
    )

    def __init__(self, sd: SessionDescription, lines: list[_Line], fields: _MediaLine) -> None:
        self._sd = sd
        self._lines = lines
        self._media, self._port, self._port_count, self._proto, self._formats = fields
        self._connection: Connection | None = None

    def _root(self) -> SessionDescription:
        return self._sd

    def _ranks(self) -> dict[str, int]:
        return _MEDIA_RANK

    def __repr__(self) -> str:
        return (
            f"<MediaDescription {self._media} {self._port}"
            f"{'' if self._port_count == 1 else f'/{self._port_count}'} {self._proto} "
            f"{' '.join(self._formats)}>"
        )

    # m= fields

    @property
    def media(self) -> str:
        """Media type: audio, video, text, application, message, image, ..."""
        return self._media

    @property
    def port(self) -> int:
        """Transport port; 0 means the stream is disabled or rejected (RFC 3264 5.1)."""
        return self._port

    @property
    def port_count(self) -> int:
        """Number of ports (``m=video 49170/2 ...``); 1 when not given."""
        return self._port_count

    @property
    def proto(self) -> str:
        """Transport protocol, e.g. ``RTP/AVP``, ``RTP/SAVP``, ``UDP/TLS/RTP/SAVPF``."""
        return self._proto

    @property
    def formats(self) -> tuple[str, ...]:
        """Media formats (RTP payload types for RTP protocols)."""
        return self._formats

    @property
    def connection(self) -> Connection | None:
        """This description's own (first) ``c=``, if any."""
        return self._connection

    @property
    def effective_connection(self) -> Connection | None:
        """The ``c=`` that applies: this description's, else the session's (RFC 4566 5.7)."""
        return self._connection or self._sd._connection

    # attribute helpers

    @property
    def crypto(self) -> list[Crypto]:
        """The well-formed ``a=crypto`` lines (RFC 4568); malformed ones are skipped."""
        result: list[Crypto] = []
        for value in _attr_values(self._lines, "crypto"):
            parsed = _parse_crypto(value) if value else None
            if parsed is not None:
                result.append(parsed)
        return result

    @property
    def fingerprints(self) -> list[Fingerprint]:
        """Well-formed ``a=fingerprint`` lines of this description, else of the session.

        RFC 8122 5: a session-level fingerprint applies to every media
        description that has none of its own.
        """
        values = _attr_values(self._lines, "fingerprint") or _attr_values(
            self._sd._lines, "fingerprint"
        )
        result: list[Fingerprint] = []
        for value in values:
            parsed = _parse_fingerprint(value) if value else None
            if parsed is not None:
                result.append(parsed)
        return result

    @property
    def fingerprint(self) -> Fingerprint | None:
        """The first applicable fingerprint (see :attr:`fingerprints`)."""
        found = self.fingerprints
        return found[0] if found else None

    @property
    def setup(self) -> str | None:
        """``a=setup`` (RFC 4145 4) of this description, else of the session."""
        values = _attr_values(self._lines, "setup") or _attr_values(self._sd._lines, "setup")
        return values[0] if values else None

    @property
    def rtcp(self) -> Rtcp | None:
        """The first ``a=rtcp`` (RFC 3605), or None when absent or malformed."""
        for value in _attr_values(self._lines, "rtcp"):
            return _parse_rtcp(value) if value else None
        return None

    @property
    def direction(self) -> str:
        """sendrecv/sendonly/recvonly/inactive: this level's, else the session's, else sendrecv."""
        for kind, text, _ in self._lines:
            if kind == "a" and text[2:] in DIRECTIONS:
                return text[2:]
        return self._sd.direction

    @property
    def is_rtp(self) -> bool:
        """Whether the transport carries RTP (its proto has an ``RTP`` component)."""
        return "RTP" in self._proto.split("/")

    @property
    def is_srtp(self) -> bool:
        """Whether the stream is SRTP with keys the SDP can establish.

        RTP/SAVP and RTP/SAVPF count with a well-formed ``a=crypto`` (SDES,
        RFC 4568) or a fingerprint (early WebRTC used RTP/SAVPF for DTLS-SRTP);
        the DTLS protos (``UDP/TLS/RTP/SAVP[F]``, RFC 5764 8; ``TCP/DTLS/...``,
        RFC 7850) need a fingerprint (RFC 5763 5), since without one the DTLS
        peer cannot be authenticated. ZRTP over RTP/AVP does not count: its
        keys are agreed in the media path, out of the gateway's sight.
        """
        proto = self._proto
        if not proto.endswith(("/SAVP", "/SAVPF")):
            return False
        parts = proto.split("/")
        if "TLS" in parts or "DTLS" in parts:
            return self._has_fingerprint()
        # any() stops at the first usable key line.
        keys = _attr_values(self._lines, "crypto")
        return any(_parse_crypto(v) for v in keys if v) or self._has_fingerprint()

    def _has_fingerprint(self) -> bool:
        values = _attr_values(self._lines, "fingerprint") or _attr_values(
            self._sd._lines, "fingerprint"
        )
        return any(_parse_fingerprint(v) for v in values if v)

    # editing

    def _regenerate_m(self) -> None:
        count = "" if self._port_count == 1 else f"/{self._port_count}"
        fields = [self._media, f"{self._port}{count}", self._proto, *self._formats]
        self._lines[0] = ("m", "m=" + " ".join(f for f in fields if f), self._lines[0][2])
        self._sd._dirty = True

    def set_port(self, port: int, *, port_count: int | None = None) -> None:
        """Set the port (and, when given, the port count; 1 drops ``/count``)."""
        _check_port(port)
        if port_count is not None:
            if isinstance(port_count, bool) or not 1 <= port_count <= 65535:
                raise LocalProtocolError(f"port_count must be 1-65535, got {port_count!r}")
            self._port_count = port_count
        self._port = port
        self._regenerate_m()

    def set_proto(self, proto: str) -> None:
        """Set the transport protocol (e.g. RTP/SAVP to RTP/AVP when terminating SRTP)."""
        if not isinstance(proto, str) or _PROTO.fullmatch(proto) is None:
            raise LocalProtocolError(f"proto must be token *('/' token), got {proto!r}")
        self._proto = proto
        self._regenerate_m()

    def set_connection_address(self, address: str, addrtype: str | None = None) -> None:
        """Rewrite this description's ``c=`` lines to ``IN <addrtype> <address>``.

        Adds a ``c=`` when the description has none (it then no longer
        inherits the session's). ``addrtype`` defaults to IP4/IP6 from the
        address literal (the current one for a domain name). Multicast
        ``/ttl``/``/number`` suffixes are dropped: the new address is unicast.
        """
        current = self._connection.addrtype if self._connection else None
        address, kind = _checked_address(address, addrtype, current)
        self._connection = Connection("IN", kind, address)
        value = f"IN {kind} {address}"
        lines = self._lines
        found = False
        for index, (line_kind, _, eol) in enumerate(lines):
            if line_kind == "c":
                lines[index] = ("c", f"c={value}", eol)
                found = True
        if found:
            self._sd._dirty = True
        else:
            self._insert_line(self._new_line("c", value))

    def set_rtcp(
        self, port: int, address: str | None = None, *, addrtype: str | None = None
    ) -> None:
        """Set ``a=rtcp`` (RFC 3605): port only, or port and ``IN <addrtype> <address>``.

        Without ``address`` RTCP goes to the ``c=`` address, which is what an
        anchoring gateway wants after rewriting ``c=``. Replaces any existing
        ``a=rtcp`` lines or adds one.
        """
        _check_port(port, "RTCP port")
        value = str(port)
        if address is not None:
            current = self.effective_connection
            address, kind = _checked_address(
                address, addrtype, current.addrtype if current else None
            )
            value = f"{port} IN {kind} {address}"
        self.replace_attributes("rtcp", [value])

    def remove_fields(self, kinds: str) -> int:
        """Remove this description's optional ``i=``, ``b=`` or ``k=`` lines (``kinds``
        is a string of type letters, e.g. ``"ik"``); returns how many went."""
        return self._remove_fields(kinds, _REMOVABLE_MEDIA)


class SessionDescription(_Section):
    """A parsed SDP body: the session part, its media descriptions, the raw lines.

    Created by :func:`parse_sdp`. ``defects`` lists the rules the body broke
    that parsing tolerated (all of them in lenient mode; in strict mode only
    the deviations tolerated in both modes, see the module docstring).
    """

    __slots__ = (
        "_body",
        "_connection",
        "_dirty",
        "_eol",
        "_media_list",
        "_name",
        "_origin",
        "_trailer",
        "_version",
        "defects",
        "strict",
    )

    def __init__(self, body: bytes, *, strict: bool, defects: list[str], trailer: str) -> None:
        self._body = body
        self._lines = []
        self._media_list: tuple[MediaDescription, ...] = ()
        self._dirty = False
        self._eol = "\r\n"
        self._trailer = trailer
        self._version: int | None = None
        self._origin: Origin | None = None
        self._name: str | None = None
        self._connection: Connection | None = None
        self.defects = defects
        self.strict = strict

    def _root(self) -> SessionDescription:
        return self

    def _ranks(self) -> dict[str, int]:
        return _SESSION_RANK

    def __repr__(self) -> str:
        kinds = " ".join(f"{m.media}:{m.port}" for m in self._media_list)
        return f"<SessionDescription media=[{kinds}] defects={len(self.defects)}>"

    def __bytes__(self) -> bytes:
        return self.serialize()

    # reading

    @property
    def version(self) -> int | None:
        """``v=`` (0; None only in lenient mode when absent or not a small number)."""
        return self._version

    @property
    def origin(self) -> Origin | None:
        """``o=`` (never None after a strict parse)."""
        return self._origin

    @property
    def session_name(self) -> str | None:
        """``s=`` as a latin-1 view (never None after a strict parse)."""
        return self._name

    @property
    def connection(self) -> Connection | None:
        """The session-level ``c=``, if any."""
        return self._connection

    @property
    def media(self) -> Sequence[MediaDescription]:
        """The media descriptions, in order."""
        return self._media_list

    @property
    def direction(self) -> str:
        """The session-level direction attribute, or sendrecv (RFC 3264 5.1)."""
        for kind, text, _ in self._lines:
            if kind == "a" and text[2:] in DIRECTIONS:
                return text[2:]
        return "sendrecv"

    @property
    def charset(self) -> str | None:
        """Session-level ``a=charset`` (RFC 4566 6), naming the charset of s= and i=."""
        values = _attr_values(self._lines, "charset")
        return values[0] if values else None

    def decode_text(self, value: str) -> str:
        """Re-decode a latin-1 view (e.g. :attr:`session_name`) for display.

        Uses ``a=charset`` when it names a text codec, else UTF-8 (the default
        of RFC 4566 6); undecodable bytes become U+FFFD.
        """
        raw = value.encode("latin-1", "replace")
        charset = self.charset
        if charset:
            try:
                return raw.decode(charset, "replace")
            except (LookupError, UnicodeError, ValueError, TypeError):
                pass  # unknown or non-text codec named by the peer
        return raw.decode("utf-8", "replace")

    def offers_srtp(self, *, require_all: bool = True) -> bool:
        """Whether the active RTP streams (port != 0) are SRTP (:attr:`MediaDescription.is_srtp`).

        ``require_all`` asks for every active RTP stream, otherwise one is
        enough. Streams that carry no RTP (T.38 ``udptl``, BFCP, WebRTC data
        channels) do not count either way. With no active RTP stream the answer
        is False: nothing is offered, so nothing is offered securely.
        """
        active = [m for m in self._media_list if m.port != 0 and m.is_rtp]
        if not active:
            return False
        if require_all:
            return all(m.is_srtp for m in active)
        return any(m.is_srtp for m in active)

    # serialising

    def serialize(self) -> bytes:
        """The body: the original bytes when nothing changed, else the lines joined."""
        if not self._dirty:
            return self._body
        lines: list[_Line] = list(self._lines)
        for media in self._media_list:
            lines.extend(media._lines)
        eol = self._eol
        last = len(lines) - 1
        parts: list[str] = []
        for index, (_, text, line_eol) in enumerate(lines):
            parts.append(text)
            # Only the original last line can lack a line end; one added after
            # it needs a separator.
            parts.append(line_eol if line_eol or index == last else eol)
        parts.append(self._trailer)
        body = "".join(parts).encode("latin-1")
        self._body = body
        self._dirty = False
        return body

    # editing

    def _replace_first(self, kind: str, value: str) -> None:
        """Rewrite the first session-level line of ``kind``, or insert one in order."""
        lines = self._lines
        for index, (line_kind, _, eol) in enumerate(lines):
            if line_kind == kind:
                lines[index] = (kind, f"{kind}={value}", eol)
                self._dirty = True
                return
        self._insert_line(self._new_line(kind, value))

    def set_origin(
        self,
        *,
        username: str | None = None,
        sess_id: str | int | None = None,
        sess_version: str | int | None = None,
        address: str | None = None,
        addrtype: str | None = None,
    ) -> None:
        """Rewrite fields of ``o=`` (topology hiding); fields not given stay.

        ``addrtype`` defaults to IP4/IP6 from an IP literal ``address``.
        Raises LocalProtocolError when there is no ``o=`` (lenient parse).
        """
        origin = self._origin
        if origin is None:
            raise LocalProtocolError("the description has no o= line to rewrite")
        if username is not None:
            if _NON_WS.fullmatch(username) is None:
                raise LocalProtocolError(f"username must be a non-ws-string, got {username!r}")
            origin = origin._replace(username=username)
        if sess_id is not None:
            origin = origin._replace(sess_id=_check_digits(sess_id, "sess_id"))
        if sess_version is not None:
            origin = origin._replace(sess_version=_check_digits(sess_version, "sess_version"))
        if address is not None or addrtype is not None:
            new_address, kind = _checked_address(
                address if address is not None else origin.address, addrtype, origin.addrtype
            )
            origin = origin._replace(nettype="IN", address=new_address, addrtype=kind)
        self._origin = origin
        self._replace_first("o", " ".join(origin))

    def set_session_name(self, name: str | bytes) -> None:
        """Set ``s=``: ``bytes`` verbatim, ``str`` as a latin-1 view.

        RFC 4566 5.3 asks for a non-empty name ("s= " when there is none);
        an empty name is written as a single space.
        """
        text = _check_text(name, "session name") or " "
        self._name = text
        self._replace_first("s", text)

    def set_connection_address(self, address: str, addrtype: str | None = None) -> None:
        """Rewrite every ``c=``, session and media level, to ``IN <addrtype> <address>``.

        A media description with no ``c=`` of its own keeps inheriting the
        session's; when there is no session-level ``c=`` either, the media
        description gets one so the result stays valid (RFC 4566 5.7).
        ``addrtype`` defaults to IP4/IP6 from the address literal. Other
        address-bearing lines (``a=rtcp`` with an address, ICE ``a=candidate``)
        are not touched: rewrite or remove them too when hiding topology.
        """
        current = self._connection.addrtype if self._connection else None
        address, kind = _checked_address(address, addrtype, current)
        lines = self._lines
        for index, (line_kind, _, eol) in enumerate(lines):
            if line_kind == "c":  # a lenient parse may have kept duplicates
                lines[index] = ("c", f"c=IN {kind} {address}", eol)
                self._connection = Connection("IN", kind, address)
                self._dirty = True
        for media in self._media_list:
            if self._connection is None or any(line[0] == "c" for line in media._lines):
                media.set_connection_address(address, kind)

    def remove_fields(self, kinds: str) -> int:
        """Remove session-level optional lines by type letter (``"iuep"`` strips
        information, URI, e-mail and phone, which may name people and hosts);
        ``b``, ``z`` and ``k`` may go too. Returns how many lines went."""
        return self._remove_fields(kinds, _REMOVABLE_SESSION)

    def remove_attributes_everywhere(self, name: str) -> int:
        """Remove ``a=name`` at the session level and in every media description."""
        return self.remove_attributes(name) + sum(
            m.remove_attributes(name) for m in self._media_list
        )


# --- parsing --------------------------------------------------------------------

# RFC 4566 5, the whole field order as one regex over the string of type
# letters ("vosctmaaa..."): session part, then media descriptions. Checking
# the order costs one C-level match per body instead of work per line.
_ORDER: Final = re.compile(r"vosi?u?e*p*c?b*(?:tr*)+z?k?a*(?:mi?c*b*k?a*)*")


def _follow_table(ranks: dict[str, int], repeatable: frozenset[str]) -> dict[str, str]:
    """For each type letter, the letters that may come next (RFC 4566 5 order).

    Used to say *which* line breaks the order once :data:`_ORDER` failed.
    """
    table: dict[str, str] = {}
    for kind, rank in ranks.items():
        allowed = {
            other
            for other, other_rank in ranks.items()
            if other_rank > rank or (other == kind and kind in repeatable)
        }
        allowed.add("m")  # a media description may start after anything
        if "r" in ranks and kind not in ("t", "r"):
            allowed.discard("r")  # r= belongs to the t= before it
        if kind == "r":
            allowed.add("t")  # r= may close one time description, t= open the next
        table[kind] = "".join(sorted(allowed))
    return table


_MEDIA_FOLLOW: Final = _follow_table(_MEDIA_RANK, _MEDIA_REPEATABLE)
_SESSION_FOLLOW: Final = _follow_table(_SESSION_RANK, _SESSION_REPEATABLE)

# One scan of the whole body for any line (after the first) that needs a closer
# look: not a record of a known type, or an a= line whose name is not a token.
# When there is none - nearly always - no per-line form check runs. It starts
# with a literal "\n" so the regex engine can skip ahead quickly.
_SUSPECT_LINE: Final = re.compile(
    rf"\n(?!\Z)(?:(?![vosiuepcbtrzkam]=)|a=(?!{_T}(?::|\r?\n|\r?\Z)))"
)


class _Offsets:
    """Byte offsets of line starts, computed once and only when an error needs one.

    (Summing line lengths per error would make a hostile body with a defect
    on every line cost O(lines^2) in lenient mode.)
    """

    __slots__ = ("_contents", "_eols", "_starts")

    def __init__(self, contents: list[str], eols: list[str]) -> None:
        self._contents = contents
        self._eols = eols
        self._starts: list[int] = []

    def __call__(self, index: int, column: int = 0) -> int:
        if not self._starts:
            self._starts = [0]
            self._starts.extend(
                accumulate(len(c) + len(e) for c, e in zip(self._contents, self._eols, strict=True))
            )
        return self._starts[index] + column


def _split_lines(
    text: str, newlines: int, crlf: int, carriage_returns: int
) -> tuple[list[str], list[str]]:
    """Split into line contents and line ends; the last content may be unterminated ("")."""
    if crlf == newlines == carriage_returns and crlf:
        # Bodies almost always use one line end throughout: split on it once.
        contents = text.split("\r\n")
        return contents, ["\r\n"] * (len(contents) - 1) + [""]
    if not carriage_returns:
        contents = text.split("\n")
        return contents, ["\n"] * (len(contents) - 1) + [""]
    contents = []
    eols = []
    for piece in text.split("\n"):
        if piece[-1:] == "\r":
            contents.append(piece[:-1])
            eols.append("\r\n")
        else:
            contents.append(piece)
            eols.append("\n")
    # The piece after the last LF has no line end (and a CR there is content).
    contents[-1] += "\r" if eols[-1] == "\r\n" else ""
    eols[-1] = ""
    return contents, eols


def _check_lines(
    contents: list[str], offset_of: _Offsets, controls: bool, strict: bool, defects: list[str]
) -> str:
    """The per-line form checks, for a body the suspect scan flagged.

    Returns the type letters, with :data:`_OPAQUE` for the lines that are not
    records of a known type (kept as they are in lenient mode).
    """
    kinds: list[str] = []
    for index, content in enumerate(contents):
        kind = content[:1]
        if content[1:2] != "=" or kind not in _KNOWN_TYPES:
            if content[1:2] == "=" and "a" <= kind <= "z":
                # RFC 4566 5: a parser MUST ignore a description with a type
                # letter it does not understand; strict mode rejects it.
                problem, rule = f"unknown type letter {kind!r}", RULE_TYPE
            else:
                problem, rule = f"line {_excerpt(content)} is not <type>=<value>", RULE_LINE
            _fail(strict, defects, problem, rule, offset_of(index))
            kinds.append(_OPAQUE)
            continue
        if controls and ("\r" in content or "\x00" in content):
            column = min(i for i in (content.find("\r"), content.find("\x00")) if i >= 0)
            where = offset_of(index, column)
            _fail(strict, defects, "NUL or CR inside a line", RULE_BYTES, where)
        if kind == "a":
            colon = content.find(":", 2)
            if _TOKEN.fullmatch(content, 2, colon if colon >= 0 else len(content)) is None:
                problem = f"attribute name in {_excerpt(content)} is not a token"
                _fail(strict, defects, problem, RULE_A, offset_of(index, 2))
        kinds.append(kind)
    return "".join(kinds)


def _check_order(kinds: str, offset_of: _Offsets, strict: bool, defects: list[str]) -> None:
    """Walk the lines to name each one that breaks the RFC 4566 5 order.

    Only runs when :data:`_ORDER` did not match. A line out of order is
    reported and skipped: the next line is checked against the last good one.
    """
    table = _SESSION_FOLLOW
    follow = "v" + table["v"]  # a missing v= is reported on its own
    previous = ""
    for index, kind in enumerate(kinds):
        if kind == _OPAQUE:
            continue
        if kind == "m":
            table = _MEDIA_FOLLOW
        if kind in follow:
            follow = table[kind]
            previous = kind
            continue
        if table is _MEDIA_FOLLOW and kind not in _MEDIA_RANK:
            problem = f"{kind}= is not allowed in a media description"
        elif kind == previous:
            problem = f"more than one {kind}= line"
        elif kind == "r":
            problem = "r= must follow t= or r="
        else:
            problem = f"{kind}= is out of order after {previous}="
        _fail(strict, defects, problem, RULE_ORDER, offset_of(index))


def parse_sdp(
    body: bytes, *, strict: bool = True, max_lines: int = DEFAULT_MAX_LINES
) -> SessionDescription:
    """Parse an SDP body.

    ``strict`` (the gateway) raises :class:`~sipwarden.errors.RemoteProtocolError`
    for a rule the body breaks; lenient (the monitor) records every one in
    ``defects`` and keeps going. Both raise when the body has more than
    ``max_lines`` lines or is not SDP at all. No other exception escapes for
    any input bytes.
    """
    body = bytes(body)  # the same object for bytes; a copy of a bytearray or memoryview
    if not body:
        raise RemoteProtocolError(
            "empty body is not a session description", rule=RULE_NOT_SDP, offset=0
        )
    newlines = body.count(b"\n")
    if newlines + (body[-1:] != b"\n") > max_lines:
        offset = 0
        for _ in range(max_lines):
            offset = body.index(b"\n", offset) + 1
        raise RemoteProtocolError(
            f"more than {max_lines} lines", rule=RULE_MAX_LINES, offset=offset
        )
    text = body.decode("latin-1")
    crlf = text.count("\r\n")
    carriage_returns = text.count("\r")
    contents, eols = _split_lines(text, newlines, crlf, carriage_returns)

    defects: list[str] = []
    trailer = ""
    if contents[-1]:
        pass  # an unterminated last line
    else:
        contents.pop()
        eols.pop()
        keep = len(contents)
        while keep > 1 and not contents[keep - 1]:
            keep -= 1
        if keep < len(contents):
            # Blank lines after the last record: kept for the round trip.
            trailer = "".join(eols[keep:])
            where = len(text) - len(trailer)
            error = RemoteProtocolError(
                "blank lines after the last record (tolerated)", rule=RULE_LINE, offset=where
            )
            defects.append(str(error))
            del contents[keep:], eols[keep:]

    first = contents[0]
    if first[1:2] != "=" or first[:1] not in _KNOWN_TYPES:
        # Not even a record of a known type: this body is not SDP, in any mode.
        raise RemoteProtocolError(
            f"first line {_excerpt(first)} is not an SDP record", rule=RULE_NOT_SDP, offset=0
        )
    if first[0] != "v":
        _fail(strict, defects, "the first line must be v=0", RULE_V, 0)

    offset_of = _Offsets(contents, eols)
    # A stray CR (not part of CRLF) or a NUL: RFC 4566 9 byte-string forbids both.
    controls = carriage_returns != crlf or "\x00" in text
    if (
        controls
        or first[0] != "v"  # the suspect scan below does not look at the first line
        or _SUSPECT_LINE.search(text, 0, len(text) - len(trailer)) is not None
    ):
        kinds = _check_lines(contents, offset_of, controls, strict, defects)
        if _ORDER.fullmatch(kinds.replace(_OPAQUE, "")) is None:
            _check_order(kinds, offset_of, strict, defects)
    else:
        kinds = "".join([content[0] for content in contents])
        if _ORDER.fullmatch(kinds) is None:
            _check_order(kinds, offset_of, strict, defects)

    sd = SessionDescription(body, strict=strict, defects=defects, trailer=trailer)
    sd._eol = eols[0] or "\r\n"
    all_lines: list[_Line] = list(zip(kinds, contents, eols, strict=True))
    first_media = kinds.find("m")
    if first_media < 0:
        sd._lines = all_lines
        first_media = len(kinds)
    else:
        sd._lines = all_lines[:first_media]

    # Now only the lines other than a= need work: o=, s=, c=, t=, b=, v=, m=.
    media_list: list[MediaDescription] = []
    current: MediaDescription | None = None
    media_has_c = False
    seen = ""  # single session-level fields met so far (the first one counts)
    for index, kind in enumerate(kinds):
        if kind in "a?":  # a= and opaque lines need nothing more here
            continue
        content = contents[index]
        if kind == "m":
            fields, issue = _parse_media_line(content[2:])
            if issue is not None:
                _fail(strict, defects, issue, RULE_M, offset_of(index, 2))
            end = kinds.find("m", index + 1)
            section = all_lines[index:end] if end >= 0 else all_lines[index:]
            current = MediaDescription(sd, section, fields)
            media_list.append(current)
            media_has_c = False
        elif kind == "c":
            connection, issue = _parse_connection(content[2:])
            if issue is not None:
                _fail(strict, defects, issue, RULE_C, offset_of(index, 2))
            if current is None:
                if "c" not in seen:
                    seen += "c"
                    sd._connection = connection
            elif not media_has_c:
                media_has_c = True
                current._connection = connection
        elif kind == "b":
            if _BANDWIDTH.fullmatch(content, 2) is None:
                where = offset_of(index, 2)
                _fail(strict, defects, "b= must be <bwtype>:<bandwidth>", RULE_B, where)
        elif current is not None:
            pass  # i=, k= of a media description (or a misplaced line): kept as text
        elif kind == "o":
            if "o" not in seen:
                seen += "o"
                sd._origin, issue = _parse_origin(content[2:])
                if issue is not None:
                    _fail(strict, defects, issue, RULE_O, offset_of(index, 2))
        elif kind == "s":
            if "s" not in seen:
                seen += "s"
                sd._name = content[2:]
                if len(content) == 2:
                    # RFC 4566 5.3 wants "s= " for no name, but RFC 3264's own
                    # examples send "s=": tolerated in both modes.
                    where = offset_of(index, 2)
                    error = RemoteProtocolError("empty s= (tolerated)", rule=RULE_S, offset=where)
                    defects.append(str(error))
        elif kind == "t":
            seen += "t"
            if _TIME.fullmatch(content, 2) is None:
                where = offset_of(index, 2)
                _fail(strict, defects, "t= must be <start-time> SP <stop-time>", RULE_T, where)
        elif kind == "v" and "v" not in seen:
            seen += "v"
            sd._version = 0 if content == "v=0" else _small_int(content[2:], 999)
            if content != "v=0":
                where = offset_of(index, 2)
                _fail(strict, defects, f"version {_excerpt(content[2:])} is not 0", RULE_V, where)

    sd._media_list = tuple(media_list)
    end_offset = len(text) - len(trailer)
    if "o" not in seen:
        _fail(strict, defects, "no o= line", RULE_O, end_offset)
    if "s" not in seen:
        _fail(strict, defects, "no s= line", RULE_S, end_offset)
    if "t" not in seen:
        _fail(strict, defects, "no t= line (one time description is required)", RULE_T, end_offset)
    if sd._connection is None:
        start = first_media
        for media in media_list:
            if not any(line[0] == "c" for line in media._lines):
                # RFC 4566 5.7: c= in every media description or at session level.
                problem = "media description without c= and no session-level c="
                _fail(strict, defects, problem, RULE_C, offset_of(start))
            start += len(media._lines)
    return sd
