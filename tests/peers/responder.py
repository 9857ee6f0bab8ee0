"""A small UDP SIP responder: the lab target the attack tools are pointed at.

:class:`LabResponder` behaves like the responder the shared captures were
recorded against (``../shared/testdata/captures/README.md``): a PBX that
answers 404 for users it does not know and challenges the users it knows,
which is exactly what lets svwar tell extensions apart and svcrack guess a
password. It binds ``127.0.0.1`` on a free UDP port and serves from a
background thread; ``with LabResponder() as lab: ... lab.port``.

What it answers (RFC 3261 8.2 as a UAS; every response copies Via, From,
To, Call-ID and CSeq and adds a To tag, RFC 3261 8.2.6):

==============================  ============================================
OPTIONS                         200 OK with Allow (what svmap looks for)
REGISTER for an unknown user    404 Not Found (the user is the To URI's)
INVITE from an unknown user     404 Not Found (the user is the From URI's)
REGISTER / INVITE, known user   401 Unauthorized, ``WWW-Authenticate:
                                Digest`` MD5 with a fresh nonce, unless the
                                request carries credentials that
                                :func:`~sipwarden.sip.digest.verify` accepts
... with correct credentials    REGISTER: 200 OK; INVITE: ``invite_status``
                                (486 Busy Here by default: the lab has no
                                media, and a final non-2xx ends the INVITE
                                transaction without creating a dialog, so no
                                ACK/BYE has to be handled, RFC 3261 17.2.1)
ACK, responses                  nothing
BYE, CANCEL                     481 (the lab never creates a dialog)
anything else                   405 Method Not Allowed with Allow
==============================  ============================================

A UAS challenges with 401/WWW-Authenticate even for INVITE (RFC 3261
22.3; 407 is a proxy's). Credentials count only when their username is the
request's user and their realm and nonce are ours; nonces may be reused
(svcrack ``-n`` relies on it) and the ``uri`` parameter is not compared
(RFC 3261 22.4 asks a registrar to, a lab need not).

SIPVicious svcrack writes ``qop=auth`` without ``cnonce``/``nc`` even to a
challenge that offered no qop, and computes the RFC 2069 response (no qop).
``verify`` refuses to judge such credentials (RFC 2617 3.2.2), so the lab
then checks them in the RFC 2069 form, as the PBXs that svcrack cracks do;
otherwise svcrack could never succeed.

Responses go to the datagram's source address and port: what ``rport``
asks for (RFC 3581 4) and where every tool used here listens anyway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import secrets
import socket
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final, Self

from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.digest import (
    DigestChallenge,
    DigestCredentials,
    build_challenge,
    parse_credentials,
    verify,
)
from sipwarden.sip.message import Message, Request
from sipwarden.sip.parser import parse_message
from sipwarden.sip.uri import NameAddr, SipUri
from support import PeerError, StartedPeer

__all__ = ["ALLOW", "DEFAULT_USERS", "REALM", "SERVER", "LabResponder"]

#: Users (name -> password) of a responder built without ``users``. User 100's
#: password is in svcrack's range 100-130, as in the shared svcrack capture.
DEFAULT_USERS: Final[Mapping[str, str]] = MappingProxyType(
    {"100": "123", "101": "s3cret-101", "200": "s3cret-200"}
)

#: The digest realm, as in the shared captures.
REALM: Final = "lab.invalid"
#: The Server header of every response, as in the shared captures.
SERVER: Final = "lab-responder"
#: The Allow header of 200 (OPTIONS) and 405 answers.
ALLOW: Final = "INVITE, ACK, CANCEL, OPTIONS, BYE, REGISTER"

_REASONS: Final[Mapping[int, str]] = MappingProxyType(
    {
        200: "OK",
        401: "Unauthorized",
        404: "Not Found",
        405: "Method Not Allowed",
        481: "Call/Transaction Does Not Exist",
        486: "Busy Here",
        603: "Decline",
    }
)
# Bounded, like everything else in sipwarden: the lab remembers the nonces it
# issued most recently (svcrack needs only the last one).
_MAX_NONCES: Final = 4096
_RECV_TIMEOUT: Final = 0.05  # how quickly the serving thread notices stop()


class LabResponder(StartedPeer):
    """A UDP SIP responder on ``host``:``port`` for tests; see the module docstring.

    ``users`` maps the known user names to their passwords
    (:data:`DEFAULT_USERS` when omitted); ``port`` 0 picks a free one.
    ``invite_status`` is the final answer to an authenticated INVITE (486 by
    default; any status of 300 or more, or 200).

    Counters for assertions (read them any time; they are copies):
    :attr:`requests` by method, :attr:`responses` by status code,
    :attr:`authenticated` the (method, user) pairs that passed the digest
    check, in order.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        realm: str = REALM,
        invite_status: int = 486,
    ) -> None:
        if invite_status not in _REASONS or not (invite_status == 200 or invite_status >= 300):
            raise ValueError(f"invite_status {invite_status}: 200 or one of {sorted(_REASONS)}")
        self.users: Mapping[str, str] = MappingProxyType(
            dict(DEFAULT_USERS if users is None else users)
        )
        self.host = host
        self.port = port
        self.realm = realm
        self.invite_status = invite_status
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._responses: Counter[int] = Counter()
        self._authenticated: list[tuple[str, str]] = []
        self._nonces: OrderedDict[str, None] = OrderedDict()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._error: BaseException | None = None

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> Self:
        """Bind the socket and start serving; the port is bound when this returns."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise PeerError(
                f"lab responder cannot bind udp:{self.host}:{self.port}: {exc}"
            ) from exc
        sock.settimeout(_RECV_TIMEOUT)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"lab-responder-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; re-raises a crash of the serving thread."""
        thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is not None:
            thread.join(timeout=5.0)
            if thread.is_alive():  # pragma: no cover - recvfrom has a timeout
                raise PeerError("lab responder thread did not stop within 5 s")
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._error is not None:
            error, self._error = self._error, None
            raise PeerError(f"lab responder crashed: {error!r}") from error

    @property
    def running(self) -> bool:
        """Whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    # --- counters -----------------------------------------------------------

    @property
    def requests(self) -> Counter[str]:
        """Requests received, by method (``"<unparsable>"`` for datagrams that are not SIP)."""
        with self._lock:
            return Counter(self._requests)

    @property
    def responses(self) -> Counter[int]:
        """Responses sent, by status code."""
        with self._lock:
            return Counter(self._responses)

    @property
    def authenticated(self) -> list[tuple[str, str]]:
        """(method, user) of every request whose credentials were accepted, in order."""
        with self._lock:
            return list(self._authenticated)

    # --- the SIP logic (no sockets: testable on bytes) -----------------------

    def respond(self, data: bytes) -> bytes | None:
        """The answer to one datagram, or None when there is nothing to send."""
        try:
            message = parse_message(data, strict=False)
        except RemoteProtocolError:
            self._count_request("<unparsable>")
            return None
        if not isinstance(message, Request):
            return None  # a response: a UAS that never sends requests ignores it
        method = message.method.upper()
        self._count_request(method)
        if method == "ACK":
            return None  # RFC 3261 17.2.1: absorbed by the INVITE server transaction
        if method == "OPTIONS":
            return self._answer(message, 200, [("Allow", ALLOW)])
        if method in ("BYE", "CANCEL"):
            return self._answer(message, 481)
        if method not in ("REGISTER", "INVITE"):
            return self._answer(message, 405, [("Allow", ALLOW)])
        # A registration is for the To user (the address of record, RFC 3261
        # 10.2); a call is made by the From user.
        user = _user_of(message, "to" if method == "REGISTER" else "from")
        if user is None or user not in self.users:
            return self._answer(message, 404)
        if self._credentials_ok(message, method, user):
            with self._lock:
                self._authenticated.append((method, user))
            return self._answer(message, 200 if method == "REGISTER" else self.invite_status)
        challenge = DigestChallenge(realm=self.realm, nonce=self._new_nonce(), algorithm="MD5")
        return self._answer(message, 401, [("WWW-Authenticate", build_challenge(challenge))])

    def _new_nonce(self) -> str:
        nonce = secrets.token_hex(16)
        with self._lock:
            self._nonces[nonce] = None
            while len(self._nonces) > _MAX_NONCES:
                self._nonces.popitem(last=False)
        return nonce

    def _credentials_ok(self, message: Request, method: str, user: str) -> bool:
        password = self.users[user]
        values = [
            *message.headers.get_all("authorization"),
            *message.headers.get_all("proxy-authorization"),
        ]
        for value in values:
            try:
                credentials = parse_credentials(value, strict=False)
            except RemoteProtocolError:
                continue  # not Digest (lenient parsing raises only for that)
            with self._lock:
                issued = credentials.nonce in self._nonces
            if credentials.username != user or credentials.realm != self.realm or not issued:
                continue
            if _verify(credentials, method=method, password=password, body=message.body):
                return True
        return False

    def _answer(
        self, request: Request, status: int, extra: Sequence[tuple[str, str]] = ()
    ) -> bytes | None:
        headers = request.headers
        vias = headers.get_all("via")
        from_, to = headers.get("from"), headers.get("to")
        call_id, cseq = headers.get("call-id"), headers.get("cseq")
        if not vias or from_ is None or to is None or call_id is None or cseq is None:
            return None  # RFC 3261 8.1.1: no way to address an answer; drop it
        if not _has_tag(request):
            to = f"{to};tag={_to_tag(call_id, cseq, vias[0])}"
        lines = [f"SIP/2.0 {status} {_REASONS[status]}"]
        lines += [f"Via: {via}" for via in vias]
        lines += [f"From: {from_}", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq}"]
        lines.append(f"Server: {SERVER}")
        lines += [f"{name}: {value}" for name, value in extra]
        lines.append("Content-Length: 0")
        with self._lock:
            self._responses[status] += 1
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    def _count_request(self, method: str) -> None:
        with self._lock:
            self._requests[method] += 1

    # --- the serving thread -------------------------------------------------

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while not self._stopping.is_set():
                try:
                    data, peer = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                answer = self.respond(data)
                if answer is not None:
                    # A peer that went away (ICMP port unreachable) is its problem.
                    with contextlib.suppress(ConnectionRefusedError):
                        sock.sendto(answer, peer)
        except OSError:
            if not self._stopping.is_set():
                raise
        except BaseException as exc:  # surfaced by stop(): a test must not pass on a crash
            self._error = exc


def _verify(credentials: DigestCredentials, *, method: str, password: str, body: bytes) -> bool:
    try:
        return verify(credentials, method=method, password=password, body=body)
    except RemoteProtocolError:
        pass
    if credentials.qop is None or (credentials.cnonce is not None and credentials.nc is not None):
        return False  # an algorithm or qop verify does not compute
    # svcrack's qop=auth without cnonce/nc: check the RFC 2069 form (module docstring).
    rfc2069 = dataclasses.replace(credentials, qop=None, cnonce=None, nc=None)
    try:
        return verify(rfc2069, method=method, password=password, body=body)
    except RemoteProtocolError:
        return False


def _name_addr(message: Message, which: str) -> NameAddr | None:
    try:
        return message.to if which == "to" else message.from_
    except RemoteProtocolError:
        return None


def _user_of(message: Message, which: str) -> str | None:
    address = _name_addr(message, which)
    if address is None or not isinstance(address.uri, SipUri):
        return None
    return address.uri.user


def _has_tag(message: Message) -> bool:
    address = _name_addr(message, "to")
    if address is not None:
        return any(name.lower() == "tag" for name, _ in address.params)
    to = message.headers.get("to") or ""
    return ";tag=" in to.replace(" ", "").lower()


def _to_tag(call_id: str, cseq: str, via: str) -> str:
    # The same for a retransmission of the same request (RFC 3261 8.2.6.2
    # wants one tag per transaction), different for every new one.
    digest = hashlib.sha256(f"{call_id}\n{cseq}\n{via}".encode("utf-8", "surrogateescape"))
    return "uas" + digest.hexdigest()[:10]
