"""Media anchoring through rtpengine, over its *ng* control protocol.

With ``[gateway.media] rtpengine`` set, the gateway hands every SDP body to rtpengine
(Debian ``rtpengine-daemon``) and forwards the body rtpengine gives back. rtpengine then
relays the RTP/RTCP itself, from its own ports, so the outside only ever sees rtpengine's
outside address in SDP and in RTP, never the PBX's media address (and the PBX only sees
rtpengine's inside address). Per call:

* ``offer`` with the SDP of the INVITE (or re-INVITE, UPDATE) as it crosses the gateway,
  saying which leg it goes to;
* ``answer`` with the SDP of the response (200/183) that answers it;
* ``delete`` when the dialog ends (BYE, CANCEL, a final error response).

The wire format (rtpengine's documentation, "The ng Control Protocol", first section):
a request is a *cookie*, one space and a bencoded dictionary with at least ``command``;
the reply is the same cookie, one space and a dictionary with at least ``result``
(``ok``, ``pong`` for ``ping``, or ``error`` with ``error-reason``; ``ok`` may carry a
``warning``). The cookie matches replies to requests and lets rtpengine detect
retransmissions: a request sent again with the same cookie is answered from its cache,
not executed twice, so retransmitting over UDP is safe.

This module has two parts:

* sans-IO (no socket, no clock): :func:`offer_command`, :func:`answer_command`,
  :func:`delete_command`, :func:`query_command`, :func:`ping_command` build request
  dictionaries; :func:`encode_request` and :func:`parse_reply` move them to and from
  bytes; :func:`parse_rtpengine_address` reads the configuration value.
* asyncio: :class:`RtpengineClient` sends requests over UDP, retransmits with the same
  cookie until a reply comes or the timeout passes, and matches replies to requests by
  cookie. Every failure reaches the caller as a :class:`MediaError` naming rtpengine's
  address; when rtpengine itself refuses, as :class:`MediaRejectedError` with its reason.

The flags we send (``MediaPolicy``), each for a reason (ng protocol documentation,
section "offer Message"):

* ``direction`` [from interface, to interface]: the logical interfaces (rtpengine's
  ``--interface=NAME/IP``) facing the sender and the receiver of the SDP, so the PBX leg
  gets rtpengine's inside address and the outside leg its outside address. Only sent in
  offers; rtpengine remembers the choice for the answer and later offers. rtpengine
  10.5 silently falls back to its first interface for a name it does not know, so the
  names here must match its command line.
* ``replace`` [``origin``, ``session-connection``]: rtpengine always rewrites the media
  ports and media-level ``c=``, but only rewrites the ``o=`` address and the session-level
  ``c=`` when asked; both would otherwise still carry the PBX's address.
* ``ICE`` ``remove``: ICE candidates list the endpoint's real addresses (the PBX's
  included); removing them leaves rtpengine as the only media address.
* ``flags`` [``strict-source``]: after the learning phase, packets from any other source
  than the learned endpoint are dropped instead of relayed (DESIGN: "rtpengine, when used,
  runs with strict source").
* ``transport-protocol`` (offers only, when set): the RTP profile towards the receiver,
  e.g. ``RTP/SAVP`` towards the outside when SRTP is required there and ``RTP/AVP``
  towards a PBX without SRTP; rtpengine translates between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import itertools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Final, NamedTuple, Self, TypeAlias

from sipwarden.errors import ConfigError, LocalProtocolError, RemoteProtocolError, SipwardenError
from sipwarden.gateway.bencode import BencodeError, BencodeValue, Encodable, decode, encode

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_RETRANSMIT_INTERVAL",
    "DEFAULT_TIMEOUT",
    "MAX_COOKIE_LENGTH",
    "TRANSPORT_PROTOCOLS",
    "Leg",
    "MediaError",
    "MediaPolicy",
    "MediaRejectedError",
    "NgProtocolError",
    "NgReply",
    "RtpengineAddress",
    "RtpengineClient",
    "answer_command",
    "delete_command",
    "encode_request",
    "offer_command",
    "parse_reply",
    "parse_rtpengine_address",
    "ping_command",
    "query_command",
    "split_cookie",
]

#: Where the address comes from in the configuration (for error messages).
CONFIG_KEY: Final = "gateway.media.rtpengine"

#: Seconds a request may take, retransmissions included, before it fails.
DEFAULT_TIMEOUT: Final = 3.0

#: Seconds before the first retransmission; each later one waits twice as long.
#: rtpengine answers in well under a millisecond on a LAN, so a quarter second of
#: silence means a lost datagram (or a dead rtpengine), not a slow one.
DEFAULT_RETRANSMIT_INTERVAL: Final = 0.25

#: Requests in flight at once; more fail at once instead of queueing without bound.
DEFAULT_MAX_PENDING: Final = 1024

#: Longest cookie we send or accept. rtpengine takes any word; ours are ~24 bytes.
MAX_COOKIE_LENGTH: Final = 64

#: The values of ``transport-protocol`` (ng protocol documentation, "transport protocol").
TRANSPORT_PROTOCOLS: Final = frozenset({"RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF"})

# The parts of the SDP that still name the sender unless rtpengine is told to replace
# them (ng protocol documentation, "Optionally included replace-flags").
_REPLACE: Final = ("origin", "session-connection")


# --- errors ------------------------------------------------------------------------------------


class NgProtocolError(RemoteProtocolError):
    """A datagram from rtpengine is not an ng reply (no cookie, no ``result``, no ``sdp``)."""

    def __init__(self, message: str, *, rule: str, offset: int | None = None) -> None:
        super().__init__(message, rule=rule, offset=offset)


class MediaError(SipwardenError):
    """Media anchoring failed: rtpengine did not answer in time, answered garbage, or refused.

    ``address`` is rtpengine's control address (``udp:host:port``), ``command`` the ng
    command that failed and ``reason`` what went wrong. The gateway cannot anchor the
    call's media without rtpengine, so it must not forward the SDP unchanged (that would
    reveal the PBX's media address); it answers the call with an error instead.
    """

    def __init__(self, address: str, command: str, reason: str) -> None:
        super().__init__(f"rtpengine at {address}: {command}: {reason}")
        self.address = address
        self.command = command
        self.reason = reason


class MediaRejectedError(MediaError):
    """rtpengine answered ``"result": "error"``; ``error_reason`` is its ``error-reason``."""

    def __init__(self, address: str, command: str, error_reason: str) -> None:
        super().__init__(address, command, f"rtpengine refused: {error_reason}")
        self.error_reason = error_reason


# --- configuration -----------------------------------------------------------------------------


class RtpengineAddress(NamedTuple):
    """rtpengine's ng control socket: an IP address literal and a UDP port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp:{host}:{self.port}"


def parse_rtpengine_address(value: str, *, key_path: str = CONFIG_KEY) -> RtpengineAddress:
    """Read ``[gateway.media] rtpengine``: ``"udp:127.0.0.1:2223"`` or ``"udp:[::1]:2223"``.

    The ng protocol runs over UDP here (rtpengine's ``--listen-ng``); the host must be an
    IP address, not a name, so that no DNS look-up sits on the call path. Raises
    :class:`~sipwarden.errors.ConfigError` naming ``key_path`` for anything else.
    """
    scheme, sep, rest = value.partition(":")
    if not sep or scheme != "udp":
        raise ConfigError(f'expected "udp:HOST:PORT", got {value!r}', key_path=key_path)
    host, sep, port_text = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ConfigError(f"brackets are for IPv6 addresses: {value!r}", key_path=key_path)
    elif ":" in host:
        raise ConfigError(f"an IPv6 address needs brackets: {value!r}", key_path=key_path)
    if not sep or not port_text.isascii() or not port_text.isdigit():
        raise ConfigError(f"no port number in {value!r}", key_path=key_path)
    port = int(port_text)
    if not 1 <= port <= 65_535:
        raise ConfigError(f"port {port} is not in 1-65535", key_path=key_path)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{host!r} is not an IP address", key_path=key_path) from None
    return RtpengineAddress(str(address), port)


# --- commands (sans-IO) ------------------------------------------------------------------------


class Leg(enum.Enum):
    """The side of the gateway an SDP body is going to."""

    OUTSIDE = "outside"  # the phones, trunks and attackers: sees rtpengine's outside address
    PBX = "pbx"  # the protected PBX: sees rtpengine's inside address


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaPolicy:
    """How rtpengine treats a call's media (see the module docstring for each flag).

    ``outside_interface`` and ``pbx_interface`` are names of rtpengine's logical
    interfaces (``--interface=external/203.0.113.7 --interface=internal/10.0.0.1``).
    ``outside_transport`` / ``pbx_transport``, when set, is the RTP profile offered
    towards that leg (one of :data:`TRANSPORT_PROTOCOLS`); ``None`` keeps what the
    offerer asked for.
    """

    outside_interface: str = "external"
    pbx_interface: str = "internal"
    strict_source: bool = True
    outside_transport: str | None = None
    pbx_transport: str | None = None

    def __post_init__(self) -> None:
        for name in (self.outside_interface, self.pbx_interface):
            if not name or not name.isprintable() or " " in name:
                raise LocalProtocolError(f"rtpengine interface name {name!r} is not a word")
        for proto in (self.outside_transport, self.pbx_transport):
            if proto is not None and proto not in TRANSPORT_PROTOCOLS:
                raise LocalProtocolError(
                    f"transport protocol {proto!r} is not one of {sorted(TRANSPORT_PROTOCOLS)}"
                )

    def interface(self, leg: Leg) -> str:
        """rtpengine's interface name facing ``leg``."""
        return self.outside_interface if leg is Leg.OUTSIDE else self.pbx_interface

    def transport(self, leg: Leg) -> str | None:
        """The RTP profile to offer towards ``leg``, or ``None`` to keep the offered one."""
        return self.outside_transport if leg is Leg.OUTSIDE else self.pbx_transport


_DEFAULT_POLICY: Final = MediaPolicy()

#: An ng request dictionary, before encoding.
Command: TypeAlias = dict[str, Encodable]


def ping_command() -> Command:
    """``ping``: is rtpengine alive? (ng protocol documentation, "ping Message")."""
    return {"command": "ping"}


def offer_command(
    *,
    call_id: str,
    from_tag: str,
    sdp: bytes | str,
    toward: Leg,
    policy: MediaPolicy = _DEFAULT_POLICY,
    to_tag: str | None = None,
    via_branch: str | None = None,
) -> Command:
    """``offer``: the SDP offer of a request going to ``toward`` ("offer Message").

    ``from_tag`` is the From tag of the request that carries the offer (for a re-INVITE
    from the called party that is the called party's tag), ``to_tag`` its To tag if it
    has one (in-dialog offers). The offerer sits on the other leg, so ``direction`` is
    [interface facing the offerer, interface facing ``toward``].
    """
    source = Leg.PBX if toward is Leg.OUTSIDE else Leg.OUTSIDE
    command: Command = {
        "command": "offer",
        "call-id": _word(call_id, "call-id"),
        "from-tag": _word(from_tag, "from-tag"),
        "sdp": _sdp(sdp),
        "direction": [policy.interface(source), policy.interface(toward)],
        **_media_options(policy),
    }
    if to_tag is not None:
        command["to-tag"] = _word(to_tag, "to-tag")
    if via_branch is not None:
        command["via-branch"] = _word(via_branch, "via-branch")
    transport = policy.transport(toward)
    if transport is not None:
        command["transport-protocol"] = transport
    return command


def answer_command(
    *,
    call_id: str,
    from_tag: str,
    to_tag: str,
    sdp: bytes | str,
    policy: MediaPolicy = _DEFAULT_POLICY,
    via_branch: str | None = None,
) -> Command:
    """``answer``: the SDP answer of the response to an offer ("answer Message").

    ``from_tag`` and ``to_tag`` are the From and To tags of the response (the From tag
    is the offerer's, as in the offer). No ``direction``: rtpengine remembers it from the
    offer, and no ``transport-protocol``: the answer goes back in the offerer's profile.
    """
    command: Command = {
        "command": "answer",
        "call-id": _word(call_id, "call-id"),
        "from-tag": _word(from_tag, "from-tag"),
        "to-tag": _word(to_tag, "to-tag"),
        "sdp": _sdp(sdp),
        **_media_options(policy),
    }
    if via_branch is not None:
        command["via-branch"] = _word(via_branch, "via-branch")
    return command


def delete_command(
    *, call_id: str, from_tag: str, to_tag: str | None = None, delete_delay: int | None = 0
) -> Command:
    """``delete``: the call (or one branch of it) is over ("delete Message").

    ``delete_delay`` is how many seconds rtpengine keeps relaying afterwards; 0 (the
    default) stops the media at once, as a firewall should once the dialog is over
    (rtpengine's own default, ``--delete-delay``, is 30 s); ``None`` leaves rtpengine's.
    """
    command: Command = {
        "command": "delete",
        "call-id": _word(call_id, "call-id"),
        "from-tag": _word(from_tag, "from-tag"),
    }
    if to_tag is not None:
        command["to-tag"] = _word(to_tag, "to-tag")
    if delete_delay is not None:
        if delete_delay < 0:
            raise LocalProtocolError(f"delete delay {delete_delay} is negative")
        command["delete-delay"] = delete_delay
    return command


def query_command(*, call_id: str, from_tag: str | None = None) -> Command:
    """``query``: rtpengine's view of a call: tags, media, streams, packet counters."""
    command: Command = {"command": "query", "call-id": _word(call_id, "call-id")}
    if from_tag is not None:
        command["from-tag"] = _word(from_tag, "from-tag")
    return command


def _media_options(policy: MediaPolicy) -> Command:
    options: Command = {"replace": list(_REPLACE), "ICE": "remove"}
    if policy.strict_source:
        options["flags"] = ["strict-source"]
    return options


def _word(value: str, what: str) -> str:
    # Call-IDs and tags come from SIP messages that already passed the parser; an empty
    # one would make rtpengine match the wrong call, a control character breaks its logs.
    if not value or not value.isprintable():
        raise LocalProtocolError(f"{what} {value!r} is empty or not printable")
    return value


def _sdp(sdp: bytes | str) -> bytes:
    body = sdp.encode("latin-1") if isinstance(sdp, str) else bytes(sdp)
    if not body:
        raise LocalProtocolError("an empty SDP body cannot be offered or answered")
    return body


# --- wire format (sans-IO) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NgReply:
    """One decoded ng reply.

    ``result`` is ``ok``, ``pong`` or ``error`` (or whatever else rtpengine says);
    ``error_reason`` and ``warning`` are its ``error-reason`` and ``warning`` keys;
    ``fields`` holds the whole dictionary, keys as text, values as decoded.
    """

    cookie: str
    result: str
    error_reason: str | None = None
    warning: str | None = None
    fields: Mapping[str, BencodeValue] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def ok(self) -> bool:
        """Whether the command succeeded (``ok``, or ``pong`` for a ping)."""
        return self.result in ("ok", "pong")

    @property
    def sdp(self) -> bytes:
        """The rewritten SDP of an ``offer``/``answer`` reply; an error if there is none."""
        body = self.fields.get("sdp")
        if not isinstance(body, bytes) or not body:
            raise NgProtocolError("reply has no sdp string", rule="ng-reply-sdp")
        return body


def encode_request(cookie: str, command: Mapping[str, Encodable]) -> bytes:
    """``cookie SP bencoded-dictionary``: one ng request datagram."""
    raw = cookie.encode("utf-8")
    if not _is_cookie(raw):
        raise LocalProtocolError(f"ng cookie {cookie!r} is not 1-{MAX_COOKIE_LENGTH} visible chars")
    if not isinstance(command.get("command"), str):
        raise LocalProtocolError("an ng request needs a 'command' string")
    return raw + b" " + encode(command)


def split_cookie(datagram: bytes) -> tuple[str, bytes]:
    """The cookie of an ng message and the bytes after the space."""
    cookie, sep, body = datagram.partition(b" ")
    if not sep or not _is_cookie(cookie):
        raise NgProtocolError(
            "datagram does not start with a cookie and a space", rule="ng-cookie", offset=0
        )
    return cookie.decode("ascii"), body


def parse_reply(datagram: bytes) -> NgReply:
    """Decode one ng reply; :class:`NgProtocolError` or :class:`BencodeError` if malformed."""
    cookie, body = split_cookie(datagram)
    offset = len(cookie) + 1
    try:
        document = decode(body)
    except BencodeError as exc:
        # Offsets in the datagram, not in the dictionary after the cookie.
        at = offset + (exc.offset or 0)
        raise BencodeError(exc.reason, rule=exc.rule, offset=at) from None
    if not isinstance(document, dict):
        raise NgProtocolError("reply is not a dictionary", rule="ng-reply-dict", offset=offset)
    fields = MappingProxyType({key.decode("latin-1"): value for key, value in document.items()})
    result = fields.get("result")
    if not isinstance(result, bytes) or not result:
        raise NgProtocolError("reply has no 'result' string", rule="ng-reply-result", offset=offset)
    return NgReply(
        cookie=cookie,
        result=result.decode("latin-1"),
        error_reason=_text(fields, "error-reason"),
        warning=_text(fields, "warning"),
        fields=fields,
    )


def _is_cookie(raw: bytes) -> bool:
    return 0 < len(raw) <= MAX_COOKIE_LENGTH and all(0x21 <= byte <= 0x7E for byte in raw)


def _text(fields: Mapping[str, BencodeValue], key: str) -> str | None:
    value = fields.get(key)
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else None


# --- asyncio client ----------------------------------------------------------------------------


class RtpengineClient:
    """Talks ng to one rtpengine over UDP; use ``async with`` or :meth:`start`/:meth:`close`.

    Each request gets a fresh cookie (a random per-client prefix and a counter, so a
    restarted gateway never reuses one that rtpengine still has cached) and is sent
    again, with the same cookie, after ``retransmit_interval`` seconds, then twice that,
    and so on, until a reply comes or ``timeout`` seconds have passed. At most
    ``max_pending`` requests are in flight.

    Datagrams that match no request in flight (a second reply to a retransmitted request)
    are counted in ``stats["stale"]``; datagrams that are not ng replies at all are counted
    in ``stats["malformed"]`` and, when their cookie names a request, fail that request at
    once. Nothing a datagram holds can raise anything but :class:`MediaError` in the caller.
    """

    def __init__(
        self,
        address: RtpengineAddress | str,
        *,
        policy: MediaPolicy = _DEFAULT_POLICY,
        timeout: float = DEFAULT_TIMEOUT,
        retransmit_interval: float = DEFAULT_RETRANSMIT_INTERVAL,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if isinstance(address, str):
            address = parse_rtpengine_address(address)
        if timeout <= 0 or retransmit_interval <= 0 or max_pending < 1:
            raise ValueError("timeout, retransmit_interval and max_pending must be positive")
        self.address = address
        self.policy = policy
        self.timeout = timeout
        self.retransmit_interval = retransmit_interval
        self.max_pending = max_pending
        self.stats: dict[str, int] = dict.fromkeys(
            ("sent", "retransmitted", "replies", "stale", "malformed", "socket_errors"), 0
        )
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)
        # cookie -> (the reply's future, the command's name for error messages)
        self._pending: dict[str, tuple[asyncio.Future[NgReply], str]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._last_problem: str | None = None

    # lifecycle

    async def start(self) -> Self:
        """Open the UDP socket, connected to rtpengine (so only its datagrams come in)."""
        if self._transport is None:
            loop = asyncio.get_running_loop()
            try:
                self._transport, _ = await loop.create_datagram_endpoint(
                    lambda: _NgProtocol(self), remote_addr=(self.address.host, self.address.port)
                )
            except OSError as exc:
                raise MediaError(str(self.address), "connect", str(exc)) from exc
        return self

    async def close(self) -> None:
        """Close the socket; requests still in flight fail with :class:`MediaError`."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._fail_all("client closed")

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # the commands the gateway core calls

    async def ping(self) -> None:
        """Succeed if rtpengine answers ``pong``."""
        reply = await self.request(ping_command())
        if reply.result != "pong":
            raise MediaError(str(self.address), "ping", f"answered {reply.result!r}, not pong")

    async def offer(
        self,
        *,
        call_id: str,
        from_tag: str,
        sdp: bytes | str,
        toward: Leg,
        to_tag: str | None = None,
        via_branch: str | None = None,
    ) -> bytes:
        """Anchor an SDP offer going to ``toward``; return the SDP to forward instead."""
        command = offer_command(
            call_id=call_id,
            from_tag=from_tag,
            sdp=sdp,
            toward=toward,
            policy=self.policy,
            to_tag=to_tag,
            via_branch=via_branch,
        )
        return self._sdp_of(await self.request(command), "offer")

    async def answer(
        self,
        *,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: bytes | str,
        via_branch: str | None = None,
    ) -> bytes:
        """Anchor the SDP answer to an earlier offer; return the SDP to forward instead."""
        command = answer_command(
            call_id=call_id,
            from_tag=from_tag,
            to_tag=to_tag,
            sdp=sdp,
            policy=self.policy,
            via_branch=via_branch,
        )
        return self._sdp_of(await self.request(command), "answer")

    async def delete(
        self,
        *,
        call_id: str,
        from_tag: str,
        to_tag: str | None = None,
        delete_delay: int | None = 0,
    ) -> NgReply:
        """End the call's media. A call rtpengine does not know is not an error (the
        reply carries a ``warning``): a retransmitted BYE must not fail."""
        command = delete_command(
            call_id=call_id, from_tag=from_tag, to_tag=to_tag, delete_delay=delete_delay
        )
        return await self.request(command)

    async def query(self, *, call_id: str, from_tag: str | None = None) -> NgReply:
        """rtpengine's view of the call; :class:`MediaRejectedError` if it does not know it."""
        return await self.request(query_command(call_id=call_id, from_tag=from_tag))

    # the request machinery

    async def request(self, command: Mapping[str, Encodable]) -> NgReply:
        """Send one ng command and return its successful reply.

        Raises :class:`MediaRejectedError` when rtpengine answers ``error`` and
        :class:`MediaError` for everything else that goes wrong.
        """
        name = str(command.get("command", "?"))
        transport = self._transport
        if transport is None:
            raise MediaError(str(self.address), name, "client is not started")
        if len(self._pending) >= self.max_pending:
            raise MediaError(str(self.address), name, f"{self.max_pending} requests in flight")
        cookie = f"{self._prefix}_{next(self._counter)}"
        datagram = encode_request(cookie, command)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[NgReply] = loop.create_future()
        self._pending[cookie] = (future, name)
        try:
            reply = await self._exchange(transport, datagram, future, name)
        finally:
            self._pending.pop(cookie, None)
        if not reply.ok:
            reason = reply.error_reason or f"result {reply.result!r}"
            raise MediaRejectedError(str(self.address), name, reason)
        return reply

    async def _exchange(
        self,
        transport: asyncio.DatagramTransport,
        datagram: bytes,
        future: asyncio.Future[NgReply],
        name: str,
    ) -> NgReply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        interval = self.retransmit_interval
        sends = 0
        self._last_problem = None
        while (remaining := deadline - loop.time()) > 0:
            transport.sendto(datagram)
            self.stats["sent" if sends == 0 else "retransmitted"] += 1
            sends += 1
            # shield: a timeout of one round must not cancel the future the next waits on.
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(future), min(interval, remaining))
            interval *= 2
        problem = f"; last problem: {self._last_problem}" if self._last_problem else ""
        raise MediaError(
            str(self.address),
            name,
            f"no reply within {self.timeout:g} s ({sends} sends){problem}",
        )

    def _sdp_of(self, reply: NgReply, name: str) -> bytes:
        try:
            return reply.sdp
        except NgProtocolError as exc:
            raise MediaError(str(self.address), name, str(exc)) from exc

    def _fail(self, cookie: str, reason: str) -> None:
        pending = self._pending.get(cookie)
        if pending is not None and not pending[0].done():
            future, name = pending
            future.set_exception(MediaError(str(self.address), name, reason))

    def _fail_all(self, reason: str) -> None:
        for cookie in list(self._pending):
            self._fail(cookie, reason)

    # called by _NgProtocol

    def _datagram_received(self, data: bytes) -> None:
        try:
            reply = parse_reply(data)
        except RemoteProtocolError as exc:
            self._malformed(data, exc)
            return
        pending = self._pending.get(reply.cookie)
        if pending is None or pending[0].done():
            self.stats["stale"] += 1
            return
        self.stats["replies"] += 1
        pending[0].set_result(reply)

    def _malformed(self, data: bytes, exc: RemoteProtocolError) -> None:
        self.stats["malformed"] += 1
        self._last_problem = f"malformed reply {data[:40]!r}: {exc}"
        # A request whose cookie the garbage carries will not get a better answer from a
        # retransmission (rtpengine answers it from its cache): fail it now.
        with contextlib.suppress(NgProtocolError):
            cookie, _ = split_cookie(data)
            self._fail(cookie, f"malformed reply: {exc}")

    def _error_received(self, exc: Exception) -> None:
        # ICMP port unreachable arrives here as ConnectionRefusedError: rtpengine is not
        # listening (yet). Keep retransmitting until the timeout (it may be restarting),
        # and say so in the timeout's message.
        self.stats["socket_errors"] += 1
        self._last_problem = str(exc) or type(exc).__name__


class _NgProtocol(asyncio.DatagramProtocol):
    """Moves datagrams between the socket and its :class:`RtpengineClient`."""

    def __init__(self, client: RtpengineClient) -> None:
        self._client = client

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._client._datagram_received(data)

    def error_received(self, exc: Exception) -> None:
        self._client._error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._fail_all(f"socket closed: {exc}" if exc else "socket closed")
