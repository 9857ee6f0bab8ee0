"""Typed views of the header fields a SIP firewall reads, and the full grammar check.

Each ``parse_*`` function takes a message's :class:`~.headers.Headers` and
returns the typed value of one header (``None`` or an empty list when the
header is absent), raising :class:`~sipwarden.errors.RemoteProtocolError`
when its value breaks the grammar. :class:`~.message.Message` exposes them as
cached properties. ``headers.strict`` selects strict or lenient parsing of
URIs and name-addrs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

from sipwarden.errors import RemoteProtocolError

from .abnf import CALL_ID, TOKEN, TOKEN_CHARS
from .digest import DigestChallenge, DigestCredentials, parse_challenge, parse_credentials
from .headers import Headers, split_list
from .memo import Memo
from .uri import STRICT_URIS, NameAddr, SipUri, parse_name_addr

if TYPE_CHECKING:
    from .message import Message, Request

__all__ = [
    "CSeq",
    "MediaType",
    "Via",
    "message_errors",
    "parse_via",
    "validate_message",
]

_MAX_CSEQ = 2**31 - 1  # RFC 3261 8.1.1.5: "MUST be less than 2**31"
_MAX_DELTA_SECONDS = 2**32 - 1  # RFC 3261 25.1 delta-seconds, 32-bit by 20.19/20.33
_MAX_VIA_PARAMS = 32

# -- generic parameters (RFC 3261 25.1 generic-param, via-params) ----------------

# SEMI = SWS ";" SWS; EQUAL = SWS "=" SWS; gen-value = token / host / quoted-string.
# The value class is wider than token so received=IPv6 and maddr=[v6] match.
_PARAM_VALUE = rf'"(?:[^"\\]|\\.)*"|[{TOKEN_CHARS}:\[\]]+'
_PARAM = re.compile(rf"[ \t]*;[ \t]*([{TOKEN_CHARS}]+)(?:[ \t]*=[ \t]*({_PARAM_VALUE}))?")
# The whole list in one match (same grammar, no groups): the fast path's check.
_PARAMS = re.compile(rf"(?:[ \t]*;[ \t]*[{TOKEN_CHARS}]+(?:[ \t]*=[ \t]*(?:{_PARAM_VALUE}))?)*")


def parse_params(text: str, *, rule: str) -> tuple[tuple[str, str | None], ...]:
    """Parse ``;name=value;flag`` into pairs (names as written, values unquoted no further)."""
    if not text:
        return ()
    if _PARAMS.fullmatch(text) is not None:
        # Valid as a whole: one C-level pass extracts every pair.
        pairs = _PARAM.findall(text)
        if len(pairs) <= _MAX_VIA_PARAMS:
            return tuple((name, value or None) for name, value in pairs)
    params: list[tuple[str, str | None]] = []
    position = 0
    end = len(text)
    while position < end:
        match = _PARAM.match(text, position)
        if match is None or len(params) >= _MAX_VIA_PARAMS:
            raise RemoteProtocolError(
                "malformed or too many parameters (empty ';' or a bad name or value)",
                rule=rule,
                offset=position,
            )
        params.append((match.group(1), match.group(2)))
        position = match.end()
    return tuple(params)


def _param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    for key, value in params:
        if key.lower() == name:
            return value if value is not None else ""
    return None


# -- Via (RFC 3261 20.42) ------------------------------------------------------------

_TOKEN_RE = f"[{TOKEN_CHARS}]+"
# via-parm = sent-protocol LWS sent-by *( SEMI via-params ), SLASH = SWS "/" SWS
_VIA = re.compile(
    rf"({_TOKEN_RE})[ \t]*/[ \t]*({_TOKEN_RE})[ \t]*/[ \t]*({_TOKEN_RE})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*(.*)",
    re.DOTALL,
)


class Via:
    """One via-parm: ``SIP/2.0/UDP host:port;branch=...;received=...;rport``."""

    __slots__ = ("host", "params", "port", "protocol", "raw", "transport", "version")

    def __init__(  # noqa: PLR0917 - positional: built once per Via on the hot path
        self,
        protocol: str,
        version: str,
        transport: str,
        host: str,
        port: int | None,
        params: tuple[tuple[str, str | None], ...],
        raw: str,
    ) -> None:
        self.protocol = protocol
        self.version = version
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params
        self.raw = raw

    def param(self, name: str) -> str | None:
        """A parameter's value; ``""`` for a flag (``;rport``), ``None`` when absent."""
        return _param(self.params, name.lower())

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def rport(self) -> str | None:
        return self.param("rport")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.raw

    def __repr__(self) -> str:
        return f"<Via {self.raw}>"


def parse_via(value: str) -> Via:
    """Parse one via-parm (one element of a Via list)."""
    match = _VIA.fullmatch(value)
    if match is None:
        raise RemoteProtocolError(
            "not sent-protocol LWS sent-by", rule="RFC 3261 25.1 via-parm", offset=0
        )
    protocol, version, transport, host, port_text, rest = match.groups()
    port = int(port_text) if port_text is not None else None
    if port is not None and port > 65535:
        raise RemoteProtocolError(
            f"port {port} out of range", rule="RFC 3261 25.1 sent-by port", offset=match.start(5)
        )
    try:
        params = parse_params(rest, rule="RFC 3261 25.1 via-params")
    except RemoteProtocolError as error:
        raise _shifted(error, match.start(6)) from None
    return Via(protocol, version, transport.upper(), host, port, params, value)


def parse_via_headers(headers: Headers) -> list[Via]:
    try:
        return [parse_via(element) for element in headers.values("via")]
    except RemoteProtocolError as error:
        raise _with_header(error, "Via") from None


# -- CSeq, Call-ID, scalars ------------------------------------------------------------

_CSEQ = re.compile(rf"([0-9]+)[ \t]+({_TOKEN_RE})")


class CSeq:
    """``CSeq: 4711 INVITE`` (RFC 3261 20.16)."""

    __slots__ = ("method", "seq")

    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CSeq) and (self.seq, self.method) == (other.seq, other.method)

    def __hash__(self) -> int:
        return hash((self.seq, self.method))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"

    def __repr__(self) -> str:
        return f"<CSeq {self.seq} {self.method}>"


def parse_cseq(headers: Headers) -> CSeq | None:
    value = headers.get("cseq")
    if value is None:
        return None
    match = _CSEQ.fullmatch(value)
    if match is None:
        raise RemoteProtocolError(
            "not 1*DIGIT LWS Method", rule="RFC 3261 20.16 CSeq", offset=0, header="CSeq"
        )
    digits = match.group(1)
    if len(digits) > 10 or int(digits) > _MAX_CSEQ:
        raise RemoteProtocolError(
            f"sequence number {digits[:20]} is not below 2**31",
            rule="RFC 3261 8.1.1.5 CSeq",
            offset=0,
            header="CSeq",
        )
    return CSeq(int(digits), match.group(2))


def parse_call_id(headers: Headers) -> str | None:
    value = headers.get("call-id")
    if value is not None and CALL_ID.fullmatch(value) is None:
        raise RemoteProtocolError(
            "not word [@ word]", rule="RFC 3261 20.8 Call-ID", offset=0, header="Call-ID"
        )
    return value


def _scalar(headers: Headers, key: str, name: str, maximum: int, rule: str) -> int | None:
    value = headers.get(key)
    if value is None:
        return None
    # isascii() first: isdigit() alone accepts other scripts' digits ("٣").
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        number = maximum + 1
    else:
        number = int(value)
    if number > maximum:
        raise RemoteProtocolError(
            f"{value[:20]!r} is not an integer from 0 to {maximum}",
            rule=rule,
            offset=0,
            header=name,
        )
    return number


def parse_max_forwards(headers: Headers) -> int | None:
    # RFC 3261 8.1.1.6: an integer in the range 0-255.
    return _scalar(headers, "max-forwards", "Max-Forwards", 255, "RFC 3261 20.22 Max-Forwards")


def parse_content_length(headers: Headers) -> int | None:
    return _scalar(
        headers, "content-length", "Content-Length", 2**32 - 1, "RFC 3261 20.14 Content-Length"
    )


def parse_expires(headers: Headers) -> int | None:
    return _scalar(headers, "expires", "Expires", _MAX_DELTA_SECONDS, "RFC 3261 20.19 Expires")


# -- addresses ----------------------------------------------------------------------------


# Parsed addresses are immutable: the same value (a dialog's From and To, a
# phone's Contact) is parsed once. Strict and lenient parses differ, so two memos.
_STRICT_ADDRESSES: Memo[str, NameAddr] = Memo(lambda text: parse_name_addr(text, strict=True))
_LENIENT_ADDRESSES: Memo[str, NameAddr] = Memo(lambda text: parse_name_addr(text, strict=False))


def _address(text: str, strict: bool) -> NameAddr:
    if strict:
        return _STRICT_ADDRESSES(text)
    # Lenient parsing only accepts more, and gives the strict result for a
    # valid value: trying strict first parses a valid value once for both the
    # detectors' lenient reads and the malformed detector's full check (which
    # then finds it in the strict memo). Only invalid values are parsed twice.
    try:
        return _STRICT_ADDRESSES(text)
    except RemoteProtocolError:
        return _LENIENT_ADDRESSES(text)


def _single_address(headers: Headers, key: str, name: str) -> NameAddr | None:
    value = headers.get(key)
    if value is None:
        return None
    try:
        return _address(value, headers.strict)
    except RemoteProtocolError as error:
        raise _with_header(error, name) from None


def _address_list(
    headers: Headers, key: str, name: str, *, bracketed: bool = False
) -> list[NameAddr]:
    out: list[NameAddr] = []
    for element in headers.values(key):
        try:
            address = _address(element, headers.strict)
        except RemoteProtocolError as error:
            raise _with_header(error, name) from None
        if bracketed and not address.bracketed and headers.strict:
            # rec-route / route-param = name-addr *( SEMI rr-param ): the
            # angle brackets are mandatory (RFC 3261 25.1).
            raise RemoteProtocolError(
                "must be a name-addr in angle brackets",
                rule="RFC 3261 25.1 route-param",
                offset=0,
                header=name,
            )
        out.append(address)
    return out


def parse_from(headers: Headers) -> NameAddr | None:
    return _single_address(headers, "from", "From")


def parse_to(headers: Headers) -> NameAddr | None:
    return _single_address(headers, "to", "To")


def parse_contact_star(headers: Headers) -> bool:
    return [value.strip() for value in headers.values("contact")] == ["*"]


def parse_contact(headers: Headers) -> list[NameAddr]:
    if parse_contact_star(headers):
        return []
    return _address_list(headers, "contact", "Contact")


def parse_route(headers: Headers) -> list[NameAddr]:
    return _address_list(headers, "route", "Route", bracketed=True)


def parse_record_route(headers: Headers) -> list[NameAddr]:
    return _address_list(headers, "record-route", "Record-Route", bracketed=True)


def parse_diversion(headers: Headers) -> list[NameAddr]:
    return _address_list(headers, "diversion", "Diversion")  # RFC 5806


def parse_history_info(headers: Headers) -> list[NameAddr]:
    return _address_list(headers, "history-info", "History-Info", bracketed=True)  # RFC 7044


# -- option tags (RFC 3261 20.37, 20.29, 20.32) --------------------------------------------


_OPTION_TAGS = re.compile(rf"[ \t]*{_TOKEN_RE}(?:[ \t]*,[ \t]*{_TOKEN_RE})*[ \t]*")


def _option_tags(headers: Headers, key: str, name: str) -> list[str]:
    tags: list[str] = []
    for field_value in headers.get_all(key):
        if not field_value.strip():
            continue  # "Supported:" with no tags is legal (RFC 3261 20.37)
        if _OPTION_TAGS.fullmatch(field_value) is not None:
            tags.extend(tag.strip(" \t") for tag in field_value.split(","))
            continue
        for tag in split_list(field_value):
            if TOKEN.fullmatch(tag) is None:
                raise RemoteProtocolError(
                    f"option-tag {tag[:30]!r} is not a token",
                    rule="RFC 3261 25.1 option-tag",
                    offset=0,
                    header=name,
                )
            tags.append(tag)
    return tags


def parse_supported(headers: Headers) -> list[str]:
    return _option_tags(headers, "supported", "Supported")


def parse_require(headers: Headers) -> list[str]:
    return _option_tags(headers, "require", "Require")


def parse_proxy_require(headers: Headers) -> list[str]:
    return _option_tags(headers, "proxy-require", "Proxy-Require")


# -- authentication (RFC 3261 20.7, 20.27, 20.28, 20.44) --------------------------------------


def _is_digest(value: str) -> bool:
    # auth-scheme is case-insensitive; other schemes (RFC 4475 regaut01's
    # NoOneKnowsThisScheme) are well formed and simply not ours to parse.
    return value[:7].lower() == "digest " or value[:7].lower() == "digest\t"


def _credentials(headers: Headers, key: str, name: str) -> list[DigestCredentials]:
    out: list[DigestCredentials] = []
    for value in headers.get_all(key):
        if _is_digest(value):
            try:
                out.append(parse_credentials(value, strict=headers.strict))
            except RemoteProtocolError as error:
                raise _with_header(error, name) from None
    return out


def _challenges(headers: Headers, key: str, name: str) -> list[DigestChallenge]:
    out: list[DigestChallenge] = []
    for value in headers.get_all(key):
        if _is_digest(value):
            try:
                out.append(parse_challenge(value, strict=headers.strict))
            except RemoteProtocolError as error:
                raise _with_header(error, name) from None
    return out


def parse_authorization(headers: Headers) -> list[DigestCredentials]:
    return _credentials(headers, "authorization", "Authorization")


def parse_proxy_authorization(headers: Headers) -> list[DigestCredentials]:
    return _credentials(headers, "proxy-authorization", "Proxy-Authorization")


def parse_www_authenticate(headers: Headers) -> list[DigestChallenge]:
    return _challenges(headers, "www-authenticate", "WWW-Authenticate")


def parse_proxy_authenticate(headers: Headers) -> list[DigestChallenge]:
    return _challenges(headers, "proxy-authenticate", "Proxy-Authenticate")


# -- Content-Type (RFC 3261 20.15) ---------------------------------------------------------

_MEDIA_TYPE = re.compile(rf"({_TOKEN_RE})[ \t]*/[ \t]*({_TOKEN_RE})(.*)", re.DOTALL)


class MediaType:
    """``application/sdp;charset=utf-8``: type and subtype lower-cased."""

    __slots__ = ("params", "subtype", "type")

    def __init__(
        self, type_: str, subtype: str, params: tuple[tuple[str, str | None], ...]
    ) -> None:
        self.type = type_
        self.subtype = subtype
        self.params = params

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}"

    def param(self, name: str) -> str | None:
        return _param(self.params, name.lower())

    def __repr__(self) -> str:
        return f"<MediaType {self.mime}>"


def parse_content_type(headers: Headers) -> MediaType | None:
    value = headers.get("content-type")
    if value is None:
        return None
    match = _MEDIA_TYPE.fullmatch(value)
    if match is None:
        raise RemoteProtocolError(
            "not m-type / m-subtype",
            rule="RFC 3261 20.15 media-type",
            offset=0,
            header="Content-Type",
        )
    try:
        params = parse_params(match.group(3), rule="RFC 3261 25.1 m-parameter")
    except RemoteProtocolError as error:
        raise _with_header(_shifted(error, match.start(3)), "Content-Type") from None
    return MediaType(match.group(1).lower(), match.group(2).lower(), params)


# -- headers only the full check reads -------------------------------------------------------

# rfc1123-date = wkday "," SP date1 SP time SP "GMT" (RFC 3261 20.17: only GMT)
_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
# warning-value = warn-code SP warn-agent SP warn-text, warn-code = 3DIGIT
_WARNING = re.compile(r'[0-9]{3} [^ \t]+ "(?:[^"\\]|\\.)*"')


def _check_date(message: Message) -> None:
    value = message.headers.get("date")
    if value is not None and _DATE.fullmatch(value) is None:
        raise RemoteProtocolError(
            "not an RFC 1123 date in GMT", rule="RFC 3261 20.17 Date", offset=0, header="Date"
        )


def _check_warning(message: Message) -> None:
    for value in message.headers.values("warning"):
        if _WARNING.fullmatch(value) is None:
            raise RemoteProtocolError(
                "not warn-code(3DIGIT) SP warn-agent SP warn-text",
                rule="RFC 3261 20.43 Warning",
                offset=0,
                header="Warning",
            )


def _check_request_uri(message: Message) -> None:
    # is_request, not isinstance: message.py imports this module, and an
    # import inside a function on every message costs more than the check.
    if not message.is_request:
        return
    message = cast("Request", message)
    try:
        # The strict view is the cached Request-URI; a lenient message's is not.
        uri = message.request_uri if message.headers.strict else STRICT_URIS(message.uri)
    except RemoteProtocolError as error:
        raise _with_header(error, "Request-URI") from None
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 19.1.1 Table 1: headers are "not allowed" in a Request-URI
        # (RFC 4475 3.1.2.10 escruri).
        raise RemoteProtocolError(
            "a Request-URI cannot carry URI headers (?name=value)",
            rule="RFC 3261 19.1.1 Request-URI headers",
            offset=message.uri.find("?"),
            header="Request-URI",
        )


def _check_cseq_method(message: Message) -> None:
    if not message.is_request:
        return
    request = cast("Request", message)
    cseq = request.cseq
    if cseq is not None and cseq.method != request.method:
        # RFC 3261 8.1.1.5 / RFC 4475 3.1.2.17-18 (mismatch01, mismatch02).
        raise RemoteProtocolError(
            f"CSeq method {cseq.method} differs from the request method {request.method}",
            rule="RFC 3261 8.1.1.5 CSeq method",
            offset=0,
            header="CSeq",
        )


# The typed views the full parse forces (their parsers raise on bad grammar),
# in the order a strict gateway reports them, then the checks with no view.
_TYPED_VIEWS: tuple[tuple[str, Callable[[Headers], object]], ...] = (
    ("via", parse_via_headers),
    ("from", parse_from),
    ("to", parse_to),
    ("call-id", parse_call_id),
    ("cseq", parse_cseq),
    ("max-forwards", parse_max_forwards),
    ("contact", parse_contact),
    ("content-length", parse_content_length),
    ("content-type", parse_content_type),
    ("route", parse_route),
    ("record-route", parse_record_route),
    ("expires", parse_expires),
    ("diversion", parse_diversion),
    ("history-info", parse_history_info),
    ("supported", parse_supported),
    ("require", parse_require),
    ("proxy-require", parse_proxy_require),
    ("authorization", parse_authorization),
    ("proxy-authorization", parse_proxy_authorization),
    ("www-authenticate", parse_www_authenticate),
    ("proxy-authenticate", parse_proxy_authenticate),
)
# The typed views whose parse reads ``headers.strict`` (name-addrs, URIs and
# Digest fields): a lenient one may have recovered what the strict grammar rejects.
_STRICTNESS_DEPENDENT_VIEWS: frozenset[str] = frozenset(
    {
        "from",
        "to",
        "contact",
        "route",
        "record-route",
        "diversion",
        "history-info",
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
    }
)
_OTHER_CHECKS: tuple[Callable[[Message], None], ...] = (
    _check_cseq_method,
    _check_date,
    _check_warning,
)


def message_errors(message: Message) -> Iterator[RemoteProtocolError]:
    """Every grammar error the full parse finds, one per check that fails.

    The checks always apply the strict grammar, also on a leniently parsed
    message: lenient typed views recover silently, so the defects are found
    with strict views that are dropped afterwards.
    """
    headers = message.headers
    if headers.strict:
        # The views these checks cache are the strict ones: keep them.
        yield from _errors_of(message)
        return
    headers.strict = True
    # Only the views whose parse depends on ``headers.strict`` (addresses,
    # URIs, Digest fields) may differ: the others were parsed by the same code
    # either way and are kept, so the detectors' reads are not parsed twice.
    headers.forget(_STRICTNESS_DEPENDENT_VIEWS)
    try:
        yield from _errors_of(message)
    finally:
        # The views that passed strict checking stay cached: lenient parsing
        # only accepts more, so for valid values both give the same result and
        # the detectors need not parse them again. Failed views were never cached.
        headers.strict = False


def _errors_of(message: Message) -> Iterator[RemoteProtocolError]:
    try:
        _check_request_uri(message)
    except RemoteProtocolError as error:
        yield error
    present = set(message.headers.keys())  # ~25 views are looked up in it
    headers = message.headers
    for key, parse in _TYPED_VIEWS:
        if key not in present:
            continue  # an absent header has nothing to check (presence is checks.py's)
        try:
            headers.typed(key, parse)
        except RemoteProtocolError as error:
            yield error
    for check in _OTHER_CHECKS:
        try:
            check(message)
        except RemoteProtocolError as error:
            yield error


def validate_message(message: Message) -> None:
    """Raise the first grammar error the full parse finds.

    The strict gateway runs this on every message, so it is the straight
    loop of :func:`_errors_of` without a generator or a handler per check.
    """
    if not message.headers.strict:
        for error in message_errors(message):
            raise error
        return
    _check_request_uri(message)
    headers = message.headers
    present = set(headers.keys())  # ~25 views are looked up in it
    for key, parse in _TYPED_VIEWS:
        if key in present:
            headers.typed(key, parse)
    for check in _OTHER_CHECKS:
        check(message)


def _with_header(error: RemoteProtocolError, header: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        error.reason,
        rule=error.rule,
        offset=error.offset,
        status_hint=error.status_hint,
        header=error.header or header,
    )


def _shifted(error: RemoteProtocolError, by: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        error.reason,
        rule=error.rule,
        offset=(error.offset or 0) + by,
        status_hint=error.status_hint,
        header=error.header,
    )
