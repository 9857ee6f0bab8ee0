"""Parse SIP messages from datagrams (:func:`parse_message`) and streams (:class:`StreamParser`).

Two modes share one code path:

* **strict** (the gateway): the first rule of RFC 3261's grammar the message
  breaks raises :class:`~sipwarden.errors.RemoteProtocolError` naming the rule,
  the byte offset and the response to send;
* **lenient** (the monitor): each broken rule is recorded as a
  :class:`~.message.Defect` on the message and parsing recovers where it can,
  so an attacker's malformed probe is still attributed and counted. Input that
  cannot be framed at all raises in both modes.

Parsing is lazy: it frames the message, checks the start line and header
names, splits the header lines and applies Content-Length. Typed header views
and the full grammar check (:meth:`Message.validate`) run on demand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sipwarden.errors import LocalProtocolError, RemoteProtocolError

from .abnf import SIP_VERSION, TOKEN
from .headers import KEY_CACHE, HeaderField, Headers, header_key, make_field
from .limits import DEFAULT_LIMITS, ParserLimits
from .message import Defect, Message, Request, Response

__all__ = ["KeepAlive", "StreamParser", "looks_like_sip", "parse_message"]

_CRLF: Final = b"\r\n"
_END_OF_HEAD: Final = b"\r\n\r\n"
# A lenient split: CRLF, bare LF or bare CR all end a line.
_ANY_EOL = re.compile(r"\r\n|\n|\r")
_KEY_CACHE_GET = KEY_CACHE.get
# Methods that are tokens by inspection: skips a regex call on the hot path.
_COMMON_METHODS = frozenset(
    (
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    )
)
_REASON_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _report(defects: list[Defect] | None, error: RemoteProtocolError) -> None:
    """Raise in strict mode (no defect list), record and go on in lenient mode."""
    if defects is None:
        raise error
    defects.append(Defect.from_error(error))


def parse_message(
    data: bytes, *, strict: bool = True, limits: ParserLimits = DEFAULT_LIMITS
) -> Message:
    """Parse one message from a datagram (UDP, or a whole captured payload).

    Octets after the body that Content-Length announces are ignored (RFC 3261
    18.3, RFC 4475 ``dblreq``); without Content-Length the body is the rest of
    the datagram.
    """
    size = len(data)
    if size > limits.max_message_size:
        raise RemoteProtocolError(
            f"message of {size} bytes exceeds the {limits.max_message_size}-byte limit",
            rule="max_message_size",
            offset=limits.max_message_size,
            status_hint=513,
        )
    start = _skip_leading_crlf(data)
    head_end = data.find(_END_OF_HEAD, start)
    defects: list[Defect] | None = None if strict else []
    if head_end < 0:
        head_end, body_start = _find_head_end_leniently(data, start, strict)
    else:
        body_start = head_end + 4
    message, content_length = _parse_head(data, start, head_end, defects, limits)
    available = size - body_start
    if content_length is None:
        end = size
    elif content_length > available:
        _report(
            defects,
            RemoteProtocolError(
                f"Content-Length {content_length} exceeds the {available} body bytes present",
                rule="RFC 3261 18.3 Content-Length",
                offset=body_start,
            ),
        )
        end = size
    else:
        end = body_start + content_length
    message.body = data[body_start:end]
    message._raw = data if start == 0 and end == size else data[start:end]
    return message


def _skip_leading_crlf(data: bytes) -> int:
    # RFC 3261 7.5: CRLFs before the start line are ignored (keep-alives on
    # streams, and some UAs pad datagrams the same way).
    start = 0
    while data.startswith(_CRLF, start):
        start += 2
    return start


def _find_head_end_leniently(data: bytes, start: int, strict: bool) -> tuple[int, int]:
    """Frame a message that has no CRLF CRLF: only lenient mode tries LF LF."""
    if not strict:
        lf_end = data.find(b"\n\n", start)
        if lf_end >= 0:
            return lf_end, lf_end + 2
        if data.endswith(b"\r\n", start) or data.endswith(b"\n", start):
            return len(data), len(data)
    raise RemoteProtocolError(
        "no empty line ends the header section",
        rule="RFC 3261 7 message-header CRLF",
        offset=len(data),
    )


def _parse_head(
    data: bytes,
    start: int,
    head_end: int,
    defects: list[Defect] | None,
    limits: ParserLimits,
    *,
    stream: bool = False,
) -> tuple[Message, int | None]:
    """Parse start line and header lines of ``data[start:head_end]``."""
    head = data[start:head_end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    crlf_count = len(lines) - 1
    clean = head.count("\n") == crlf_count and head.count("\r") == crlf_count
    if not clean:
        _report(
            defects,
            RemoteProtocolError(
                "bare CR or LF in the header section",
                rule="RFC 3261 7 CRLF line ends",
                offset=start + _byte_length(head[: _first_bare_eol(head)]),
            ),
        )
        lines = _ANY_EOL.split(head)
    is_request, first, second, version = _parse_start_line(lines[0], start, defects)
    headers = _parse_fields_fast(head, lines, defects, limits) if clean else None
    if headers is None:
        fields = _parse_fields_carefully(lines, start, defects, limits)
        headers = Headers(fields, strict=defects is None)
    # The same defect list: defects found later (body, full parse) land on the message too.
    message: Message
    if is_request:
        message = Request.parsed(first, second, version, headers, defects)
    else:
        message = Response.parsed(int(first), second, version, headers, defects)
    return message, _content_length(headers, start, defects, stream=stream)


def _first_bare_eol(head: str) -> int:
    for index, char in enumerate(head):
        if char == "\n" and (index == 0 or head[index - 1] != "\r"):
            return index
        if char == "\r" and head[index + 1 : index + 2] != "\n":
            return index
    return 0


# (is_request, method or status code, Request-URI or reason phrase, version):
# a plain tuple, built once per message.
_StartLine = tuple[bool, str, str, str]


def _parse_start_line(line: str, offset: int, defects: list[Defect] | None) -> _StartLine:
    if line[:4].upper() == "SIP/":
        return _parse_status_line(line, offset, defects)
    return _parse_request_line(line, offset, defects)


def _parse_request_line(line: str, offset: int, defects: list[Defect] | None) -> _StartLine:
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF (RFC 3261 25.1):
    # exactly one SP between the parts (RFC 4475 lwsstart, trws, lwsruri).
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        _report(
            defects,
            RemoteProtocolError(
                "the request line is not Method SP Request-URI SP SIP-Version",
                rule="RFC 3261 25.1 Request-Line",
                offset=offset,
            ),
        )
        parts = line.split()
        if len(parts) < 3:
            raise RemoteProtocolError(
                "the start line is neither a request line nor a status line",
                rule="RFC 3261 7.1 start-line",
                offset=offset,
            )
        parts = [parts[0], "".join(parts[1:-1]), parts[-1]]
    method, uri, version = parts
    if method not in _COMMON_METHODS and TOKEN.fullmatch(method) is None:
        _report(
            defects,
            RemoteProtocolError(
                f"method {method!r} is not a token", rule="RFC 3261 25.1 Method", offset=offset
            ),
        )
    _check_version(version, offset + _byte_length(line[: len(line) - len(version)]), defects)
    return (True, method, uri, version)


def _parse_status_line(line: str, offset: int, defects: list[Defect] | None) -> _StartLine:
    # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
    parts = line.split(" ", 2)
    if len(parts) != 3:
        _report(
            defects,
            RemoteProtocolError(
                "the status line is not SIP-Version SP Status-Code SP Reason-Phrase",
                rule="RFC 3261 25.1 Status-Line",
                offset=offset,
            ),
        )
        version, _, code = line.partition(" ")
        parts = [version, code.strip(), ""]
    version, code, reason = parts
    _check_version(version, offset, defects)
    # Status-Code = 3DIGIT, and only classes 1xx-6xx exist (RFC 3261 7.2, 21).
    if len(code) != 3 or not code.isascii() or not code.isdigit() or not "1" <= code[0] <= "6":
        raise RemoteProtocolError(
            f"status code {code[:20]!r} is not three digits from 100 to 699",
            rule="RFC 3261 25.1 Status-Code",
            offset=offset + len(version) + 1,
        )
    if _REASON_FORBIDDEN.search(reason) is not None:
        _report(
            defects,
            RemoteProtocolError(
                "control character in the reason phrase",
                rule="RFC 3261 25.1 Reason-Phrase",
                offset=offset,
            ),
        )
    return (False, code, reason, version)


def _check_version(version: str, offset: int, defects: list[Defect] | None) -> None:
    if version == "SIP/2.0":
        return
    match = SIP_VERSION.fullmatch(version)
    if match is None:
        _report(
            defects,
            RemoteProtocolError(
                f"{version[:20]!r} is not a SIP-Version",
                rule="RFC 3261 25.1 SIP-Version",
                offset=offset,
            ),
        )
    elif match.group(1, 2) != ("2", "0"):
        # A server answers 505 Version Not Supported (RFC 3261 21.5.7 and
        # RFC 4475 badvers); a proxy must not forward it as-is.
        _report(
            defects,
            RemoteProtocolError(
                f"SIP version {version} is not supported",
                rule="RFC 3261 8.1.1.8 SIP-Version 2.0",
                offset=offset,
                status_hint=505,
            ),
        )


def _check_header_count(lines: int, limits: ParserLimits) -> None:
    if lines > limits.max_header_count:
        raise RemoteProtocolError(
            f"{lines} header lines exceed the {limits.max_header_count} limit",
            rule="max_header_count",
            offset=0,
        )


def _parse_fields_fast(
    head: str, lines: list[str], defects: list[Defect] | None, limits: ParserLimits
) -> Headers | None:
    """The common case in a few C-level passes; ``None`` sends the head to the careful loop.

    It applies when there are no folded lines, the head is shorter than the
    line limit (so no line can exceed it), every line has a colon, and every
    name is already in the key cache (which only ever holds valid token names
    written without space before the colon).
    """
    raws = lines[1:]
    _check_header_count(len(raws), limits)
    strict = defects is None
    if not raws:
        return Headers(strict=strict)
    if "\r\n " in head or "\r\n\t" in head or len(head) > limits.max_line_length:
        return None
    names, colons, values = zip(*[line.partition(":") for line in raws], strict=True)
    keys = list(map(_KEY_CACHE_GET, names))
    if None in keys or "" in colons:
        return None
    return Headers.from_columns(
        keys,  # type: ignore[arg-type]  # None was ruled out just above
        list(names),
        list(values),  # trimmed when read (see Headers)
        raws,  # type: ignore[arg-type]  # a fresh list[str] the Headers now own
        strict=strict,
    )


def _parse_fields_carefully(
    lines: list[str], start: int, defects: list[Defect] | None, limits: ParserLimits
) -> list[HeaderField]:
    """Line by line: folding, odd spacing, unknown names, each broken rule reported."""
    _check_header_count(len(lines) - 1, limits)
    fields: list[HeaderField] = []
    append = fields.append
    max_line = limits.max_line_length
    for index in range(1, len(lines)):
        line = lines[index]
        if len(line) > max_line:
            raise RemoteProtocolError(
                f"header line of {len(line)} characters exceeds the {max_line} limit",
                rule="max_line_length",
                offset=_line_offset(lines, index, start),
            )
        first = line[:1]
        if first in (" ", "\t"):
            # Folded continuation (RFC 3261 7.3.1): the fold is one SP.
            if not fields:
                _report(
                    defects,
                    RemoteProtocolError(
                        "a continuation line precedes every header field",
                        rule="RFC 3261 7.3.1 folding",
                        offset=_line_offset(lines, index, start),
                    ),
                )
                continue
            before = fields[-1]
            continued = line.strip(" \t")
            value = f"{before.value} {continued}" if before.value else continued
            raw = f"{before.raw}\r\n{line}"
            if len(raw) > max_line:
                # A folded field counts as one line: folding must not dodge the bound.
                raise RemoteProtocolError(
                    f"folded header field of {len(raw)} characters exceeds the {max_line} limit",
                    rule="max_line_length",
                    offset=_line_offset(lines, index, start),
                )
            fields[-1] = before._replace(value=value, raw=raw)
            continue
        colon = line.find(":")
        name = line[:colon].rstrip(" \t") if colon > 0 else ""
        key = header_key(name) if name else None
        if key is None:
            _report(
                defects,
                RemoteProtocolError(
                    f"header line {line[:40]!r} has no valid name and colon",
                    rule="RFC 3261 25.1 message-header",
                    offset=_line_offset(lines, index, start),
                ),
            )
            continue
        append(make_field(HeaderField, (key, name, line[colon + 1 :].strip(" \t"), line)))
    return fields


def _byte_length(text: str) -> int:
    """How many bytes ``text`` was on the wire (offsets are bytes, not characters)."""
    return len(text.encode("utf-8", "surrogateescape"))


def _line_offset(lines: list[str], index: int, start: int) -> int:
    """Byte offset of ``lines[index]``: computed only when reporting an error."""
    return start + _byte_length("\r\n".join(lines[:index])) + 2


def _content_length(
    headers: Headers, start: int, defects: list[Defect] | None, *, stream: bool
) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    if stream and len(set(headers.get_all("content-length"))) > 1:
        # Two different lengths on a stream is the request-smuggling pattern:
        # whichever one a next hop believes, the other hides a second message.
        # In a datagram the framing is the datagram itself: the message parses
        # and the proxy checks answer 400 (RFC 4475 3.3.9 mcl01).
        _report(
            defects,
            RemoteProtocolError(
                "conflicting Content-Length header fields",
                rule="RFC 3261 20.14 Content-Length",
                offset=start,
            ),
        )
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        _report(
            defects,
            RemoteProtocolError(
                f"Content-Length {value[:20]!r} is not a non-negative integer",
                rule="RFC 3261 20.14 Content-Length",
                offset=start,
            ),
        )
        return None
    return int(value)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A CRLF keep-alive on a stream (RFC 5626 3.5.1): ``ping`` is CRLF CRLF, ``pong`` CRLF."""

    kind: str


PING: Final = KeepAlive("ping")
PONG: Final = KeepAlive("pong")


class StreamParser:
    """Frames messages on a stream transport (TCP, TLS) by Content-Length.

    Feed bytes as they arrive with :meth:`feed`, then call :meth:`next_event`
    until it returns ``None`` (more bytes needed). The search for the end of the
    header section resumes where it stopped, so a slow sender costs O(bytes)
    in total, not O(bytes²) (h11's receive buffer has the same property).

    After a :class:`RemoteProtocolError` the stream cannot be resynchronised
    (RFC 3261 18.3: the framing is lost); every later call raises again.
    """

    def __init__(self, *, strict: bool = True, limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self._buffer = bytearray()
        self._search_from = 0
        self._strict = strict
        self._limits = limits
        self._error: RemoteProtocolError | None = None
        # A head already parsed while its body is still arriving: not parsed again.
        self._pending: tuple[Message, bytes, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as events."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise LocalProtocolError("feed() after the stream failed to parse") from self._error
        self._buffer += data

    def next_event(self) -> Message | KeepAlive | None:
        """The next complete message or keep-alive, or ``None`` when more bytes are needed."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except RemoteProtocolError as error:
            self._error = error
            raise

    def _next_event(self) -> Message | KeepAlive | None:
        if self._pending is not None:
            return self._complete_message(0, self._limits.max_message_size)
        buffer = self._buffer
        if buffer[:2] == _CRLF:
            if buffer[:4] == _END_OF_HEAD:
                self._consume(4)
                return PING
            if len(buffer) < 4 and _END_OF_HEAD.startswith(buffer):
                return None  # CRLF or CRLF CR: could still become a ping
            self._consume(2)
            return PONG
        head_end = buffer.find(_END_OF_HEAD, self._search_from)
        limit = self._limits.max_message_size
        if head_end < 0:
            self._search_from = max(0, len(buffer) - 3)
            if len(buffer) > limit:
                raise RemoteProtocolError(
                    f"no end of headers within {limit} bytes",
                    rule="max_message_size",
                    offset=limit,
                    status_hint=513,
                )
            return None
        return self._complete_message(head_end, limit)

    def _complete_message(self, head_end: int, limit: int) -> Message | None:
        if self._pending is None:
            self._pending = self._parse_pending_head(head_end, limit)
        message, head, total = self._pending
        buffer = self._buffer
        if len(buffer) < total:
            return None
        message.body = bytes(buffer[len(head) : total])
        message._raw = head + message.body
        self._consume(total)
        return message

    def _parse_pending_head(self, head_end: int, limit: int) -> tuple[Message, bytes, int]:
        defects: list[Defect] | None = None if self._strict else []
        head = bytes(self._buffer[: head_end + 4])
        message, content_length = _parse_head(head, 0, head_end, defects, self._limits, stream=True)
        if content_length is None:
            # Mandatory on streams: without it the next message's start is unknown.
            _report(
                defects,
                RemoteProtocolError(
                    "a message on a stream transport needs Content-Length",
                    rule="RFC 3261 18.3 Content-Length on streams",
                    offset=0,
                ),
            )
            content_length = 0
        total = head_end + 4 + content_length
        if total > limit:
            raise RemoteProtocolError(
                f"message of {total} bytes exceeds the {limit}-byte limit",
                rule="max_message_size",
                offset=limit,
                status_hint=513,
            )
        return message, head, total

    def _consume(self, count: int) -> None:
        del self._buffer[:count]
        self._search_from = 0
        self._pending = None


# Start of a request line (a method token, SP, a URI scheme) or of a status line.
_SIP_START = re.compile(rb"(?:[A-Za-z]{3,20} [A-Za-z][A-Za-z0-9+.\-]*:|SIP/2\.0 [1-6][0-9][0-9])")


def looks_like_sip(payload: bytes) -> bool:
    """Whether a payload on an unexpected port starts like a SIP message.

    A cheap sniff for monitors watching traffic to ports not configured as
    SIP ports (scanners and some trunks use odd ports); keep-alive CRLFs and
    leading CRLFs before a start line count too.
    """
    start = _skip_leading_crlf(payload)
    if start == len(payload):
        return start > 0
    return _SIP_START.match(payload, start) is not None
