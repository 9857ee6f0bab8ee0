"""SIP, SIPS, tel and other URIs, and the name-addr / addr-spec address forms.

Grammar: RFC 3261 19.1 and 25.1 (SIP-URI, SIPS-URI, name-addr, addr-spec),
RFC 3966 3 (tel), RFC 2396 3 (absoluteURI, which RFC 3261 25.1 imports), with
the corrections of RFC 5954 (IPv4 octets are dec-octets; IP hosts compare as
addresses).

Everything here is sans-IO and works on ``str``: the message header section is
decoded as UTF-8 with ``errors="surrogateescape"``, so bytes that are not UTF-8
arrive as lone surrogates. Strict mode rejects them like any other character
outside the grammar; lenient mode never crashes on them.

Parsed objects keep the exact text they came from: ``str(parse_uri(x)) == x``
and ``str(parse_name_addr(x)) == x``. Components are kept *as written*
(escapes such as ``%41`` stay escaped, parameter names keep their case); the
helpers :func:`unescape`, :meth:`SipUri.unescaped_user` and
:meth:`SipUri.equivalent` give the decoded and compared views.

Every parse failure raises :class:`~sipwarden.errors.RemoteProtocolError`
whose ``offset`` is an index into the string that was passed in and whose
``rule`` names the grammar rule broken. Editing helpers (``replace``,
``with_param``, the constructors) re-check what they build and raise
:class:`~sipwarden.errors.LocalProtocolError` when our own code asks for a
component that would not survive serialisation (a host with a ``;`` in it, a
user with an ``@``): a rewrite can never smuggle text into a header.

Strict (the default, what a gateway enforces) follows the grammar, with two
documented widenings that real traffic needs and that the grammar reaches by
another path:

* ``#`` and ``*`` are allowed in the user part: RFC 3261 25.1 lets userinfo
  be a ``telephone-subscriber`` (RFC 2806), whose dtmf-digits include them
  (feature codes such as ``sip:*67#123@pbx``).
* A display name may touch the ``<`` (``caller<sip:...>``): RFC 4475 3.1.1.6
  (lwsdisp) declares ``*(token LWS)`` a specification bug.

Lenient (``strict=False``, what the passive monitor uses) additionally
accepts what can be recovered without guessing:

* in user, password, URI parameters and URI headers, any character except
  whitespace, control characters, ``<``, ``>``, ``"`` and the delimiters of
  that part (non-ASCII and lone surrogates included); a ``%`` that is not
  followed by two hex digits is taken literally;
* ``_`` in host names and a top label that starts with a digit
  (``host_1.lan``); an IPv4-looking host must still have octets <= 255;
* an empty parameter value (``;transport=``, kept as ``""``), a URI header
  without ``=`` (value ``""``);
* tel: a local number without ``phone-context``, any characters in the number;
  absoluteURI: any non-space characters after the scheme;
* :func:`parse_request_uri`: escaped headers in the Request-URI are dropped
  (RFC 4475 3.1.2.11 escruri), not rejected;
* :func:`parse_name_addr`: a ``?`` or ``,`` in an unbracketed addr-spec is kept
  in the URI, i.e. the brackets are inferred (RFC 4475 3.1.2.13 regbadct);
  whitespace just inside ``<`` and ``>`` is ignored (RFC 4475 3.1.2.14
  badaspec); display-name words may hold non-ASCII characters; header
  parameter names and values may hold any characters but whitespace and the
  delimiters ``;,<>"=``.

Lenient never accepts: whitespace inside a URI (RFC 4475 lwsruri), a
Request-URI in ``<>`` (ltgtruri), an unterminated quoted display name
(quotbal), an unquoted display name with separators such as ``,`` (baddn), a
port above 65535, a malformed IP address, a missing scheme.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import ClassVar, Final, TypeAlias

from sipwarden.errors import LocalProtocolError, RemoteProtocolError

from .memo import Memo

__all__ = [
    "KEEP",
    "AbsoluteUri",
    "NameAddr",
    "SipUri",
    "TelUri",
    "Uri",
    "escape_user",
    "parse_name_addr",
    "parse_request_uri",
    "parse_uri",
    "unescape",
    "unquote",
]


class _Keep(enum.Enum):
    """Sentinel type for "leave this component as it is" in the editing helpers."""

    KEEP = enum.auto()


#: Pass to ``replace`` (or leave the default) to keep a component unchanged;
#: needed because ``None`` is a meaningful value (no user, no port, no display name).
KEEP: Final = _Keep.KEEP

# -- rule names (the ``rule`` of every RemoteProtocolError raised here) -----------------------

_R_SCHEME: Final = "RFC 3261 25.1 absoluteURI scheme (RFC 2396 3.1)"
_R_ABSOLUTE: Final = "RFC 3261 25.1 absoluteURI (RFC 2396 3)"
_R_USERINFO: Final = "RFC 3261 25.1 SIP-URI userinfo"
_R_HOST: Final = "RFC 3261 25.1 SIP-URI host"
_R_PORT: Final = "RFC 3261 25.1 SIP-URI port"
_R_URI_PARAMS: Final = "RFC 3261 25.1 SIP-URI uri-parameters"
_R_URI_HEADERS: Final = "RFC 3261 25.1 SIP-URI headers"
_R_SIP_URI: Final = "RFC 3261 25.1 SIP-URI"
_R_ESCAPED: Final = "RFC 3261 25.1 escaped"
_R_TEL: Final = "RFC 3966 3 telephone-uri"
_R_TEL_CONTEXT: Final = "RFC 3966 5.1.5 phone-context"
_R_RURI_HEADERS: Final = "RFC 3261 19.1.1 headers not allowed in a Request-URI"
_R_NAME_ADDR: Final = "RFC 3261 25.1 name-addr"
_R_DISPLAY: Final = "RFC 3261 25.1 display-name"
_R_QUOTED: Final = "RFC 3261 25.1 quoted-string"
_R_BRACKETS: Final = "RFC 3261 20.10 addr-spec containing ',', '?' or ';' needs <>"
_R_GENERIC_PARAM: Final = "RFC 3261 25.1 generic-param"

# -- character sets (RFC 3261 25.1; regex class bodies) --------------------------------------

_ALNUM = "A-Za-z0-9"
# mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
_UNRESERVED = _ALNUM + r"\-_.!~*'()"
# user = 1*( unreserved / escaped / user-unreserved ),
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/".
# "#" (and "*", already a mark) come from the telephone-subscriber alternative
# of userinfo (RFC 2806 dtmf-digit); "%" is checked as an escape separately.
_USER_C = _UNRESERVED + r"&=+$,;?/#%"
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_PASSWORD_C = _UNRESERVED + r"&=+$,%"
# paramchar = param-unreserved / unreserved / escaped,
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
_PARAM_C = _UNRESERVED + r"\[\]/:&+$%"
# hname/hvalue = *( hnv-unreserved / unreserved / escaped ),
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
_HNV_C = _UNRESERVED + r"\[\]/?:+$%"
# token (RFC 3261 25.1)
_TOKEN_C = _ALNUM + r"\-.!%*_+`'~"
# uric = reserved / unreserved / escaped (RFC 2396 2), plus "[" "]" (RFC 2732 3)
_URIC_C = _UNRESERVED + r";/?:@&=+$,%\[\]"
# Lenient: anything but whitespace/controls and the characters that would
# break the enclosing structure (angle brackets, quotes).
_LAX_EXCLUDE = r"\x00-\x20\x7f<>\""

# RFC 3261 25.1: LWS = [*WSP CRLF] 1*WSP, SWS = [LWS]. The caller usually
# unfolds lines first, but an unfolded CRLF WSP is accepted too.
_LWS = r"(?:[ \t]*\r\n)?[ \t]+"
_SWS = rf"(?:{_LWS})?"
_WS_CHARS = " \t\r\n"

# hostname = *( domainlabel "." ) toplabel [ "." ]. A label is written as
# alnum+ ( "-"+ alnum+ )* so that the regex is unambiguous (linear time); the
# toplabel-starts-with-ALPHA rule is checked after the match.
_LABEL = r"[A-Za-z0-9]+(?:-+[A-Za-z0-9]+)*"
_HOST = rf"\[[0-9A-Fa-f:.]+\]|{_LABEL}(?:\.{_LABEL})*\.?"
_HOST_LAX = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_\-.]*"

_USERINFO = re.compile(rf"([{_USER_C}]+)(?::([{_PASSWORD_C}]*))?")
_USERINFO_LAX = re.compile(rf"([^{_LAX_EXCLUDE}@:]+)(?::([^{_LAX_EXCLUDE}@]*))?")
_USERINFO_CHARS = re.compile(rf"[{_USER_C}:]*")
_USERINFO_CHARS_LAX = re.compile(rf"[^{_LAX_EXCLUDE}@]*")

# hostport uri-parameters [ headers ], everything after the "@" (or the scheme).
_HOSTPORT = re.compile(
    rf"({_HOST})(?::([0-9]+))?"
    rf"((?:;[{_PARAM_C}]+(?:=[{_PARAM_C}]+)?)*)"
    rf"(?:\?([{_HNV_C}]+=[{_HNV_C}]*(?:&[{_HNV_C}]+=[{_HNV_C}]*)*))?"
)
_LAX_HEADER = rf"[^{_LAX_EXCLUDE}&=]+(?:=[^{_LAX_EXCLUDE}&]*)?"
_HOSTPORT_LAX = re.compile(
    rf"({_HOST_LAX})(?::([0-9]+))?"
    rf"((?:;[^{_LAX_EXCLUDE};?=]+(?:=[^{_LAX_EXCLUDE};?]*)?)*)"
    rf"(?:\?({_LAX_HEADER}(?:&{_LAX_HEADER})*))?"
)
_SIP_CHARS = re.compile(rf"[{_URIC_C}#]*")
_SIP_CHARS_LAX = re.compile(rf"[^{_LAX_EXCLUDE}]*")

# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT; RFC 5954 4.1
# narrows each part to a dec-octet (0-255, no leading zero), checked after the
# match. The leading-zero rule matters to a gateway: inet_aton() reads "010"
# as octal 8, so "10.0.0.010" could name a different host to another stack.
_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_ESCAPE_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 2396 3.1)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_ABS_REST = re.compile(rf"[{_URIC_C}]+")
_ABS_REST_LAX = re.compile(rf"[^{_LAX_EXCLUDE}]+")

# RFC 3966 3: global-number-digits = "+" *phonedigit DIGIT *phonedigit,
# local-number-digits = *phonedigit-hex (HEXDIG / "*" / "#") *phonedigit-hex,
# parameter = ";" pname ["=" pvalue], pname = 1*( alphanum / "-" ).
# The "at least one digit" parts are checked after the match (linear regex).
_TEL = re.compile(rf"(\+[0-9\-.()]+|[0-9A-Fa-f*#\-.()]+)((?:;[{_ALNUM}\-]+(?:=[{_PARAM_C}]+)?)*)")
_TEL_LAX = re.compile(
    rf"([^{_LAX_EXCLUDE};]+)((?:;[^{_LAX_EXCLUDE};=]+(?:=[^{_LAX_EXCLUDE};]*)?)*)"
)
_TEL_CHARS = re.compile(rf"[{_PARAM_C};=*#]*")
_TEL_GLOBAL_DIGITS = re.compile(r"\+[0-9\-.()]*[0-9][0-9\-.()]*")
_TEL_EXT = re.compile(r"[0-9\-.()]*[0-9][0-9\-.()]*")
_TEL_LOCAL_NEEDS = re.compile(r"[0-9A-Fa-f*#]")
_TEL_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
# UTF8-NONASCII excludes the surrogate range: a lone surrogate is a byte that
# was not UTF-8 (surrogateescape).
_QUOTED = re.compile(
    r'"((?:[ \t\x21\x23-\x5b\x5d-\x7e\x80-\ud7ff\ue000-\U0010ffff]|\r\n[ \t]'
    r'|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"'
)
_QUOTED_LAX = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_QDTEXT_CHAR = re.compile(r"[ \t\x21\x23-\x5b\x5d-\x7e\x80-\ud7ff\ue000-\U0010ffff]")
_QUOTED_PAIR_CHAR = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x7f]")

# display-name = *(token LWS) / quoted-string, then LAQUOT = SWS "<".
_TOKEN_DISPLAY = re.compile(rf"([{_TOKEN_C}]+(?:{_LWS}[{_TOKEN_C}]+)*)?{_SWS}<")
_DISPLAY_LAX_C = r"^\x00-\x20\x7f\"<>,;\\"
_TOKEN_DISPLAY_LAX = re.compile(rf"([{_DISPLAY_LAX_C}]+(?:{_LWS}[{_DISPLAY_LAX_C}]+)*)?{_SWS}<")
_TOKEN_WORDS = re.compile(rf"[{_TOKEN_C}]+(?:{_LWS}[{_TOKEN_C}]+)*")
_DISPLAY_WORD_CHAR = re.compile(rf"[{_TOKEN_C} \t]")
_DISPLAY_WORD_CHAR_LAX = re.compile(rf"[{_DISPLAY_LAX_C}]|[ \t]")

# SEMI generic-param, generic-param = token [ EQUAL gen-value ],
# gen-value = token / host / quoted-string (hostname and IPv4 are tokens).
_QUOTED_BODY = _QUOTED.pattern
_HPARAM = re.compile(
    rf"{_SWS};{_SWS}([{_TOKEN_C}]+)"
    rf"(?:{_SWS}={_SWS}([{_TOKEN_C}]+|\[[0-9A-Fa-f:.]+\]|{_QUOTED_BODY}))?"
)
_HPARAM_LAX = re.compile(
    rf"{_SWS};{_SWS}([^{_LAX_EXCLUDE};,=]+)"
    rf"(?:{_SWS}={_SWS}([^{_LAX_EXCLUDE};,=]+|{_QUOTED_LAX.pattern}))?",
    re.DOTALL,
)
_TOKEN = re.compile(rf"[{_TOKEN_C}]+")
_GEN_VALUE = re.compile(rf"[{_TOKEN_C}]+|\[[0-9A-Fa-f:.]+\]|{_QUOTED_BODY}")
_ADDR_SPEC_END = re.compile(r"[; \t\r\n]")
_NEEDS_BRACKETS = re.compile(r"[,;?]")

_RESERVED: Final = frozenset(";/?:@&=+$,")
# RFC 3261 19.1.4: these parameters must appear in both URIs or in neither.
_MUST_MATCH_PARAMS: Final = ("user", "ttl", "method", "maddr", "transport")

# -- escapes ----------------------------------------------------------------------------------


def _decode_escape_run(match: re.Match[str]) -> str:
    # A run of %HH is decoded as one byte string so multi-byte UTF-8 survives;
    # bytes that are not UTF-8 become lone surrogates, like the message text.
    return bytes.fromhex(match.group().replace("%", "")).decode("utf-8", "surrogateescape")


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes (RFC 3261 25.1 ``escaped``), once, never recursively.

    ``"v%61lue%25%34%31"`` becomes ``"value%41"`` (RFC 4475 3.1.1.3 esc01), and
    ``"null-%00-null"`` keeps its NUL (escnull). Octets that are not UTF-8 come
    back as lone surrogates (``surrogateescape``); a ``%`` not followed by two
    hex digits (only possible in lenient mode) is kept literally.
    """
    if "%" not in text:
        return text
    return _ESCAPE_RUN.sub(_decode_escape_run, text)


def _normalize_escape(match: re.Match[str]) -> str:
    value = int(match.group(1), 16)
    char = chr(value)
    # RFC 3261 19.1.4: characters other than the reserved set are equivalent
    # to their %HH encoding. "%" itself stays escaped so that "%2541" and
    # "%41" never collapse into the same text.
    if value < 0x80 and char not in _RESERVED and char != "%":
        return char
    return "%" + match.group(1).upper()


def _normalize(text: str) -> str:
    """The comparison form of a URI component (RFC 3261 19.1.4)."""
    if "%" not in text:
        return text
    return _ESCAPE.sub(_normalize_escape, text)


_USER_SAFE: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/"
)


def escape_user(text: str) -> str:
    """Percent-encode ``text`` so it is a valid SIP URI ``user`` (RFC 3261 25.1).

    Every character outside ``unreserved`` / ``user-unreserved`` is encoded as
    the %HH escapes of its UTF-8 bytes (lone surrogates as the byte they stand
    for). ``unescape(escape_user(x)) == x`` for any ``x``.
    """
    if all(char in _USER_SAFE for char in text):
        return text
    out: list[str] = []
    for char in text:
        if char in _USER_SAFE:
            out.append(char)
        else:
            errors = "surrogateescape" if "\udc80" <= char <= "\udcff" else "surrogatepass"
            data = char.encode("utf-8", errors)
            out.append("".join(f"%{byte:02X}" for byte in data))
    return "".join(out)


def unquote(value: str) -> str:
    """The content of a quoted-string with quoted-pairs resolved; other text unchanged.

    Header parameter values are kept as written, quotes included
    (``+sip.instance="<urn:uuid:...>"``); this gives the value itself.
    """
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
    return value


# -- small shared helpers ---------------------------------------------------------------------


def _first_outside(pattern: re.Pattern[str], text: str, start: int, end: int | None = None) -> int:
    """Index of the first character in text[start:end] that ``pattern`` (a ``[...]*``) stops at."""
    match = pattern.match(text, start, len(text) if end is None else end)
    return start if match is None else match.end()


def _describe(text: str, offset: int) -> str:
    return repr(text[offset]) if offset < len(text) else "end of input"


def _param_key(name: str) -> str:
    # Parameter names may be escaped (RFC 4475 esc01: "%6C%72" is "lr").
    return (unescape(name) if "%" in name else name).lower()


def _lookup(params: tuple[tuple[str, str | None], ...], name: str, escaped: bool) -> str | None:
    key = name.lower()
    for pname, value in params:
        if (_param_key(pname) if escaped else pname.lower()) == key:
            return "" if value is None else value
    return None


def _compose_params(params: tuple[tuple[str, str | None], ...]) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def _set_param(
    params: tuple[tuple[str, str | None], ...], name: str, value: str | None, escaped: bool
) -> tuple[tuple[str, str | None], ...]:
    key = name.lower()
    out: list[tuple[str, str | None]] = []
    done = False
    for pname, pvalue in params:
        if (_param_key(pname) if escaped else pname.lower()) == key:
            if not done:
                out.append((name, value))
                done = True
        else:
            out.append((pname, pvalue))
    if not done:
        out.append((name, value))
    return tuple(out)


def _drop_param(
    params: tuple[tuple[str, str | None], ...], name: str, escaped: bool
) -> tuple[tuple[str, str | None], ...]:
    key = name.lower()
    return tuple(
        (pname, value)
        for pname, value in params
        if (_param_key(pname) if escaped else pname.lower()) != key
    )


def _split_params(section: str) -> tuple[tuple[str, str | None], ...]:
    # ``section`` is ";a=b;c" and was validated by the caller's regex.
    if section.find(";", 1) < 0:  # one parameter: the common case, no list
        name, eq, value = section[1:].partition("=")
        return ((name, value if eq else None),)
    out: list[tuple[str, str | None]] = []
    for item in section[1:].split(";"):
        name, eq, value = item.partition("=")
        out.append((name, value if eq else None))
    return tuple(out)


def _host_key(host: str) -> str:
    """Comparison form of a host: case-folded; IP addresses by value (RFC 5954 4.2).

    (A leading-zero IPv4 part, accepted only in lenient mode, counts as decimal.)
    """
    if host[:1] == "[":
        try:
            return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
        except ValueError:  # pragma: no cover - validated at parse time
            return host.lower()
    match = _IPV4.fullmatch(host)
    if match is not None:
        return ".".join(str(int(part)) for part in match.groups())
    return host.lower()


def _check_host(host: str, offset: int, strict: bool) -> None:
    """Checks the regex cannot express: IPv6 syntax, dec-octets, toplabel (RFC 3261 25.1)."""
    if host[0] == "[":
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise RemoteProtocolError(
                f"invalid IPv6 reference {host!r}", rule=_R_HOST, offset=offset
            ) from None
        return
    end = len(host) - 1 if host[-1] == "." else len(host)
    first = host[host.rfind(".", 0, end) + 1]
    if first.isalpha():
        return
    match = _IPV4.fullmatch(host)
    if match is not None:
        # RFC 5954 4.1: each part of an IPv4address is a dec-octet (0-255);
        # lenient mode reads a leading-zero part as decimal.
        for index, part in enumerate(match.groups()):
            if int(part) > 255 or (strict and len(part) > 1 and part[0] == "0"):
                raise RemoteProtocolError(
                    f"IPv4 address part {part!r} is not a dec-octet (0-255, no leading zero)",
                    rule=_R_HOST,
                    offset=offset + match.start(index + 1),
                )
        return
    if strict:
        raise RemoteProtocolError(
            f"host {host!r} is neither an IPv4 address nor a hostname whose last label "
            "starts with a letter",
            rule=_R_HOST,
            offset=offset,
        )


def _parse_port(port: str, offset: int) -> int:
    digits = port.lstrip("0")
    # Bound the digits before int(): a 5000-digit port must not cost more.
    if len(digits) > 5 or int(digits or "0") > 65535:
        raise RemoteProtocolError(
            f"port {port[:12]!r} is not in 0-65535", rule=_R_PORT, offset=offset
        )
    return int(digits or "0")


# -- SIP / SIPS URI ---------------------------------------------------------------------------


class _Written:
    """What every parsed URI and address shares: its text as written is its identity.

    ``str()`` gives the exact text parsed (or built); ``==`` and ``hash``
    compare that text, ``equivalent()`` (per class) is the RFC comparison.
    """

    __slots__ = ()
    _raw: str

    def __str__(self) -> str:
        return self._raw

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._raw!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))


class _WithParams(_Written):
    """Parameter lookup by name (any case) over ``params``.

    ``_ESCAPED_NAMES``: whether names may be written with escapes (SIP URI
    parameters: ``%6C%72`` is ``lr``); header and tel parameters are tokens.
    """

    __slots__ = ()
    params: tuple[tuple[str, str | None], ...]
    _ESCAPED_NAMES = False

    def param(self, name: str) -> str | None:
        """The value of parameter ``name``: ``None`` if absent, ``""`` if valueless (``;lr``).

        The value is as written (escapes kept).
        """
        return _lookup(self.params, name, self._ESCAPED_NAMES)

    def has_param(self, name: str) -> bool:
        return _lookup(self.params, name, self._ESCAPED_NAMES) is not None


class SipUri(_WithParams):
    """A ``sip:`` or ``sips:`` URI (RFC 3261 19.1). Treat as immutable.

    Components are kept as written: ``user`` keeps its escapes, ``host`` keeps
    its case and the brackets of an IPv6 reference, ``params`` and ``headers``
    keep their order and spelling. ``str()`` gives back the exact text parsed.
    ``==`` compares that text; :meth:`equivalent` applies RFC 3261 19.1.4.

    The constructor checks its arguments by serialising and re-parsing them
    (strict) and raises :class:`LocalProtocolError` if they do not survive.
    """

    # uri-parameter names may be written with escapes (RFC 3261 25.1 pname).
    _ESCAPED_NAMES = True

    __slots__ = ("_raw", "headers", "host", "params", "password", "port", "scheme", "user")

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]
    headers: tuple[tuple[str, str], ...]
    _raw: str

    def __init__(
        self,
        host: str,
        *,
        scheme: str = "sip",
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        params: tuple[tuple[str, str | None], ...] = (),
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        built = _build_sip(scheme, user, password, host, port, params, headers)
        self.scheme = built.scheme
        self.user = built.user
        self.password = built.password
        self.host = built.host
        self.port = built.port
        self.params = built.params
        self.headers = built.headers
        self._raw = built._raw

    # -- views ---------------------------------------------------------------------------

    @property
    def transport(self) -> str | None:
        """The transport-param, lower-cased (transport names are case-insensitive)."""
        value = self.param("transport")
        return None if value is None else value.lower()

    @property
    def lr(self) -> bool:
        """True when the lr parameter marks a loose router (RFC 3261 19.1.1, 16.4)."""
        return self.has_param("lr")

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def user_param(self) -> str | None:
        """The ``;user=`` parameter (``phone``, ``ip``, ...), lower-cased."""
        value = self.param("user")
        return None if value is None else value.lower()

    @property
    def method(self) -> str | None:
        """The ``;method=`` parameter, as written (methods are case-sensitive)."""
        return self.param("method")

    @property
    def ttl(self) -> int | None:
        """The ``;ttl=`` parameter (ttl = 1*3DIGIT, 0-255); None if absent or not a ttl."""
        value = self.param("ttl")
        if value is None or not (1 <= len(value) <= 3) or not value.isdigit():
            return None
        number = int(value)
        return number if number <= 255 else None

    @property
    def is_secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def bare_host(self) -> str:
        """The host without the brackets of an IPv6 reference (for address lookups)."""
        host = self.host
        return host[1:-1] if host[:1] == "[" else host

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def unescaped_user(self) -> str | None:
        """The user part with ``%HH`` decoded (RFC 4475 semiuri: ``user;par=u@example.net``)."""
        user = self.user
        return None if user is None else unescape(user)

    def address_of_record(self) -> str:
        """A canonical ``scheme:user@host`` key (RFC 3261 10.3 step 5).

        Parameters and port are dropped, the host is case-folded (IP
        addresses normalised), and escapes are normalised as RFC 3261 19.1.4
        compares them (unreserved characters decoded, reserved ones kept
        escaped) so the key cannot be made ambiguous by an escaped ``@``.
        """
        host = _host_key(self.host)
        if self.user is None:
            return f"{self.scheme}:{host}"
        return f"{self.scheme}:{_normalize(self.user)}@{host}"

    # -- comparison ----------------------------------------------------------------------

    def equivalent(self, other: SipUri | TelUri | AbsoluteUri) -> bool:
        """RFC 3261 19.1.4 URI comparison.

        Scheme, user and password are compared case-sensitively, everything
        else case-insensitively; characters outside the reserved set equal
        their escapes; IP hosts compare by value (RFC 5954 4.2); a
        user/ttl/method/maddr/transport parameter in only one URI makes them
        differ, other parameters in only one are ignored; parameter and header
        order does not matter; headers must all match.
        """
        if not isinstance(other, SipUri) or self.scheme != other.scheme:
            return False
        if self.port != other.port:
            return False
        if (self.user is None) != (other.user is None) or (
            self.user is not None
            and other.user is not None
            and _normalize(self.user) != _normalize(other.user)
        ):
            return False
        if (self.password is None) != (other.password is None) or (
            self.password is not None
            and other.password is not None
            and _normalize(self.password) != _normalize(other.password)
        ):
            return False
        if _host_key(self.host) != _host_key(other.host):
            return False
        mine, theirs = _param_map(self.params), _param_map(other.params)
        for key in _MUST_MATCH_PARAMS:
            if mine.get(key, KEEP) != theirs.get(key, KEEP):
                return False
        for key in mine.keys() & theirs.keys():
            if mine[key] != theirs[key]:
                return False
        return _header_multiset(self.headers) == _header_multiset(other.headers)

    # -- editing -------------------------------------------------------------------------

    def replace(
        self,
        *,
        scheme: str | _Keep = KEEP,
        user: str | _Keep | None = KEEP,
        password: str | _Keep | None = KEEP,
        host: str | _Keep = KEEP,
        port: int | _Keep | None = KEEP,
        params: tuple[tuple[str, str | None], ...] | _Keep = KEEP,
        headers: tuple[tuple[str, str], ...] | _Keep = KEEP,
    ) -> SipUri:
        """A copy with some components replaced (topology hiding, Request-URI rewrites).

        Pass :data:`KEEP` (the default) to keep a component. Values are written
        as given (escape a user with :func:`escape_user`); the result must be
        strictly valid, so a component that would not survive serialisation,
        or one only lenient mode accepted, raises :class:`LocalProtocolError`.
        """
        return _build_sip(
            self.scheme if isinstance(scheme, _Keep) else scheme,
            self.user if isinstance(user, _Keep) else user,
            self.password if isinstance(password, _Keep) else password,
            self.host if isinstance(host, _Keep) else host,
            self.port if isinstance(port, _Keep) else port,
            self.params if isinstance(params, _Keep) else params,
            self.headers if isinstance(headers, _Keep) else headers,
        )

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        """Set a uri-parameter (replacing one of the same name in place, else appending)."""
        return self.replace(params=_set_param(self.params, name, value, True))

    def without_param(self, name: str) -> SipUri:
        return self.replace(params=_drop_param(self.params, name, True))


def _param_map(params: tuple[tuple[str, str | None], ...]) -> dict[str, str | None]:
    return {
        _normalize(name).lower(): None if value is None else _normalize(value).lower()
        for name, value in params
    }


def _header_multiset(headers: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    # Header names are case-insensitive, values compared with escapes normalised.
    return sorted((_normalize(name).lower(), _normalize(value)) for name, value in headers)


def _make_sip(  # noqa: PLR0917 - positional on purpose: the parser's hot path
    raw: str,
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: int | None,
    params: tuple[tuple[str, str | None], ...],
    headers: tuple[tuple[str, str], ...],
) -> SipUri:
    # The parser's constructor: no re-validation (the text was just parsed).
    uri = SipUri.__new__(SipUri)
    uri._raw = raw
    uri.scheme = scheme
    uri.user = user
    uri.password = password
    uri.host = host
    uri.port = port
    uri.params = params
    uri.headers = headers
    return uri


def _build_sip(  # noqa: PLR0917 - mirrors _make_sip
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: int | None,
    params: tuple[tuple[str, str | None], ...],
    headers: tuple[tuple[str, str], ...],
) -> SipUri:
    parts: list[str] = [scheme, ":"]
    if user is not None:
        parts.append(user)
        if password is not None:
            parts.append(":")
            parts.append(password)
        parts.append("@")
    parts.append(host)
    if port is not None:
        parts.append(f":{port}")
    parts.append(_compose_params(params))
    if headers:
        parts.append("?" + "&".join(f"{name}={value}" for name, value in headers))
    text = "".join(parts)
    try:
        uri = parse_uri(text)
    except RemoteProtocolError as error:
        raise LocalProtocolError(f"cannot build a SIP URI from {text!r}: {error}") from None
    if not (
        isinstance(uri, SipUri)
        and uri.scheme == scheme
        and uri.user == user
        and uri.password == password
        and uri.host == host
        and uri.port == port
        and uri.params == tuple(params)
        and uri.headers == tuple(headers)
    ):
        raise LocalProtocolError(f"the SIP URI components do not survive serialisation as {text!r}")
    return uri


def _parse_sip(text: str, scheme: str, start: int, strict: bool) -> SipUri:
    at = text.find("@", start)
    if at >= 0:
        # userinfo = ( user / telephone-subscriber ) [ ":" password ] "@".
        # Neither user nor password may hold an unescaped "@", and the host,
        # parameters and headers cannot either, so the first "@" ends userinfo.
        match = (_USERINFO if strict else _USERINFO_LAX).fullmatch(text, start, at)
        if match is None:
            chars = _USERINFO_CHARS if strict else _USERINFO_CHARS_LAX
            offset = _first_outside(chars, text, start, at)
            if offset == at:
                offset = start
            raise RemoteProtocolError(
                f"invalid user or password (at {_describe(text, offset)})",
                rule=_R_USERINFO,
                offset=offset,
            )
        user, password = match.group(1, 2)
        hstart = at + 1
    else:
        user = password = None
        hstart = start
    match = (_HOSTPORT if strict else _HOSTPORT_LAX).match(text, hstart)
    if match is None or match.end() != len(text):
        raise _sip_rest_error(text, hstart, match, strict)
    host, port_text, param_text, header_text = match.groups()
    # Fast path: the last label starts with a letter, so it is a hostname
    # (toplabel = ALPHA ...); IPv4, IPv6 and odd cases go to _check_host.
    dot = host.rfind(".")
    if not host[dot + 1 : dot + 2].isalpha():
        _check_host(host, hstart, strict)
    port = None if port_text is None else _parse_port(port_text, match.start(2))
    if strict and "%" in text:
        bad = _BAD_ESCAPE.search(text, start)
        if bad is not None:
            raise RemoteProtocolError(
                "'%' must be followed by two hex digits", rule=_R_ESCAPED, offset=bad.start()
            )
    params = _split_params(param_text) if param_text else ()
    headers: tuple[tuple[str, str], ...] = ()
    if header_text is not None:
        headers = tuple(
            (name, value) for name, _, value in (h.partition("=") for h in header_text.split("&"))
        )
    return _make_sip(text, scheme, user, password, host, port, params, headers)


def _sip_rest_error(
    text: str, hstart: int, match: re.Match[str] | None, strict: bool
) -> RemoteProtocolError:
    chars = _SIP_CHARS if strict else _SIP_CHARS_LAX
    stop = hstart if match is None else match.end()
    bad = _first_outside(chars, text, stop)
    if bad < len(text):
        return RemoteProtocolError(
            f"character {text[bad]!r} is not allowed in a SIP URI",
            rule=_R_SIP_URI,
            offset=bad,
        )
    if match is None:
        return RemoteProtocolError(
            f"invalid host (at {_describe(text, hstart)})", rule=_R_HOST, offset=hstart
        )
    char = text[stop]
    if char == ":":
        return RemoteProtocolError("the port must be 1*DIGIT", rule=_R_PORT, offset=stop + 1)
    if char == ";":
        return RemoteProtocolError(
            "invalid uri-parameter (pname [ '=' pvalue ])", rule=_R_URI_PARAMS, offset=stop + 1
        )
    if char == "?":
        return RemoteProtocolError(
            "invalid headers (hname '=' hvalue *( '&' ... ))", rule=_R_URI_HEADERS, offset=stop + 1
        )
    rule = _R_HOST if match.end(1) == stop else _R_SIP_URI
    return RemoteProtocolError(f"unexpected {char!r} in SIP URI", rule=rule, offset=stop)


# -- tel URI ----------------------------------------------------------------------------------


class TelUri(_WithParams):
    """A ``tel:`` URI (RFC 3966). Treat as immutable.

    ``number`` is the telephone-subscriber number as written (visual
    separators kept: ``+1-201-555-0123``); :attr:`digits` drops them.
    ``params`` holds isub, ext, phone-context and any other parameters in order.
    """

    __slots__ = ("_raw", "is_global", "number", "params")

    scheme: ClassVar[str] = "tel"
    number: str
    params: tuple[tuple[str, str | None], ...]
    is_global: bool
    _raw: str

    def __init__(self, number: str, *, params: tuple[tuple[str, str | None], ...] = ()) -> None:
        text = "tel:" + number + _compose_params(params)
        try:
            built = parse_uri(text)
        except RemoteProtocolError as error:
            raise LocalProtocolError(f"cannot build a tel URI from {text!r}: {error}") from None
        if not (
            isinstance(built, TelUri) and built.number == number and built.params == tuple(params)
        ):
            raise LocalProtocolError(f"the tel URI components do not survive as {text!r}")
        self.number = built.number
        self.params = built.params
        self.is_global = built.is_global
        self._raw = built._raw

    @property
    def digits(self) -> str:
        """The number without visual separators ``-.()`` (RFC 3966 5.1.1)."""
        return self.number.translate(_VISUAL_SEPARATORS)

    @property
    def phone_context(self) -> str | None:
        return self.param("phone-context")

    @property
    def ext(self) -> str | None:
        return self.param("ext")

    @property
    def isub(self) -> str | None:
        return self.param("isub")

    def equivalent(self, other: SipUri | TelUri | AbsoluteUri) -> bool:
        """RFC 3966 4: same number (separators ignored), same parameters, any order,
        case-insensitive; a parameter in only one URI makes them differ."""
        if not isinstance(other, TelUri) or self.is_global != other.is_global:
            return False
        if self.digits.lower() != other.digits.lower():
            return False
        return _tel_param_map(self.params) == _tel_param_map(other.params)


def _tel_param_map(params: tuple[tuple[str, str | None], ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, value in params:
        key = name.lower()
        if value is None:
            out[key] = None
            continue
        norm = _normalize(value).lower()
        if key == "phone-context" and norm[:1] == "+":
            # A global-number-digits descriptor is compared digit by digit.
            norm = norm.translate(_VISUAL_SEPARATORS)
        out[key] = norm
    return out


def _parse_tel(text: str, start: int, strict: bool) -> TelUri:
    match = (_TEL if strict else _TEL_LAX).match(text, start)
    if match is None or match.end() != len(text):
        stop = start if match is None else match.end()
        bad = _first_outside(_TEL_CHARS, text, stop) if strict else stop
        offset = bad if bad < len(text) else stop
        raise RemoteProtocolError(
            f"invalid tel URI (at {_describe(text, offset)})", rule=_R_TEL, offset=offset
        )
    number, param_text = match.groups()
    params = _split_params(param_text) if param_text else ()
    is_global = number[0] == "+"
    if strict:
        if is_global and not any(char.isdigit() for char in number):
            raise RemoteProtocolError(
                "a global number needs at least one digit", rule=_R_TEL, offset=start
            )
        if not is_global and _TEL_LOCAL_NEEDS.search(number) is None:
            raise RemoteProtocolError(
                "a local number needs at least one digit", rule=_R_TEL, offset=start
            )
        if "%" in param_text:
            escape = _BAD_ESCAPE.search(text, start)
            if escape is not None:
                raise RemoteProtocolError(
                    "'%' must be followed by two hex digits",
                    rule=_R_ESCAPED,
                    offset=escape.start(),
                )
        _check_tel_params(match.start(2), params, is_global)
    return _make_tel(text, number, params, is_global)


def _check_tel_params(
    offset: int, params: tuple[tuple[str, str | None], ...], is_global: bool
) -> None:
    context = None
    for name, value in params:
        key = name.lower()
        if key == "phone-context":
            # descriptor = domainname / global-number-digits (RFC 3966 3)
            if value is None or not (
                _TEL_GLOBAL_DIGITS.fullmatch(value) or _valid_domainname(value)
            ):
                raise RemoteProtocolError(
                    "phone-context must be a domain name or a global number",
                    rule=_R_TEL_CONTEXT,
                    offset=offset,
                )
            context = value
        elif key == "ext" and (value is None or _TEL_EXT.fullmatch(value) is None):
            raise RemoteProtocolError(
                "ext must be phone digits", rule="RFC 3966 3 extension", offset=offset
            )
    if not is_global and context is None:
        # RFC 3966 5.1.5: local numbers MUST carry a phone-context.
        raise RemoteProtocolError(
            "a local number needs a phone-context parameter", rule=_R_TEL_CONTEXT, offset=offset
        )


def _valid_domainname(value: str) -> bool:
    if _TEL_DOMAIN.fullmatch(value) is None:
        return False
    end = len(value) - 1 if value[-1] == "." else len(value)
    return value[value.rfind(".", 0, end) + 1].isalpha()


def _make_tel(
    raw: str, number: str, params: tuple[tuple[str, str | None], ...], is_global: bool
) -> TelUri:
    uri = TelUri.__new__(TelUri)
    uri._raw = raw
    uri.number = number
    uri.params = params
    uri.is_global = is_global
    return uri


# -- any other scheme -------------------------------------------------------------------------


class AbsoluteUri(_Written):
    """A URI of a scheme this module does not interpret (RFC 2396 absoluteURI).

    Kept opaque so a proxy can answer 416 Unsupported URI Scheme (RFC 3261
    8.2.2.1; RFC 4475 unkscm, novelsc) or forward it untouched.
    """

    __slots__ = ("_raw", "rest", "scheme")

    scheme: str
    rest: str
    _raw: str

    def __init__(self, scheme: str, rest: str) -> None:
        text = f"{scheme}:{rest}"
        try:
            built = parse_uri(text)
        except RemoteProtocolError as error:
            raise LocalProtocolError(f"cannot build a URI from {text!r}: {error}") from None
        if not isinstance(built, AbsoluteUri):
            raise LocalProtocolError(f"{text!r} is a SIP or tel URI, not an opaque one")
        self.scheme = built.scheme
        self.rest = built.rest
        self._raw = built._raw

    def equivalent(self, other: SipUri | TelUri | AbsoluteUri) -> bool:
        """Same scheme (case-insensitive) and same rest, escapes normalised (RFC 3986 6.2.2)."""
        return (
            isinstance(other, AbsoluteUri)
            and self.scheme == other.scheme
            and _normalize(self.rest) == _normalize(other.rest)
        )


def _parse_absolute(text: str, colon: int, strict: bool) -> AbsoluteUri:
    if colon <= 0:
        raise RemoteProtocolError(
            "a URI must start with a scheme and ':'", rule=_R_SCHEME, offset=max(colon, 0)
        )
    scheme_match = _SCHEME.match(text, 0, colon)
    if scheme_match is None or scheme_match.end() != colon:
        offset = 0 if scheme_match is None else scheme_match.end()
        raise RemoteProtocolError(
            f"invalid URI scheme (at {_describe(text, offset)})", rule=_R_SCHEME, offset=offset
        )
    match = (_ABS_REST if strict else _ABS_REST_LAX).match(text, colon + 1)
    if match is None or match.end() != len(text):
        offset = colon + 1 if match is None else match.end()
        raise RemoteProtocolError(
            f"invalid URI (at {_describe(text, offset)})", rule=_R_ABSOLUTE, offset=offset
        )
    if strict and "%" in text:
        bad = _BAD_ESCAPE.search(text, colon + 1)
        if bad is not None:
            raise RemoteProtocolError(
                "'%' must be followed by two hex digits", rule=_R_ESCAPED, offset=bad.start()
            )
    uri = AbsoluteUri.__new__(AbsoluteUri)
    uri._raw = text
    uri.scheme = text[:colon].lower()
    uri.rest = text[colon + 1 :]
    return uri


Uri: TypeAlias = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str, *, strict: bool = True) -> Uri:
    """Parse a URI: :class:`SipUri` (sip, sips), :class:`TelUri` (tel) or :class:`AbsoluteUri`.

    Scheme names are case-insensitive (RFC 3261 19.1.4, RFC 2396 3.1). Raises
    :class:`RemoteProtocolError` (``offset`` indexes ``text``) and nothing else.
    """
    colon = text.find(":")
    if colon > 0:
        scheme = text[:colon].lower()
        if scheme in ("sip", "sips"):
            return _parse_sip(text, scheme, colon + 1, strict)
        if scheme == "tel":
            return _parse_tel(text, colon + 1, strict)
    return _parse_absolute(text, colon, strict)


def parse_request_uri(text: str, *, strict: bool = True) -> Uri:
    """Parse a Request-URI: :func:`parse_uri` plus the RFC 3261 19.1.1 table.

    URI headers (``?h=v``) are not allowed in a Request-URI. Strict raises;
    lenient drops them (RFC 4475 3.1.2.11 escruri: "the escaped headers must
    not appear in the Request-URI of the forwarded request").
    """
    uri = parse_uri(text, strict=strict)
    if isinstance(uri, SipUri) and uri.headers:
        # The headers start at the first "?" after userinfo: the user part
        # may hold "?" (user-unreserved), host and uri-parameters may not.
        end = text.find("?", text.find("@") + 1 if uri.user is not None else 0)
        if strict:
            raise RemoteProtocolError(
                "a Request-URI must not contain headers", rule=_R_RURI_HEADERS, offset=end
            )
        return _make_sip(
            text[:end], uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params, ()
        )
    return uri


# -- name-addr / addr-spec --------------------------------------------------------------------


class NameAddr(_WithParams):
    """An address as in From, To, Contact, Route, Record-Route, Refer-To (RFC 3261 20.10).

    ``display_name`` is unquoted with quoted-pairs resolved (a token-form
    display name is kept as written, inner LWS included); ``None`` when there
    is none. ``params`` are the header parameters after the address (tag,
    expires, q, ...), values as written (a quoted value keeps its quotes; see
    :func:`unquote`). ``bracketed`` is True for the ``<...>`` (name-addr) form.
    ``str()`` gives back the exact text parsed. Treat as immutable.
    """

    __slots__ = ("_display_raw", "_raw", "bracketed", "display_name", "params", "uri")

    display_name: str | None
    uri: Uri
    params: tuple[tuple[str, str | None], ...]
    bracketed: bool
    _display_raw: str | None
    _raw: str

    def __init__(
        self,
        uri: Uri,
        *,
        display_name: str | None = None,
        params: tuple[tuple[str, str | None], ...] = (),
        bracketed: bool = True,
    ) -> None:
        built = _build_name_addr(
            None if display_name is None else _quote(display_name), uri, params, bracketed
        )
        self.display_name = built.display_name
        self.uri = built.uri
        self.params = built.params
        self.bracketed = built.bracketed
        self._display_raw = built._display_raw
        self._raw = built._raw

    @property
    def tag(self) -> str | None:
        """The tag parameter (RFC 3261 19.3), or None."""
        return _lookup(self.params, "tag", False)

    def replace(
        self,
        *,
        display_name: str | _Keep | None = KEEP,
        uri: Uri | _Keep = KEEP,
        params: tuple[tuple[str, str | None], ...] | _Keep = KEEP,
    ) -> NameAddr:
        """A copy with some parts replaced; an unchanged display name keeps its spelling.

        The result is bracketed whenever RFC 3261 20.10 requires it (a display
        name, or a URI containing ``,``, ``?`` or ``;``).
        """
        if isinstance(display_name, _Keep):
            display_raw = self._display_raw
            # A spelling only lenient mode accepted (J\u00f6rg <...>) is re-quoted.
            if display_raw is not None and not (
                _TOKEN_WORDS.fullmatch(display_raw) or _QUOTED.fullmatch(display_raw)
            ):
                display_raw = _quote(self.display_name or "")
        else:
            display_raw = None if display_name is None else _quote(display_name)
        return _build_name_addr(
            display_raw,
            self.uri if isinstance(uri, _Keep) else uri,
            self.params if isinstance(params, _Keep) else params,
            self.bracketed,
        )

    def with_param(self, name: str, value: str | None = None) -> NameAddr:
        """Set a header parameter (replacing one of the same name in place, else appending)."""
        return self.replace(params=_set_param(self.params, name, value, False))

    def without_param(self, name: str) -> NameAddr:
        return self.replace(params=_drop_param(self.params, name, False))

    def with_tag(self, tag: str) -> NameAddr:
        return self.with_param("tag", tag)


def _quote(display_name: str) -> str:
    out = ['"']
    for char in display_name:
        if char in '"\\' or (char < " " and char not in "\t\r\n") or char == "\x7f":
            out.append("\\")  # quoted-pair (RFC 3261 25.1)
        out.append(char)
    out.append('"')
    quoted = "".join(out)
    if _QUOTED.fullmatch(quoted) is None:
        raise LocalProtocolError(
            f"display name {display_name!r} cannot be written as a quoted-string "
            "(CR, LF or a lone surrogate)"
        )
    return quoted


def _build_name_addr(
    display_raw: str | None,
    uri: Uri,
    params: tuple[tuple[str, str | None], ...],
    bracketed: bool,
) -> NameAddr:
    uri_text = str(uri)
    if display_raw is not None:
        head = f"{display_raw} <{uri_text}>"
    elif bracketed or _NEEDS_BRACKETS.search(uri_text):
        head = f"<{uri_text}>"
    else:
        head = uri_text
    for name, value in params:
        if _TOKEN.fullmatch(name) is None or (
            value is not None and _GEN_VALUE.fullmatch(value) is None
        ):
            raise LocalProtocolError(
                f"header parameter {name}={value!r} is not token [= token / host / quoted-string]"
            )
    text = head + _compose_params(params)
    try:
        built = parse_name_addr(text)
    except RemoteProtocolError as error:
        # e.g. a URI that only lenient mode accepted: never write it out as valid.
        raise LocalProtocolError(f"cannot build an address from {text!r}: {error}") from None
    # Keep the caller's URI object (and its identity) rather than the re-parse.
    built.uri = uri
    return built


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _WS_CHARS:
        pos += 1
    return pos


def _make_name_addr(  # noqa: PLR0917 - positional on purpose: hot path
    raw: str,
    display_name: str | None,
    display_raw: str | None,
    uri: Uri,
    params: tuple[tuple[str, str | None], ...],
    bracketed: bool,
) -> NameAddr:
    addr = NameAddr.__new__(NameAddr)
    addr._raw = raw
    addr.display_name = display_name
    addr._display_raw = display_raw
    addr.uri = uri
    addr.params = params
    addr.bracketed = bracketed
    return addr


# A PBX sees the same URIs over and over (its extensions and trunks, each
# phone's address in every From, To and Contact, whose tags differ per call);
# parsed URIs are immutable, so each is parsed once (see memo.py).
STRICT_URIS: Memo[str, Uri] = Memo(lambda text: parse_uri(text, strict=True))
LENIENT_URIS: Memo[str, Uri] = Memo(lambda text: parse_uri(text, strict=False))


def _sub_uri(text: str, start: int, end: int, strict: bool) -> Uri:
    """parse_uri on text[start:end] (memoised), with error offsets moved into ``text``."""
    try:
        return (STRICT_URIS if strict else LENIENT_URIS)(text[start:end])
    except RemoteProtocolError as error:
        raise RemoteProtocolError(
            error.reason,
            rule=error.rule,
            offset=start + (error.offset or 0),
            status_hint=error.status_hint,
        ) from None


def parse_name_addr(text: str, *, strict: bool = True) -> NameAddr:
    """Parse ``( name-addr / addr-spec ) *( SEMI generic-param )`` (RFC 3261 20.10, 25.1).

    One element of an address header; the caller splits list headers on
    commas first. In the addr-spec form (no ``<>``) the URI ends at the first
    ``;``: what follows are header parameters, not URI parameters (20.10,
    RFC 4475 cparam01). Raises :class:`RemoteProtocolError` (``offset``
    indexes ``text``) and nothing else. ``Contact: *`` is not an address and
    is left to the caller.
    """
    n = len(text)
    pos = _skip_ws(text, 0) if n and text[0] in _WS_CHARS else 0
    if pos >= n:
        raise RemoteProtocolError("empty address", rule=_R_NAME_ADDR, offset=pos)
    char = text[pos]
    display_name: str | None = None
    display_raw: str | None = None
    if char == '"':
        match = (_QUOTED if strict else _QUOTED_LAX).match(text, pos)
        if match is None:
            raise _quoted_error(text, pos, strict)
        display_raw = match.group()
        inner = match.group(1)
        display_name = _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
        lt = _skip_ws(text, match.end())
        if lt >= n or text[lt] != "<":
            raise RemoteProtocolError(
                f"expected '<' after the quoted display name, found {_describe(text, lt)}",
                rule=_R_NAME_ADDR,
                offset=lt,
            )
    elif char == "<":
        lt = pos
    else:
        lt = text.find("<", pos)
        semi = text.find(";", pos)
        if lt < 0 or 0 <= semi < lt:
            return _parse_addr_spec(text, pos, strict)
        match = (_TOKEN_DISPLAY if strict else _TOKEN_DISPLAY_LAX).match(text, pos)
        if match is None or match.end() - 1 != lt:
            bad = pos
            word_char = _DISPLAY_WORD_CHAR if strict else _DISPLAY_WORD_CHAR_LAX
            while bad < lt and word_char.match(text, bad):
                bad += 1
            raise RemoteProtocolError(
                f"display name has {_describe(text, bad)}, which needs quoting "
                "(display-name = *(token LWS) / quoted-string)",
                rule=_R_DISPLAY,
                offset=bad,
            )
        display_raw = display_name = match.group(1)
    gt = text.find(">", lt + 1)
    if gt < 0:
        raise RemoteProtocolError("'<' without a matching '>'", rule=_R_NAME_ADDR, offset=lt)
    start, end = lt + 1, gt
    if not strict:
        # RFC 4475 3.1.2.14 badaspec: a liberal element may ignore spaces
        # just inside the brackets (and must not forward them).
        while start < end and text[start] in _WS_CHARS:
            start += 1
        while end > start and text[end - 1] in _WS_CHARS:
            end -= 1
    uri = _sub_uri(text, start, end, strict)
    params = _parse_header_params(text, gt + 1, strict)
    return _make_name_addr(text, display_name, display_raw, uri, params, True)


def _parse_addr_spec(text: str, pos: int, strict: bool) -> NameAddr:
    end_match = _ADDR_SPEC_END.search(text, pos)
    end = len(text) if end_match is None else end_match.start()
    if strict:
        # RFC 3261 20.10: a URI containing a comma, question mark or semicolon
        # MUST be enclosed in angle brackets. (";" cannot occur here: it ends
        # the URI.) Lenient keeps them in the URI, inferring the brackets
        # (RFC 4475 3.1.2.13 regbadct).
        bad = _NEEDS_BRACKETS.search(text, pos, end)
        if bad is not None:
            raise RemoteProtocolError(
                f"a URI containing {bad.group()!r} must be enclosed in <>",
                rule=_R_BRACKETS,
                offset=bad.start(),
            )
    uri = _sub_uri(text, pos, end, strict)
    params = _parse_header_params(text, end, strict)
    return _make_name_addr(text, None, None, uri, params, False)


def _parse_header_params(text: str, pos: int, strict: bool) -> tuple[tuple[str, str | None], ...]:
    n = len(text)
    if pos >= n:
        return ()
    pattern = _HPARAM if strict else _HPARAM_LAX
    params: list[tuple[str, str | None]] = []
    while True:
        match = pattern.match(text, pos)
        if match is None:
            break
        params.append((match.group(1), match.group(2)))
        pos = match.end()
    if pos < n:
        pos = _skip_ws(text, pos)
        if pos < n:
            raise _header_param_error(text, pos, strict)
    return tuple(params)


def _header_param_error(text: str, pos: int, strict: bool) -> RemoteProtocolError:
    if text[pos] == "=":
        # The loop consumed "; name" but not the "=" and a valid value.
        return _header_value_error(text, _skip_ws(text, pos + 1), strict)
    if text[pos] != ";":
        return RemoteProtocolError(
            f"expected ';' or the end after the address, found {_describe(text, pos)}",
            rule=_R_NAME_ADDR,
            offset=pos,
        )
    pos = _skip_ws(text, pos + 1)
    name = _TOKEN.match(text, pos) if strict else None
    if strict and name is None:
        return RemoteProtocolError(
            f"parameter name must be a token, found {_describe(text, pos)}",
            rule=_R_GENERIC_PARAM,
            offset=pos,
        )
    if name is not None:
        pos = _skip_ws(text, name.end())
        if pos < len(text) and text[pos] == "=":
            return _header_value_error(text, _skip_ws(text, pos + 1), strict)
    return RemoteProtocolError(
        f"invalid header parameter at {_describe(text, pos)}",
        rule=_R_GENERIC_PARAM,
        offset=pos,
    )


def _header_value_error(text: str, pos: int, strict: bool) -> RemoteProtocolError:
    if pos < len(text) and text[pos] == '"':
        return _quoted_error(text, pos, strict)
    return RemoteProtocolError(
        f"parameter value must be a token, host or quoted-string, found {_describe(text, pos)}",
        rule=_R_GENERIC_PARAM,
        offset=pos,
    )


def _quoted_error(text: str, pos: int, strict: bool) -> RemoteProtocolError:
    """Why the quoted-string opening at ``pos`` did not match."""
    lax = _QUOTED_LAX.match(text, pos)
    if lax is None:
        return RemoteProtocolError(
            "unterminated quoted-string (unbalanced '\"')", rule=_R_QUOTED, offset=pos
        )
    index = pos + 1
    end = lax.end() - 1
    while strict and index < end:
        if text[index] == "\\":
            if index + 1 < end and _QUOTED_PAIR_CHAR.match(text, index + 1):
                index += 2
                continue
            return RemoteProtocolError("invalid quoted-pair", rule=_R_QUOTED, offset=index + 1)
        if text.startswith("\r\n", index) and index + 2 < end and text[index + 2] in " \t":
            index += 3
            continue
        if _QDTEXT_CHAR.match(text, index) is None:
            return RemoteProtocolError(
                f"character {text[index]!r} is not allowed in a quoted-string",
                rule=_R_QUOTED,
                offset=index,
            )
        index += 1
    return RemoteProtocolError(  # pragma: no cover - the strict regex would have matched
        "invalid quoted-string", rule=_R_QUOTED, offset=pos
    )
