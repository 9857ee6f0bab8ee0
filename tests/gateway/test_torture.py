"""RFC 4475 torture messages sent to the gateway: answered or dropped as the README says.

The gateway issue's claim: "Every RFC 4475 torture message sent to the
gateway is answered or dropped as ``../shared/testdata/rfc4475/README.md``
says; none crashes or stalls it." :data:`GATEWAY` is the README's gateway
column, one entry per message with the README's words beside it, checked
against the parser's tables (``tests/rfc4475_cases.py``) so the two cannot
drift apart.

Sans-IO, with a real engine and a real token signer:

* each message as one datagram from a phone on the Internet, into
  :meth:`GatewayCore.receive`: exactly the answers in the table go back to
  the phone and exactly the forwards go to the PBX; a forwarded request
  parses strictly, carries the gateway's Via on top, one hop less in
  Max-Forwards and otherwise the meaning it arrived with;
* each message over a stream, framed by :class:`StreamParser` and handed to
  :meth:`GatewayCore.receive_message` as ``server.py``'s ``_Stream`` does,
  fed whole and byte by byte;
* the valid responses, once as they are (not for the gateway: discarded)
  and once answering a request the PBX sent through the gateway (forwarded);
* all 49 in turn through one gateway in front of a PBX that answers, from
  49 sources: what one message leaves behind must not change the next one's fate.

Real process: all 49 over UDP, and over TCP, to ``sipwarden gateway`` in
front of a real Kamailio; afterwards the gateway answers a plain OPTIONS
within 100 ms, logged no traceback, and every phone got what the table says;
a capture of the inside leg shows which messages reached Kamailio. Kamailio
would loose-route wsinv (an in-dialog INVITE with a preloaded Route naming
``services.example.com``) to that name, i.e. look it up in the DNS: so the
run happens in a network namespace of its own, which has a loopback
interface and nothing else, and no packet can leave the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, NamedTuple

import pytest

from gateway.test_core import INSIDE, PBX, PHONE, core
from monitor.live_support import LiveMonitor
from peers import BENIGN_USERS, KamailioRegistrar
from peers.capture import SipPacket, capture, read_sip
from rfc4475_cases import APPLICATION, INVALID, VALID, load, message_names
from sipwarden.engine.contract import Inspection
from sipwarden.errors import RemoteProtocolError
from sipwarden.gateway.core import GatewayCore
from sipwarden.gateway.hiding import HeaderRules
from sipwarden.gateway.model import Endpoint, GatewaySettings, Send
from sipwarden.gateway.routing import BRANCH_PREFIX
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.parser import KeepAlive, StreamParser, parse_message
from sipwarden.sip.replies import make_response
from sipwarden.sip.uri import SipUri
from support import free_port, require_tool

NOW: Final = 1000.0
TCP_PHONE: Final = PHONE._replace(transport="tcp")


class Outcome(NamedTuple):
    """What the gateway sends for one message: statuses back to its source, requests on."""

    answers: tuple[int, ...] = ()  # statuses of the gateway's own answers to the source
    forwarded: int = 0  # requests sent on to the PBX
    closed: bool = False  # streams: the framing broke, the connection is closed
    waiting: bool = False  # streams: the message is incomplete, its bytes wait for the rest


DROP: Final = Outcome()
FORWARD: Final = Outcome(forwarded=1)
# RFC 3261 16.2: a stateful proxy answers an INVITE 100 Trying at once.
FORWARD_INVITE: Final = Outcome(answers=(100,), forwarded=1)
CLOSED: Final = Outcome(closed=True)
WAITING: Final = Outcome(waiting=True)


def answer(status: int) -> Outcome:
    return Outcome(answers=(status,))


def answer_and_close(status: int) -> Outcome:
    """On a stream: the README's answer on the connection, then it is closed (the
    framing is lost, RFC 3261 18.3)."""
    return Outcome(answers=(status,), closed=True)


class Expect(NamedTuple):
    datagram: Outcome
    stream: Outcome | None = None  # None: the same as for a datagram

    def over(self, transport: str) -> Outcome:
        return self.stream if transport != "udp" and self.stream is not None else self.datagram

    @property
    def breaks_streams(self) -> bool:
        """On a stream its head fails the strict parse: the connection is closed."""
        return self.stream is not None and self.stream.closed


GATEWAY: Final[dict[str, Expect]] = {
    # -- 3.1.1 valid: "forwards; what it forwards parses to the same meaning"
    "wsinv": Expect(FORWARD_INVITE),
    "intmeth": Expect(FORWARD),
    "esc01": Expect(FORWARD_INVITE),
    "escnull": Expect(FORWARD),
    "esc02": Expect(FORWARD),
    "lwsdisp": Expect(FORWARD),
    "longreq": Expect(FORWARD_INVITE),
    # "dblreq: octets after Content-Length ignored" in a datagram. On a stream they
    # are the next message (RFC 3261 18.3): an INVITE, forwarded too, whose body is
    # 5 octets longer than its Content-Length, and those octets break the framing.
    "dblreq": Expect(FORWARD, stream=Outcome(answers=(100,), forwarded=2, closed=True)),
    "semiuri": Expect(FORWARD),
    "transports": Expect(FORWARD),
    "mpart01": Expect(FORWARD),
    # Responses whose top Via is not the gateway's are discarded (RFC 3261 18.1.2);
    # answering a request the PBX sent, they are forwarded (see the test below).
    "unreason": Expect(DROP),
    "noreason": Expect(DROP),
    # -- 3.1.2 invalid: "never forwards as-is: answers 400 (505 for badvers, 501/400
    # for the mismatches) or drops a response, and records a malformed-message event"
    "badinv01": Expect(answer(400)),
    # Content-Length 9999 and a short body: on a stream the rest is still to come.
    "clerr": Expect(answer(400), stream=WAITING),
    # Content-Length -999: a stream cannot be framed (RFC 3261 18.3).
    "ncl": Expect(answer(400), stream=answer_and_close(400)),
    "scalar02": Expect(answer(400)),
    "scalarlg": Expect(DROP),  # a response
    "quotbal": Expect(answer(400)),
    "ltgtruri": Expect(answer(400)),
    "lwsruri": Expect(answer(400), stream=answer_and_close(400)),
    "lwsstart": Expect(answer(400), stream=answer_and_close(400)),
    "trws": Expect(answer(400), stream=answer_and_close(400)),
    "escruri": Expect(answer(400)),
    "baddate": Expect(answer(400)),
    "regbadct": Expect(answer(400)),
    "badaspec": Expect(answer(400)),
    # The file has no empty line after its headers: on a stream the head is incomplete.
    "baddn": Expect(answer(400), stream=WAITING),
    "badvers": Expect(answer(505), stream=answer_and_close(505)),
    "mismatch01": Expect(answer(400)),
    "mismatch02": Expect(answer(400)),
    # A response; on a stream its broken status line ends the framing.
    "bigcode": Expect(DROP, stream=CLOSED),
    # -- 3.2 transaction layer: "badbranch ... handles it without crashing (RFC 2543 matching)"
    "badbranch": Expect(FORWARD),
    # -- 3.3 application layer
    "insuf": Expect(answer(400)),  # "insuf, multi01, mcl01: 400"
    "unkscm": Expect(answer(416)),  # "unkscm, novelsc: 416"
    "novelsc": Expect(answer(416)),
    # "unksm2, invut, regaut01, cparam01, cparam02, regescrt, sdp01: forwarded, as a proxy would"
    "unksm2": Expect(FORWARD),
    "bext01": Expect(answer(420)),  # "420 with Unsupported listing the Proxy-Require values"
    "invut": Expect(FORWARD_INVITE),
    "regaut01": Expect(FORWARD),
    "multi01": Expect(answer(400)),
    # Two Content-Lengths: on a stream the framing is undecidable.
    "mcl01": Expect(answer(400), stream=answer_and_close(400)),
    "bcast": Expect(DROP),  # "bcast: the response is not forwarded"
    "zeromf": Expect(answer(483)),  # "zeromf: 483 (a proxy does not forward Max-Forwards 0)"
    "cparam01": Expect(FORWARD),
    "cparam02": Expect(FORWARD),
    "regescrt": Expect(FORWARD),
    "sdp01": Expect(FORWARD_INVITE),
    # -- 3.4 backward compatibility: "inv2543 ... forwards". It has no Content-Length,
    # which a stream needs to frame it (RFC 3261 18.3, 20.14).
    "inv2543": Expect(
        FORWARD_INVITE, stream=answer_and_close(400)
    ),  # no Content-Length on a stream (18.3)
}
NAMES: Final = sorted(GATEWAY)

# Same branch, sent-by and method as an earlier message (RFC 3261 17.2.3): sent to
# one gateway after that one, each is a retransmission of it, absorbed, and the
# earlier message's answer goes again to the earlier message's source.
RETRANSMISSIONS: Final = {"cparam02": "cparam01", "regescrt": "escnull"}

# What a proxy changes in a request it forwards inward (RFC 3261 16.6): Via (its
# own added, the client's stamped), Max-Forwards, Record-Route; the gateway also
# aliases Contact (NAT traversal) and recomputes Content-Length.
PROXY_HEADERS: Final = frozenset(
    {"via", "max-forwards", "record-route", "route", "contact", "content-length"}
)
STRIPPED: Final = HeaderRules(GatewaySettings(outside=PBX, inside=PBX, upstreams=()).strip_inbound)


def test_the_table_covers_all_49_messages_and_agrees_with_the_parser_tables() -> None:
    assert message_names() == NAMES
    assert len(NAMES) == 49
    for name in NAMES:
        first_line = load(name).split(b"\r\n", 1)[0]
        outcome = GATEWAY[name].datagram
        if first_line.startswith(b"SIP/"):
            assert outcome == DROP, name  # responses are never answered
        elif name in INVALID:
            assert outcome == answer(INVALID[name][2]), name
        elif APPLICATION.get(name) is not None:
            assert outcome == answer(APPLICATION[name] or 0), name
        else:
            assert name in VALID or name in APPLICATION, name
            assert outcome.forwarded == 1, name
            invite = first_line.startswith(b"INVITE ")
            assert outcome == (FORWARD_INVITE if invite else FORWARD), name


# -- checking what the gateway sent ------------------------------------------------------


def outcome_of(sends: Iterable[Send], source: Endpoint) -> Outcome:
    """The answers to ``source`` and the forwards to the PBX; nothing may go elsewhere."""
    answers: list[int] = []
    forwarded = 0
    for send in sends:
        if send.to == PBX:
            forwarded += 1
            continue
        assert send.to == source, f"sent to {send.to}, neither the source nor the PBX"
        response = parse_message(send.data, strict=False)
        assert isinstance(response, Response)
        answers.append(response.status)
    return Outcome(answers=tuple(answers), forwarded=forwarded)


def check_answer(request_bytes: bytes, send: Send) -> None:
    """A gateway answer: a response to that request (its Call-ID), readable by the phone."""
    response = parse_message(send.data, strict=False)
    assert isinstance(response, Response)
    request = parse_message(request_bytes, strict=False)
    assert response.call_id == request.call_id
    if response.status == 505:
        assert response.reason.startswith("Version Not Supported")  # RFC 3261 21.5.26
    if response.status == 420:
        # RFC 3261 8.2.2.3: Unsupported lists the extensions the proxy does not know.
        proxy_require = ", ".join(request.proxy_require) if isinstance(request, Request) else ""
        assert response.headers.get("unsupported") == proxy_require
        assert proxy_require


def kept_fields(message: Message) -> list[tuple[str, str]]:
    return [
        (field.key, field.value)
        for field in message.headers
        if field.key not in PROXY_HEADERS and not STRIPPED.matches(field.key)
    ]


def via_parts(message: Message) -> list[tuple[str, str, tuple[tuple[str, str | None], ...]]]:
    return [(via.transport, via.sent_by, via.params) for via in message.via]


def check_forwarded(
    original_bytes: bytes, data: bytes, source: Endpoint, inside: Endpoint = INSIDE
) -> None:
    """A request the gateway forwarded: strictly valid, one proxy hop on, same meaning."""
    original = parse_message(original_bytes)
    forwarded = parse_message(data)
    forwarded.validate()
    assert isinstance(original, Request)
    assert isinstance(forwarded, Request)
    assert (forwarded.method, forwarded.uri) == (original.method, original.uri)
    ours, client, *_ = forwarded.via
    assert ours.sent_by == inside.hostport
    assert (ours.branch or "").startswith(BRANCH_PREFIX)
    first = original.via[0]
    assert (client.transport, client.sent_by, client.branch) == (
        first.transport,
        first.sent_by,
        first.branch,
    )
    assert client.received == source.host  # RFC 3261 18.2.1
    assert via_parts(forwarded)[2:] == via_parts(original)[1:]
    hops = original.max_forwards
    assert forwarded.max_forwards == (70 if hops is None else hops - 1)  # 16.6 step 3
    assert len(forwarded.contact) == len(original.contact)
    for contact in forwarded.contact:
        assert isinstance(contact.uri, SipUri)
        assert (contact.uri.host, contact.uri.port) == (inside.host, inside.port)
    if original.method == "INVITE" and (original.to is None or original.to.tag is None):
        assert "swr=in" in forwarded.headers.values("record-route")[0]  # 16.6 step 4
    assert kept_fields(forwarded) == kept_fields(original)
    # A Route an outsider preloaded is not honoured: the PBX must not relay for it.
    assert forwarded.headers.values("route") == []
    assert forwarded.body == original.body
    assert forwarded.content_length == len(forwarded.body)


def torture_core(**overrides: object) -> GatewayCore:
    """The core as a proxy for every method: the RFC 4475 OPTIONS (badbranch, zeromf,
    ...) test the proxy's transaction matching and checks, so they are forwarded
    here; the gateway's own answer to OPTIONS has tests in test_core.py."""
    return core(answer_options=False, **overrides)


def malformed_sources(events: list[Inspection]) -> set[str]:
    return {
        event.source
        for inspection in events
        for event in inspection.events
        if event.rule.startswith("malformed.")
    }


# -- one datagram -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_datagram_is_answered_forwarded_or_dropped_as_the_readme_says(name: str) -> None:
    reports: list[Inspection] = []
    gateway = torture_core(report=reports.append)
    data = load(name)
    sends = gateway.receive(data, PHONE, NOW)
    assert outcome_of(sends, PHONE) == GATEWAY[name].datagram
    for send in sends:
        if send.to == PBX:
            check_forwarded(data, send.data, PHONE)
        else:
            check_answer(data, send)
    if name in INVALID:
        assert PHONE.host in malformed_sources(reports)  # "records a malformed-message event"


# -- one stream ----------------------------------------------------------------------------


class StreamRun(NamedTuple):
    outcome: Outcome
    sends: list[Send]
    framed: dict[str, bytes]  # Call-ID -> the request as framed, before the gateway changed it


def through_stream(gateway: GatewayCore, data: bytes, chunk: int) -> StreamRun:
    """``data`` arriving on one TCP connection in ``chunk``-byte reads, as server.py's
    ``_Stream.data_received`` handles it."""
    parser = StreamParser(strict=True, limits=gateway.limits)
    sends: list[Send] = []
    framed: dict[str, bytes] = {}
    closed = False
    fed = 0
    try:
        for start in range(0, len(data), chunk):
            fed = start + chunk
            parser.feed(data[start : start + chunk])
            while (event := parser.next_event()) is not None:
                if isinstance(event, KeepAlive):
                    continue
                framed[event.call_id or ""] = event.to_bytes()
                sends += gateway.receive_message(event, TCP_PHONE, NOW)
    except RemoteProtocolError as error:
        # As server.py: the bytes the parser still held go with the error.
        broken = data[:fed][-parser.buffered :] if parser.buffered else b""
        sends += gateway.stream_error(error, TCP_PHONE, NOW, broken)
        with contextlib.suppress(RemoteProtocolError):  # what the answers were made from
            framed[parse_message(broken, strict=False).call_id or ""] = broken
        closed = True  # RFC 3261 18.3: the framing is lost, server.py closes
    found = outcome_of(sends, TCP_PHONE)
    waiting = not closed and parser.buffered > 0
    return StreamRun(found._replace(closed=closed, waiting=waiting), sends, framed)


@pytest.mark.parametrize("chunk", [0, 1], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", list(GATEWAY))
def test_each_message_over_a_stream_is_framed_and_handled_as_the_readme_says(
    name: str, chunk: int
) -> None:
    reports: list[Inspection] = []
    gateway = torture_core(report=reports.append)
    data = load(name)
    run = through_stream(gateway, data, chunk or len(data))
    expected = GATEWAY[name].over("tcp")
    assert run.outcome == expected
    for send in run.sends:
        request = parse_message(send.data, strict=False)
        original = run.framed[request.call_id or ""]
        if send.to == PBX:
            check_forwarded(original, send.data, TCP_PHONE)
        else:
            check_answer(original, send)
    if name in INVALID and not expected.waiting and not GATEWAY[name].breaks_streams:
        assert TCP_PHONE.host in malformed_sources(reports)


@pytest.mark.parametrize("name", [name for name in sorted(INVALID) if GATEWAY[name].breaks_streams])
def test_an_invalid_message_that_breaks_a_stream_records_a_malformed_event(name: str) -> None:
    reports: list[Inspection] = []
    gateway = torture_core(report=reports.append)
    data = load(name)
    assert through_stream(gateway, data, len(data)).outcome.closed
    assert TCP_PHONE.host in malformed_sources(reports)  # "records a malformed-message event"


# -- the valid responses, in context ---------------------------------------------------------


def pbx_request_through(gateway: GatewayCore) -> str:
    """An OPTIONS from the PBX to the phone, through the gateway; the Via the gateway wrote."""
    request = (
        f"OPTIONS sip:100@{PHONE.hostport} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKpbx-torture;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:pbx@pbx.example>;tag=p1\r\nTo: <sip:100@pbx.example>\r\n"
        "Call-ID: torture-context@10.0.0.5\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    (send,) = gateway.receive(request, PBX, NOW)
    assert send.to == PHONE
    return parse_message(send.data).headers.values("via")[0]


@pytest.mark.parametrize("name", ["unreason", "noreason", "bcast"])
def test_valid_responses_are_forwarded_when_they_answer_a_request_of_the_pbx(name: str) -> None:
    gateway = torture_core()
    assert gateway.receive(load(name), PHONE, NOW) == []  # not for us: RFC 3261 18.1.2
    our_via = pbx_request_through(gateway)
    # The message as the phone would send it back: the RFC's bytes under our Via.
    status_line, rest = load(name).split(b"\r\n", 1)
    data = b"%s\r\nVia: %s\r\n%s" % (status_line, our_via.encode(), rest)
    (send,) = gateway.receive(data, PHONE, NOW + 1)
    # To the PBX, from the Via sealed in ours: never to a Via the sender wrote (bcast's
    # 255.255.255.255, RFC 4475 3.3.11).
    assert send.to == PBX
    original = parse_message(load(name))
    forwarded = parse_message(send.data)
    forwarded.validate()
    assert isinstance(original, Response)
    assert isinstance(forwarded, Response)
    assert (forwarded.status, forwarded.reason) == (original.status, original.reason)
    assert [via.raw for via in forwarded.via] == [
        "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKpbx-torture;rport"
    ]
    assert kept_fields(forwarded) == kept_fields(original)
    # A Route an outsider preloaded is not honoured: the PBX must not relay for it.
    assert forwarded.headers.values("route") == []
    assert forwarded.body == original.body


def test_badbranch_is_matched_the_rfc_2543_way() -> None:
    """Its branch is the bare magic cookie, no transaction identifier (RFC 4475 3.2.1):
    the Call-ID, CSeq, From and Via name the transaction (RFC 3261 17.2.3)."""
    gateway = torture_core()
    data = load("badbranch")
    (forwarded,) = gateway.receive(data, PHONE, NOW)
    (answer_sent,) = pbx_answers(gateway, forwarded, NOW + 0.1)
    # A retransmission is absorbed: the PBX's answer again, nothing forwarded.
    assert gateway.receive(data, PHONE, NOW + 0.5) == [answer_sent]
    # Another request with the same bare cookie is another transaction.
    other = data.replace(b"Call-ID: badbranch.", b"Call-ID: another.")
    (again,) = gateway.receive(other, PHONE._replace(host="81.2.69.143"), NOW + 1)
    assert again.to == PBX
    assert parse_message(again.data).via[0].branch != parse_message(forwarded.data).via[0].branch


# -- all 49 through one gateway --------------------------------------------------------------


def pbx_answers(gateway: GatewayCore, forwarded: Send, now: float) -> list[Send]:
    """The PBX refuses every request with 403, as Kamailio does a stranger's."""
    request = parse_message(forwarded.data)
    assert isinstance(request, Request)
    if request.method == "ACK":
        return []
    response = make_response(request, 403, to_tag="pbx")
    return gateway.receive(response.to_bytes(), PBX, now)


def test_all_49_in_turn_through_one_gateway_get_what_each_gets_alone() -> None:
    reports: list[Inspection] = []
    gateway = torture_core(report=reports.append)
    phones = {name: PHONE._replace(host=f"81.2.69.{10 + i}") for i, name in enumerate(NAMES)}
    relayed: dict[str, list[int]] = {name: [] for name in NAMES}  # the PBX's answers, by phone
    got: dict[str, Outcome] = {}
    for i, name in enumerate(NAMES):
        phone = phones[name]
        now = NOW + i
        sends = gateway.receive(load(name), phone, now)
        if name in RETRANSMISSIONS:
            first = RETRANSMISSIONS[name]
            # Answered again, to the first source (never to a second one: no reflection).
            assert [send.to for send in sends] == [phones[first]], name
            relayed[first] += [status_of(send) for send in sends]
            continue
        got[name] = outcome_of(sends, phone)
        for send in sends:
            if send.to == PBX:
                for back in pbx_answers(gateway, send, now + 0.5):
                    assert back.to == phone, name
                    relayed[name].append(status_of(back))
    expected = {name: GATEWAY[name].datagram for name in NAMES if name not in RETRANSMISSIONS}
    assert got == expected
    for name, statuses in relayed.items():
        forwards = 0 if name in RETRANSMISSIONS else expected[name].forwarded
        again = sum(1 for later, first in RETRANSMISSIONS.items() if first == name)
        assert statuses == [403] * (forwards + again), name
    assert {phones[name].host for name in INVALID} <= malformed_sources(reports)


def status_of(send: Send) -> int:
    response = parse_message(send.data)
    assert isinstance(response, Response)
    return response.status


# -- the real gateway process ----------------------------------------------------------------

QUIET: Final = 0.4  # seconds without a datagram after which a message counts as unanswered
CLONE_NEWNET: Final = 0x40000000  # <sched.h>
_namespaces = itertools.count()


def enter_network_namespace(path: Path) -> None:
    """Move the calling thread, and only it, into the network namespace at ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)  # os.setns arrives with Python 3.12
    with path.open("rb") as handle:
        if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")


def in_loopback_namespace(body: Callable[[], None]) -> None:
    """Run ``body`` in a thread inside a new network namespace that has only ``lo``.

    The sockets that thread opens and the processes it starts (Kamailio, the
    gateway, dumpcap) live in the namespace, where any address but loopback
    is unreachable.
    """
    ip = require_tool("ip", "apt-get install iproute2")
    if os.geteuid() != 0:
        pytest.fail("this test runs its peers in a network namespace: run it as root (CI does)")
    name = f"swtorture{os.getpid()}n{next(_namespaces)}"
    subprocess.run([ip, "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        subprocess.run(
            [ip, "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True, timeout=30
        )
        failures: list[BaseException] = []

        def run() -> None:
            try:
                enter_network_namespace(Path("/run/netns") / name)
                body()
            except BaseException as failure:
                failures.append(failure)

        thread = threading.Thread(target=run, name=f"in {name}")
        thread.start()
        thread.join()
        if failures:
            raise failures[0]
    finally:
        subprocess.run([ip, "netns", "delete", name], check=False, capture_output=True, timeout=30)


class Phone:
    """The sender of one torture message: a loopback address and a socket of its own."""

    def __init__(self, transport: str, host: str, port: int) -> None:
        self.transport = transport
        self.host = host
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind((host, 0))
        self.gateway = ("127.0.0.1", port)
        if transport != "udp":
            self.sock.settimeout(2.0)
            self.sock.connect(self.gateway)
        self.parser = StreamParser(strict=False)
        self.answers: list[Response] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.gateway)
        else:
            self.sock.sendall(data)

    def collect(self, quiet: float, *, until_final: bool) -> None:
        """Read answers until a final one (when ``until_final``), the gateway closing
        the connection, or ``quiet`` seconds without anything."""
        while not self.closed:
            self.sock.settimeout(quiet)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return
            except ConnectionResetError:
                data = b""
            if self.transport == "udp":
                messages: list[Message] = [parse_message(data, strict=False)]
            else:
                self.closed = not data
                messages = self._framed(data)
            for message in messages:
                assert isinstance(message, Response), message.start_line()
                self.answers.append(message)
            if until_final and any(response.status >= 200 for response in self.answers):
                return

    def _framed(self, data: bytes) -> list[Message]:
        self.parser.feed(data)
        messages = []
        while (event := self.parser.next_event()) is not None:
            if not isinstance(event, KeepAlive):
                messages.append(event)
        return messages

    @property
    def statuses(self) -> list[int]:
        return [response.status for response in self.answers]

    def close(self) -> None:
        self.sock.close()


def options_round_trip(transport: str, port: int) -> tuple[int, float]:
    """A plain OPTIONS through the gateway to Kamailio (sip:sipwarden.test is its own
    domain): the final status and the seconds until it came back."""
    phone = Phone(transport, "127.0.0.1", port)
    try:
        local = phone.sock.getsockname()[1]
        request = (
            "OPTIONS sip:sipwarden.test SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:{local}"
            f";branch=z9hG4bK-alive{local};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alive@sipwarden.test>;tag=alive\r\n"
            f"To: <sip:sipwarden.test>\r\nCall-ID: alive-{local}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        started = time.monotonic()
        phone.send(request)
        phone.collect(2.0, until_final=True)
        elapsed = time.monotonic() - started
        finals = [status for status in phone.statuses if status >= 200]
        return (finals[0] if finals else 0), elapsed
    finally:
        phone.close()


def torture_gateway(tmp_path: Path, port: int, pbx: KamailioRegistrar) -> LiveMonitor:
    return LiveMonitor(
        tmp_path / "gateway",
        ports=[port],
        source=(),
        command="gateway",
        duration=120.0,  # a bound should the test hang; a run takes seconds
        extra_config=(
            f'\n[gateway]\nlisten = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]\n'
            f'upstreams = ["udp:{pbx.host}:{pbx.port}"]\n'
            f'secret_file = "{tmp_path / "gateway.key"}"\n'
            # Loopback is a bogon: the phones of this test come from it.
            "bogon_check = false\n"
            # One worker: one transaction memory, so RETRANSMISSIONS meet their first.
            "workers = 1\n"
            # The OPTIONS afterwards must go through to Kamailio, not be answered here.
            "answer_options = false\n"
        ),
    )


class LiveRun(NamedTuple):
    phones: dict[str, Phone]
    alive: tuple[int, float]  # the OPTIONS afterwards: status and round trip
    inside: list[SipPacket]  # the gateway's leg to Kamailio
    gateway: LiveMonitor
    face: Endpoint  # the gateway's inside face
    pbx_port: int


def run_all_49(tmp_path: Path, transport: str) -> LiveRun:
    port = free_port()
    phones: dict[str, Phone] = {}
    with (
        KamailioRegistrar(tmp_path / "kamailio", BENIGN_USERS) as pbx,
        torture_gateway(tmp_path, port, pbx) as gateway,
    ):
        with capture(tmp_path, bpf=f"udp port {pbx.port}", name="inside.pcap") as inside:
            try:
                for i, name in enumerate(NAMES):
                    phone = phones[name] = Phone(transport, f"127.0.0.{10 + i}", port)
                    expected = GATEWAY[name].over(transport)
                    phone.send(load(name))
                    # Waiting for each answer keeps the calls apart, as separate phones'
                    # would be: all 49 at once would be a flood of INVITEs from one account.
                    phone.collect(QUIET, until_final=not expected.closed)
                alive = options_round_trip(transport, port)
                time.sleep(0.2)
                for phone in phones.values():  # anything late or extra
                    phone.collect(0.01, until_final=False)
            finally:
                for phone in phones.values():
                    phone.close()
        packets = read_sip(inside.path)
    face = Endpoint("udp", "127.0.0.1", port)
    return LiveRun(phones, alive, packets, gateway, face, pbx.port)


def reached_kamailio(run: LiveRun) -> dict[str, list[bytes]]:
    """The requests the gateway sent to Kamailio, by the phone they came from (the
    ``received`` the gateway stamped on the phone's Via, RFC 3261 18.2.1)."""
    by_host = {phone.host: name for name, phone in run.phones.items()}
    found: dict[str, list[bytes]] = {}
    for packet in run.inside:
        message = packet.message
        if packet.dport != run.pbx_port or not isinstance(message, Request):
            continue
        vias = message.via
        if len(vias) < 2:
            continue  # a health probe of the gateway's own: one Via
        name = by_host.get(vias[1].received or "")
        if name is not None:
            found.setdefault(name, []).append(packet.raw)
    return found


def originals(data: bytes) -> dict[str, bytes]:
    """The requests in a message file by Call-ID: the datagram's one, and each one a
    stream frames (dblreq holds two)."""
    found = {parse_message(data, strict=False).call_id or "": data}
    parser = StreamParser(strict=True)
    try:
        parser.feed(data)
        while (event := parser.next_event()) is not None:
            if isinstance(event, Request):
                found[event.call_id or ""] = event.to_bytes()
    except RemoteProtocolError:
        pass  # the rest is not framable: the datagram's reading stands
    return found


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_the_real_gateway_answers_all_49_as_the_readme_says_and_keeps_answering(
    tmp_path: Path, transport: str
) -> None:
    runs: list[LiveRun] = []
    in_loopback_namespace(lambda: runs.append(run_all_49(tmp_path, transport)))
    (run,) = runs
    gateway = run.gateway
    status, elapsed = run.alive
    assert status == 200, gateway.output()
    assert elapsed < 0.1, f"the OPTIONS afterwards took {elapsed * 1000:.0f} ms"
    assert gateway.returncode == 0, gateway.output()  # alive until stopped, then stopped cleanly
    troubles = [
        line
        for line in gateway.problems()
        if "Traceback" in line or " ERROR " in line or " CRITICAL " in line
    ]
    assert troubles == [], gateway.output()

    at_kamailio = reached_kamailio(run)
    got: dict[str, Outcome] = {}
    wanted: dict[str, Outcome] = {}
    for name in NAMES:
        phone = run.phones[name]
        expect = GATEWAY[name]
        expected = DROP if name in RETRANSMISSIONS else expect.over(transport)
        forwarded = at_kamailio.get(name, [])
        # The gateway's own answers come first; after a forward, Kamailio's follow.
        own = phone.statuses[: len(expected.answers)] if forwarded else phone.statuses
        got[name] = Outcome(tuple(own), len(forwarded), phone.closed)
        wanted[name] = expected._replace(waiting=False)
        sent = originals(load(name)) if forwarded else {}
        for raw in forwarded:
            call_id = parse_message(raw).call_id or ""
            source = Endpoint(transport, phone.host, 0)
            check_forwarded(sent[call_id], raw, source, inside=run.face)
    assert got == wanted
    for later, first in RETRANSMISSIONS.items():
        # RFC 3261 17.2.3: the first source got its final answer a second time.
        finals = [status for status in run.phones[first].statuses if status >= 200]
        assert len(finals) == 2, (first, later, finals)
        assert finals[0] == finals[1], (first, later, finals)
    # "records a malformed-message event" (the stream still waiting for the rest has
    # nothing to record yet)
    malformed = {
        arrival.record.get("source")
        for arrival in gateway.events
        if arrival.rule.startswith("malformed.")
    }
    for name in INVALID:
        expect = GATEWAY[name]
        if transport != "udp" and expect.over(transport).waiting:
            continue  # nothing complete to record yet
        assert run.phones[name].host in malformed, name
