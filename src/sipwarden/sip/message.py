"""SIP requests and responses: lazy typed access, raw bytes kept, editable.

A parsed message holds the start line, the :class:`~.headers.Headers` and the
body. Typed views of headers (:attr:`Message.via`, :attr:`Message.cseq`, ...)
are parsed on first access and cached; a header the pipeline never looks at
costs nothing beyond finding its line. A message that was not edited
serialises to exactly the bytes it was parsed from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict, Unpack

from sipwarden.errors import LocalProtocolError, RemoteProtocolError

from . import fields
from .digest import DigestChallenge, DigestCredentials
from .fields import CSeq, MediaType, Via
from .headers import Headers
from .uri import LENIENT_URIS, STRICT_URIS, NameAddr, Uri

__all__ = ["Defect", "Message", "Request", "Response"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Defect:
    """A rule the message broke that lenient parsing recovered from."""

    rule: str
    message: str
    offset: int | None = None
    status: int = 400  # what a strict server would have answered

    @classmethod
    def from_error(cls, error: RemoteProtocolError) -> Defect:
        return cls(
            rule=error.rule, message=error.reason, offset=error.offset, status=error.status_hint
        )


class MessageFields(TypedDict, total=False):
    """The keyword arguments every message constructor takes (see :class:`Message`)."""

    headers: Headers | None
    body: bytes
    version: str
    raw: bytes | None
    defects: list[Defect] | None


class Message:
    """What requests and responses share. Not instantiated directly."""

    __slots__ = ("_body_edited", "_fully_checked", "_raw", "body", "defects", "headers", "version")

    def __init__(
        self,
        *,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
        raw: bytes | None = None,
        defects: list[Defect] | None = None,
    ) -> None:
        self._setup(headers if headers is not None else Headers(), body, version, raw, defects)

    def _setup(
        self,
        headers: Headers,
        body: bytes,
        version: str,
        raw: bytes | None,
        defects: list[Defect] | None,
    ) -> None:
        self.headers = headers
        self.body = body
        self.version = version
        self._raw = raw
        self._body_edited = False
        self._fully_checked = False
        self.defects: list[Defect] = defects if defects is not None else []

    # -- start line and output ----------------------------------------------

    def start_line(self) -> str:
        raise NotImplementedError

    @property
    def is_request(self) -> bool:
        raise NotImplementedError

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Replace the body; Content-Length is fixed when serialising."""
        self.body = body
        self._body_edited = True
        if content_type is not None:
            self.headers.set("Content-Type", content_type)

    @property
    def edited(self) -> bool:
        """True once anything was changed since parsing (or for a built message)."""
        return self._raw is None or self._body_edited or self.headers.edited

    def to_bytes(self) -> bytes:
        """Serialise. Unchanged messages come out byte-exact.

        An edited message always carries a Content-Length equal to its body's
        length (RFC 3261 20.14: mandatory on stream transports, and a correct
        one is never wrong on datagrams).
        """
        if not self.edited and self._raw is not None:
            return self._raw
        body_length = str(len(self.body))
        # Exactly one Content-Length, equal to the body: a second, conflicting
        # one would be the smuggling pattern for a stream-transport next hop.
        if self.headers.get_all("content-length") != [body_length]:
            self.headers.set("Content-Length", body_length)
        head = "\r\n".join((self.start_line(), *self.headers.lines()))
        return head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + self.body

    __bytes__ = to_bytes

    # -- typed header views ---------------------------------------------------

    @property
    def via(self) -> list[Via]:
        """Every Via, topmost first, across all Via fields (RFC 3261 20.42)."""
        return self.headers.typed("via", fields.parse_via_headers)

    @property
    def top_via(self) -> Via | None:
        vias = self.via
        return vias[0] if vias else None

    @property
    def from_(self) -> NameAddr | None:
        """The From header (RFC 3261 20.20); ``from`` is a Python keyword."""
        return self.headers.typed("from", fields.parse_from)

    @property
    def to(self) -> NameAddr | None:
        return self.headers.typed("to", fields.parse_to)

    @property
    def call_id(self) -> str | None:
        return self.headers.typed("call-id", fields.parse_call_id)

    @property
    def cseq(self) -> CSeq | None:
        return self.headers.typed("cseq", fields.parse_cseq)

    @property
    def contact(self) -> list[NameAddr]:
        """Contact addresses; empty for ``Contact: *`` (see :attr:`contact_is_star`)."""
        return self.headers.typed("contact", fields.parse_contact)

    @property
    def contact_is_star(self) -> bool:
        return self.headers.typed("contact*", fields.parse_contact_star)

    @property
    def max_forwards(self) -> int | None:
        return self.headers.typed("max-forwards", fields.parse_max_forwards)

    @property
    def content_length(self) -> int | None:
        return self.headers.typed("content-length", fields.parse_content_length)

    @property
    def content_type(self) -> MediaType | None:
        return self.headers.typed("content-type", fields.parse_content_type)

    @property
    def route(self) -> list[NameAddr]:
        return self.headers.typed("route", fields.parse_route)

    @property
    def record_route(self) -> list[NameAddr]:
        return self.headers.typed("record-route", fields.parse_record_route)

    @property
    def expires(self) -> int | None:
        return self.headers.typed("expires", fields.parse_expires)

    @property
    def user_agent(self) -> str | None:
        return self.headers.get("user-agent")

    @property
    def server(self) -> str | None:
        return self.headers.get("server")

    @property
    def diversion(self) -> list[NameAddr]:
        return self.headers.typed("diversion", fields.parse_diversion)

    @property
    def history_info(self) -> list[NameAddr]:
        return self.headers.typed("history-info", fields.parse_history_info)

    @property
    def supported(self) -> list[str]:
        return self.headers.typed("supported", fields.parse_supported)

    @property
    def require(self) -> list[str]:
        return self.headers.typed("require", fields.parse_require)

    @property
    def proxy_require(self) -> list[str]:
        return self.headers.typed("proxy-require", fields.parse_proxy_require)

    @property
    def authorization(self) -> list[DigestCredentials]:
        """Digest credentials of the Authorization fields (other schemes are skipped;
        their raw values stay in :attr:`headers`)."""
        return self.headers.typed("authorization", fields.parse_authorization)

    @property
    def proxy_authorization(self) -> list[DigestCredentials]:
        return self.headers.typed("proxy-authorization", fields.parse_proxy_authorization)

    @property
    def www_authenticate(self) -> list[DigestChallenge]:
        return self.headers.typed("www-authenticate", fields.parse_www_authenticate)

    @property
    def proxy_authenticate(self) -> list[DigestChallenge]:
        return self.headers.typed("proxy-authenticate", fields.parse_proxy_authenticate)

    def validate(self) -> None:
        """Full parse: check every header sipwarden knows, raise on the first error.

        This is the strict gateway's check; the lazy parse only framed the
        message. Lenient callers use :meth:`collect_defects` instead. A message
        that passes has no defects to find: :meth:`collect_defects` (the
        malformed detector's) then does not run the same checks again.
        """
        fields.validate_message(self)
        self._fully_checked = True

    def trust_grammar(self) -> None:
        """Take the message as fully checked without checking it: :meth:`collect_defects`
        then reports only what the parse itself found. For messages whose grammar is
        not the reader's to judge (the gateway's own PBX)."""
        self._fully_checked = True

    def collect_defects(self) -> list[Defect]:
        """Full parse that records every broken rule instead of raising.

        Runs once: later calls return the same list (the parse-time defects
        first, then those of the full parse).
        """
        if not self._fully_checked:
            self._fully_checked = True
            self.defects.extend(Defect.from_error(error) for error in fields.message_errors(self))
        return self.defects


class Request(Message):
    """A SIP request. ``uri`` is the Request-URI text; :attr:`request_uri` parses it."""

    __slots__ = ("_method", "_uri", "_uri_parsed")

    def __init__(self, method: str, uri: str, **fields: Unpack[MessageFields]) -> None:
        super().__init__(**fields)
        self._set_start(method, uri)

    @classmethod
    def parsed(
        cls, method: str, uri: str, version: str, headers: Headers, defects: list[Defect] | None
    ) -> Request:
        """The parser's constructor: positional, no keyword packing (hot path)."""
        request = cls.__new__(cls)
        request._setup(headers, b"", version, None, defects)
        request._set_start(method, uri)
        return request

    def _set_start(self, method: str, uri: str) -> None:
        self._method = method
        self._uri = uri
        self._uri_parsed: Uri | None = None

    @property
    def method(self) -> str:
        return self._method

    @property
    def uri(self) -> str:
        return self._uri

    @uri.setter
    def uri(self, value: str) -> None:
        if any(char in value for char in " \t\r\n"):
            raise LocalProtocolError("a Request-URI cannot contain whitespace")
        self._uri = value
        self._uri_parsed = None
        self._raw = None

    @property
    def request_uri(self) -> Uri:
        """The parsed Request-URI (raises RemoteProtocolError when invalid)."""
        if self._uri_parsed is None:
            parse = STRICT_URIS if self.headers.strict else LENIENT_URIS
            self._uri_parsed = parse(self._uri)
        return self._uri_parsed

    @property
    def is_request(self) -> bool:
        return True

    def start_line(self) -> str:
        return f"{self._method} {self._uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self._method} {self._uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("_reason", "_status")

    def __init__(self, status: int, reason: str, **fields: Unpack[MessageFields]) -> None:
        super().__init__(**fields)
        self._set_start(status, reason)

    @classmethod
    def parsed(
        cls, status: int, reason: str, version: str, headers: Headers, defects: list[Defect] | None
    ) -> Response:
        """The parser's constructor: positional, no keyword packing (hot path)."""
        response = cls.__new__(cls)
        response._setup(headers, b"", version, None, defects)
        response._set_start(status, reason)
        return response

    def _set_start(self, status: int, reason: str) -> None:
        self._status = status
        self._reason = reason

    @property
    def status(self) -> int:
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        if not 100 <= value <= 699:
            raise LocalProtocolError(f"status {value} is not from 100 to 699")
        self._status = value
        self._raw = None

    @property
    def reason(self) -> str:
        return self._reason

    @reason.setter
    def reason(self, value: str) -> None:
        if "\r" in value or "\n" in value:
            raise LocalProtocolError("a reason phrase cannot contain CR or LF")
        self._reason = value
        self._raw = None

    @property
    def is_request(self) -> bool:
        return False

    def start_line(self) -> str:
        # The SP before Reason-Phrase is mandatory even when the phrase is
        # empty (RFC 3261 25.1 Status-Line; RFC 4475 3.1.1.13 noreason).
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"
