"""A scripted SIP phone, for what SIPp cannot do here.

Debian's SIPp is built without OpenSSL, and its UAC sends no RTP of its own,
so the TLS tests and the media test drive this small UAC instead:
digest-authenticated REGISTER, and a call (INVITE, 407, INVITE with
credentials, 180/200, ACK along the Record-Route set to the callee's Contact,
whatever the test does with the call, BYE, 200), or the callee's side of one,
over one TLS or TCP connection as a phone keeps it, or over UDP. It uses the SIP
core to parse and the digest module to answer challenges.
"""

from __future__ import annotations

import itertools
import secrets
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from sipwarden.sip.digest import answer_challenge, build_credentials
from sipwarden.sip.message import Request, Response
from sipwarden.sip.parser import StreamParser, parse_message
from support import PeerError

__all__ = ["ScriptedPhone"]


def sdp_offer(media_port: int) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )


@dataclass
class ScriptedPhone:
    """One account talking to ``host``:``port`` over one TLS connection (``context``
    given) or one UDP socket."""

    host: str
    port: int
    context: ssl.SSLContext | None
    user: str
    password: str
    domain: str = "sipwarden.test"
    timeout: float = 10.0
    media_port: int = 40000  # the port its SDP offers
    tcp: bool = False  # without ``context``: one TCP connection instead of UDP
    _sock: socket.socket | None = field(default=None, repr=False)
    _parser: StreamParser = field(default_factory=StreamParser, repr=False)
    _cseq: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    received: list[bytes] = field(default_factory=list, repr=False)  # every message, as read

    @property
    def transport(self) -> str:
        if self.context is not None:
            return "TLS"
        return "TCP" if self.tcp else "UDP"

    @property
    def _stream(self) -> bool:
        return self.transport != "UDP"

    def __enter__(self) -> ScriptedPhone:
        if self._stream:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._sock = (
                raw
                if self.context is None
                else self.context.wrap_socket(raw, server_hostname="localhost")
            )
        else:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.settimeout(self.timeout)
            self._sock.bind(("127.0.0.1", 0))
            self._sock.connect((self.host, self.port))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._sock is not None:
            self._sock.close()

    @property
    def local(self) -> str:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return f"{host}:{port}"

    # -- the exchanges ------------------------------------------------------------------

    def register(self) -> int:
        """REGISTER with digest authentication; the final status."""
        return self.register_answer().status

    def register_answer(self, expires: int = 300) -> Response:
        """REGISTER with digest authentication (``expires`` 0 removes this phone's
        binding); the final response."""
        call_id = f"reg-{secrets.token_hex(6)}@{self.user}"
        tag = secrets.token_hex(4)
        uri = f"sip:{self.domain}"
        to = f"<sip:{self.user}@{self.domain}>"
        lifetime = f"Expires: {expires}\r\n"
        response = self._transaction("REGISTER", uri, call_id, tag, to, extra=lifetime)
        if response.status == 401:
            auth = self._credentials(response, "REGISTER", uri, "Authorization")
            response = self._transaction("REGISTER", uri, call_id, tag, to, extra=lifetime + auth)
        return response

    def answer_call(self) -> list[str]:
        """Be called: answer the next INVITE 200 with an SDP answer, take its ACK,
        answer the caller's BYE 200. The methods of the requests received, in order."""
        methods: list[str] = []
        tag = secrets.token_hex(4)
        while "BYE" not in methods:
            request = self._receive()
            if not isinstance(request, Request):
                raise PeerError(f"unexpected response on the callee: {request.start_line()}")
            methods.append(request.method)
            if request.method == "INVITE":
                self._respond(request, "200 OK", tag, body=sdp_offer(self.media_port))
            elif request.method == "BYE":
                self._respond(request, "200 OK", tag)
        return methods

    def _respond(self, request: Request, status: str, tag: str, *, body: str = "") -> None:
        """A response as a UAS writes it (RFC 3261 8.2.6.2, 12.1.1: Vias and the
        Record-Route set copied, a To tag of its own, its Contact)."""
        assert self._sock is not None
        copied = "".join(
            f"{name}: {value}\r\n"
            for name in ("Via", "Record-Route")
            for value in request.headers.values(name.lower())
        )
        to = request.headers.get("to") or ""
        if ";tag=" not in to:
            to += f";tag={tag}"
        content = "Content-Type: application/sdp\r\n" if body else ""
        response = (
            f"SIP/2.0 {status}\r\n{copied}"
            f"From: {request.headers.get('from')}\r\nTo: {to}\r\n"
            f"Call-ID: {request.call_id}\r\nCSeq: {request.headers.get('cseq')}\r\n"
            f"Contact: <sip:{self.user}@{self.local};transport={self.transport.lower()}>\r\n"
            f"{content}Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self._sock.sendall(response.encode())

    def call(
        self,
        callee: str,
        during: Callable[[Response], None] | None = None,
        *,
        late_offer: bool = False,
    ) -> int:
        """A whole call to ``callee``; the status of the BYE's answer (200 when all went well).

        ``during`` is called with the 200 OK once the call is up, before the BYE.
        With ``late_offer`` the INVITE carries no SDP: the 200 OK brings the callee's
        offer and the ACK the phone's answer (RFC 3264).
        """
        call_id = f"call-{secrets.token_hex(6)}@{self.user}"
        tag = secrets.token_hex(4)
        uri = f"sip:{callee}@{self.domain}"
        to = f"<{uri}>"
        offer = "" if late_offer else sdp_offer(self.media_port)
        answer = self._transaction("INVITE", uri, call_id, tag, to, body=offer)
        if answer.status == 407:
            self._ack_failure(answer, uri, call_id, tag)
            auth = self._credentials(answer, "INVITE", uri, "Proxy-Authorization")
            answer = self._transaction("INVITE", uri, call_id, tag, to, extra=auth, body=offer)
        if answer.status != 200:
            raise PeerError(f"the call to {callee} failed: {answer.start_line()}")
        routes = "".join(
            f"Route: {value}\r\n" for value in reversed(answer.headers.values("record-route"))
        )
        target = answer.contact[0].uri if answer.contact else uri
        dialog_to = answer.headers.get("to") or to
        cseq = answer.cseq.seq if answer.cseq else 1
        ack_body = sdp_offer(self.media_port) if late_offer else ""
        self._send("ACK", str(target), call_id, tag, dialog_to, cseq, extra=routes, body=ack_body)
        if during is not None:
            during(answer)
        bye = self._transaction("BYE", str(target), call_id, tag, dialog_to, extra=routes)
        return bye.status

    # -- plumbing -----------------------------------------------------------------------

    def _credentials(self, challenge: Response, method: str, uri: str, header: str) -> str:
        offered = challenge.www_authenticate or challenge.proxy_authenticate
        credentials = answer_challenge(
            offered[0],
            method=method,
            uri=uri,
            username=self.user,
            password=self.password,
            cnonce=secrets.token_hex(8),
        )
        return f"{header}: {build_credentials(credentials)}\r\n"

    def _ack_failure(self, answer: Response, uri: str, call_id: str, tag: str) -> None:
        # RFC 3261 17.1.1.3: the ACK of a non-2xx has the INVITE's branch and CSeq.
        to = answer.headers.get("to") or ""
        cseq = answer.cseq.seq if answer.cseq else 1
        self._send("ACK", uri, call_id, tag, to, cseq, branch=self._last_branch)

    _last_branch: str = ""

    def _send(
        self,
        method: str,
        uri: str,
        call_id: str,
        tag: str,
        to: str,
        cseq: int,
        *,
        extra: str = "",
        body: str = "",
        branch: str | None = None,
    ) -> str:
        assert self._sock is not None
        branch = branch or f"z9hG4bK{secrets.token_hex(8)}"
        content = "Content-Type: application/sdp\r\n" if body else ""
        request = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{self.transport} {self.local};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@{self.domain}>;tag={tag}\r\n"
            f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{self.user}@{self.local};transport={self.transport.lower()}>\r\n"
            f"{extra}{content}Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self._sock.sendall(request.encode())
        return branch

    def _transaction(
        self,
        method: str,
        uri: str,
        call_id: str,
        tag: str,
        to: str,
        *,
        extra: str = "",
        body: str = "",
    ) -> Response:
        """Send a request; the first final response to it."""
        cseq = next(self._cseq)
        self._last_branch = self._send(method, uri, call_id, tag, to, cseq, extra=extra, body=body)
        while True:
            message = self._receive()
            if isinstance(message, Response) and message.status >= 200:
                if message.cseq is not None and message.cseq.seq == cseq:
                    return message
            elif isinstance(message, Request):
                raise PeerError(f"unexpected request on the phone: {message.start_line()}")

    def _receive(self) -> Request | Response:
        assert self._sock is not None
        while True:
            event = self._parser.next_event() if self._stream else None
            if isinstance(event, Request | Response):
                self.received.append(event.to_bytes())
                return event
            if event is None:
                data = self._sock.recv(65535)
                if not data:
                    raise PeerError(f"the gateway closed the {self.transport} connection")
                if not self._stream:  # a datagram is one message
                    message = parse_message(data)
                    assert isinstance(message, Request | Response)
                    self.received.append(data)
                    return message
                self._parser.feed(data)
