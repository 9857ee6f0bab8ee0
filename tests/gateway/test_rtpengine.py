"""Media anchoring through rtpengine: the ng commands, the client, and a real rtpengine.

The proof the gateway issue asks for: a call's SDP on the outside leg carries only
rtpengine's outside address (never the PBX's), and RTP flows through rtpengine both
ways, with the phone seeing only rtpengine's outside address as the source. Each test
against the real daemon uses the ``rtpengine_daemon`` fixture (tests/peers/rtpengine.py):
``internal`` interface 127.0.0.1 (the PBX leg), ``external`` 127.0.0.2 (the outside leg).
The "PBX" is a UDP socket on 127.0.0.1 whose SDP also names a private 10.0.0.5 in o=,
a media-level c= and an ICE candidate; the "phone" is a UDP socket on 127.0.0.3.

Failure paths run against fake ng servers on loopback: nobody listening, silence, a
lost datagram, garbage and refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import pytest

from peers.rtpengine import Rtpengine
from sipwarden.config import GatewayMediaConfig
from sipwarden.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from sipwarden.gateway.bencode import BencodeError, decode, encode
from sipwarden.gateway.rtpengine import (
    CONFIG_KEY,
    Leg,
    MediaError,
    MediaPolicy,
    MediaRejectedError,
    NgProtocolError,
    RtpengineAddress,
    RtpengineClient,
    answer_command,
    delete_command,
    encode_request,
    offer_command,
    parse_reply,
    parse_rtpengine_address,
    ping_command,
    query_command,
    split_cookie,
)
from sipwarden.sip.sdp import parse_sdp
from support import free_port

T = TypeVar("T")

PBX_PRIVATE_IP = "10.0.0.5"
PBX_IP = "127.0.0.1"
PHONE_IP = "127.0.0.3"
RTP_PACKETS = 50  # per direction and call


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- SDP and RTP helpers ------------------------------------------------------------------


def pbx_sdp(port: int) -> bytes:
    """What a PBX behind the gateway writes: its private address in every place it can."""
    return (
        f"v=0\r\n"
        f"o=pbx 4711 1 IN IP4 {PBX_PRIVATE_IP}\r\n"
        f"s=-\r\n"
        f"c=IN IP4 {PBX_IP}\r\n"
        f"t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\n"
        f"c=IN IP4 {PBX_IP}\r\n"
        f"a=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\n"
        f"a=rtcp:{port + 1} IN IP4 {PBX_PRIVATE_IP}\r\n"
        f"a=candidate:1 1 UDP 2130706431 {PBX_PRIVATE_IP} {port} typ host\r\n"
        f"a=sendrecv\r\n"
    ).encode()


def phone_sdp(port: int) -> bytes:
    return (
        f"v=0\r\n"
        f"o=phone 99 1 IN IP4 {PHONE_IP}\r\n"
        f"s=-\r\n"
        f"c=IN IP4 {PHONE_IP}\r\n"
        f"t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        f"a=rtpmap:0 PCMU/8000\r\n"
        f"a=sendrecv\r\n"
    ).encode()


def media_target(sdp: bytes) -> tuple[str, int]:
    """Where the SDP says to send RTP (parsed strictly by sipwarden's own SDP parser)."""
    sd = parse_sdp(sdp)
    media = sd.media[0]
    connection = media.effective_connection
    assert connection is not None
    return connection.address, media.port


def assert_shows_only(sdp: bytes, address: str, hidden: list[str]) -> None:
    """``sdp`` names ``address`` in o= and c= and none of ``hidden`` anywhere."""
    sd = parse_sdp(sdp)
    assert sd.origin is not None
    assert sd.origin.address == address
    assert sd.connection is not None
    assert sd.connection.address == address
    for media in sd.media:
        effective = media.effective_connection
        assert effective is not None
        assert effective.address == address
        assert not media.has_attribute("candidate")
    text = sdp.decode("latin-1")
    for secret in hidden:
        assert secret not in text, f"{secret} leaks in:\n{text}"


def rtp_packet(seq: int, ssrc: int) -> bytes:
    """RFC 3550 5.1: V=2, no padding/extension/CSRC, PT 0 (PCMU), 20 ms of silence."""
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + b"\xff" * 160


def udp_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


async def relay(
    sender: socket.socket,
    target: tuple[str, int],
    receiver: socket.socket,
    *,
    ssrc: int,
    count: int,
    wait: float = 1.0,
) -> list[tuple[bytes, tuple[str, int]]]:
    """Send ``count`` RTP packets to ``target``; return what ``receiver`` got (and from where)."""
    loop = asyncio.get_running_loop()
    received: list[tuple[bytes, tuple[str, int]]] = []
    for seq in range(count):
        await loop.sock_sendto(sender, rtp_packet(seq, ssrc), target)
        with contextlib.suppress(TimeoutError):
            data, source = await asyncio.wait_for(loop.sock_recvfrom(receiver, 2048), wait)
            received.append((data, source))
    return received


def assert_relayed(
    received: list[tuple[bytes, tuple[str, int]]], *, ssrc: int, source: tuple[str, int]
) -> None:
    """Every packet arrived, in order, unchanged, from rtpengine's address only."""
    assert [data for data, _ in received] == [rtp_packet(seq, ssrc) for seq in range(RTP_PACKETS)]
    assert {src for _, src in received} == {source}


# --- a real rtpengine: the proof ---------------------------------------------------------------


@dataclass
class Call:
    """One anchored call: what each side was told, and its sockets."""

    call_id: str
    from_tag: str  # the caller's tag
    outside_sdp: bytes  # the SDP the outside leg (the phone) received
    pbx_side_sdp: bytes  # the SDP the PBX received
    phone: socket.socket
    pbx: socket.socket


async def anchored_call(client: RtpengineClient, caller: Leg, call_id: str) -> Call:
    """Offer and answer one call through rtpengine; ``caller`` is the leg that offers."""
    phone, pbx = udp_socket(PHONE_IP), udp_socket(PBX_IP)
    phone_body, pbx_body = phone_sdp(phone.getsockname()[1]), pbx_sdp(pbx.getsockname()[1])
    if caller is Leg.PBX:  # the PBX calls out: its offer goes to the outside
        from_tag = "pbx-tag"
        outside = await client.offer(
            call_id=call_id, from_tag=from_tag, sdp=pbx_body, toward=Leg.OUTSIDE
        )
        inside = await client.answer(
            call_id=call_id, from_tag=from_tag, to_tag="phone-tag", sdp=phone_body
        )
    else:  # a phone calls in: the PBX's answer goes to the outside
        from_tag = "phone-tag"
        inside = await client.offer(
            call_id=call_id, from_tag=from_tag, sdp=phone_body, toward=Leg.PBX
        )
        outside = await client.answer(
            call_id=call_id, from_tag=from_tag, to_tag="pbx-tag", sdp=pbx_body
        )
    return Call(
        call_id=call_id,
        from_tag=from_tag,
        outside_sdp=outside,
        pbx_side_sdp=inside,
        phone=phone,
        pbx=pbx,
    )


def test_ping(rtpengine_daemon: Rtpengine) -> None:
    async def scenario() -> dict[str, int]:
        async with RtpengineClient(rtpengine_daemon.ng_address) as client:
            await client.ping()
            return client.stats

    stats = run(scenario())
    assert stats["sent"] == 1
    assert stats["replies"] == 1
    assert stats["retransmitted"] == 0


@pytest.mark.parametrize("caller", [Leg.PBX, Leg.OUTSIDE], ids=["pbx-calls-out", "phone-calls-in"])
def test_outside_sees_only_rtpengine_and_rtp_flows_both_ways(
    rtpengine_daemon: Rtpengine, caller: Leg
) -> None:
    async def scenario() -> None:
        async with RtpengineClient(rtpengine_daemon.ng_address, timeout=2.0) as client:
            call = await anchored_call(client, caller, f"call-{caller.value}@test")
            with call.phone, call.pbx:
                pbx_port = call.pbx.getsockname()[1]
                phone_port = call.phone.getsockname()[1]

                # Signalling: each side sees rtpengine's address facing it, nothing else.
                assert_shows_only(
                    call.outside_sdp,
                    rtpengine_daemon.external,
                    hidden=[PBX_PRIVATE_IP, PBX_IP, f" {pbx_port} ", f":{pbx_port + 1}"],
                )
                assert_shows_only(call.pbx_side_sdp, rtpengine_daemon.internal, hidden=[PHONE_IP])
                to_rtpengine_outside = media_target(call.outside_sdp)
                to_rtpengine_inside = media_target(call.pbx_side_sdp)
                for _, port in (to_rtpengine_outside, to_rtpengine_inside):
                    assert rtpengine_daemon.port_min <= port <= rtpengine_daemon.port_max
                assert to_rtpengine_outside[1] not in (pbx_port, phone_port)

                # Media: phone -> rtpengine outside -> PBX, and back.
                inbound = await relay(
                    call.phone, to_rtpengine_outside, call.pbx, ssrc=0x1111, count=RTP_PACKETS
                )
                outbound = await relay(
                    call.pbx, to_rtpengine_inside, call.phone, ssrc=0x2222, count=RTP_PACKETS
                )
                assert len(inbound) == RTP_PACKETS
                assert len(outbound) == RTP_PACKETS
                # The PBX hears rtpengine's inside port; the phone only ever hears
                # rtpengine's outside address, never the PBX's.
                assert_relayed(inbound, ssrc=0x1111, source=to_rtpengine_inside)
                assert_relayed(outbound, ssrc=0x2222, source=to_rtpengine_outside)

                # rtpengine counted the same packets.
                stats = (await client.query(call_id=call.call_id)).fields
                totals = stats["totals"]
                assert isinstance(totals, dict)
                assert totals[b"RTP"] == {
                    b"packets": 2 * RTP_PACKETS,
                    b"bytes": 2 * RTP_PACKETS * len(rtp_packet(0, 0)),
                    b"errors": 0,
                }

                # delete: the call is gone and its ports relay nothing more.
                await client.delete(call_id=call.call_id, from_tag=call.from_tag)
                with pytest.raises(MediaRejectedError) as gone:
                    await client.query(call_id=call.call_id)
                assert gone.value.error_reason == "Unknown call-id"
                after = await relay(
                    call.phone, to_rtpengine_outside, call.pbx, ssrc=0x3333, count=5, wait=0.2
                )
                assert after == []
            assert client.stats["retransmitted"] == 0
            assert client.stats["malformed"] == 0

    run(scenario())


def test_srtp_towards_the_outside_when_the_policy_asks(rtpengine_daemon: Rtpengine) -> None:
    policy = MediaPolicy(outside_transport="RTP/SAVP", pbx_transport="RTP/AVP")

    async def scenario() -> bytes:
        async with RtpengineClient(rtpengine_daemon.ng_address, policy=policy) as client:
            outside = await client.offer(
                call_id="srtp@test", from_tag="pbx-tag", sdp=pbx_sdp(4000), toward=Leg.OUTSIDE
            )
            await client.delete(call_id="srtp@test", from_tag="pbx-tag")
            return outside

    outside = run(scenario())
    media = parse_sdp(outside).media[0]
    assert media.proto == "RTP/SAVP"
    assert media.crypto  # SDES keys rtpengine made up for the outside leg
    assert_shows_only(outside, rtpengine_daemon.external, hidden=[PBX_PRIVATE_IP, PBX_IP])


def test_rtpengine_refusal_is_a_media_rejected_error(rtpengine_daemon: Rtpengine) -> None:
    async def scenario() -> None:
        async with RtpengineClient(rtpengine_daemon.ng_address) as client:
            with pytest.raises(MediaRejectedError) as caught:
                await client.offer(call_id="bad@test", from_tag="t", sdp=b"not sdp", toward=Leg.PBX)
            assert caught.value.error_reason == "Failed to parse SDP"
            assert rtpengine_daemon.ng_address in str(caught.value)
            assert caught.value.command == "offer"
            # A BYE for a call rtpengine does not know (a retransmission) is fine.
            reply = await client.delete(call_id="never@test", from_tag="t")
            assert reply.ok
            assert reply.warning

    run(scenario())


# --- failure paths: nobody there, silence, loss, garbage ----------------------------------------


class FakeNg(asyncio.DatagramProtocol):
    """A UDP server that records requests and answers what ``respond`` returns (or nothing)."""

    def __init__(self, respond: Callable[[bytes, int], bytes | None] | None = None) -> None:
        self.respond = respond or (lambda _request, _n: None)
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(data)
        reply = self.respond(data, len(self.received))
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def cookies(self) -> list[bytes]:
        return [data.partition(b" ")[0] for data in self.received]


@contextlib.asynccontextmanager
async def fake_ng(
    respond: Callable[[bytes, int], bytes | None] | FakeNg,
) -> AsyncIterator[tuple[FakeNg, str]]:
    """A started fake ng server on 127.0.0.1 and its address in the configuration's form."""
    server = respond if isinstance(respond, FakeNg) else FakeNg(respond)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    try:
        yield server, f"udp:127.0.0.1:{transport.get_extra_info('sockname')[1]}"
    finally:
        transport.close()


def cookie_of(request: bytes) -> bytes:
    return request.partition(b" ")[0]


def test_nobody_listening_fails_within_the_timeout() -> None:
    address = f"udp:127.0.0.1:{free_port(tcp=False)}"

    async def scenario() -> tuple[MediaError, float]:
        async with RtpengineClient(address, timeout=0.6, retransmit_interval=0.1) as client:
            started = time.monotonic()
            with pytest.raises(MediaError) as caught:
                await client.ping()
            return caught.value, time.monotonic() - started

    error, elapsed = run(scenario())
    assert 0.5 <= elapsed < 1.2
    assert error.address == address
    assert f"rtpengine at {address}: ping: no reply within 0.6 s" in str(error)
    assert "refused" in str(error).lower()  # ICMP port unreachable, reported as such


def test_silence_retransmits_with_the_same_cookie_then_fails() -> None:
    async def scenario() -> tuple[FakeNg, MediaError]:
        async with (
            fake_ng(lambda _request, _n: None) as (server, address),
            RtpengineClient(address, timeout=0.5, retransmit_interval=0.05) as client,
        ):
            with pytest.raises(MediaError) as caught:
                await client.offer(call_id="c", from_tag="f", sdp=b"v=0", toward=Leg.PBX)
            return server, caught.value

    server, error = run(scenario())
    assert len(server.received) >= 3  # 0.05 + 0.1 + 0.2 ... within 0.5 s
    assert len(set(server.received)) == 1  # the very same datagram: rtpengine dedups by cookie
    assert "no reply within 0.5 s" in str(error)


def test_a_lost_request_is_retransmitted_and_answered() -> None:
    def drop_first(request: bytes, n: int) -> bytes | None:
        return None if n == 1 else cookie_of(request) + b" d6:result4:ponge"

    async def scenario() -> tuple[FakeNg, dict[str, int]]:
        async with (
            fake_ng(drop_first) as (server, address),
            RtpengineClient(address, timeout=2.0, retransmit_interval=0.05) as client,
        ):
            await client.ping()
            return server, client.stats

    server, stats = run(scenario())
    assert len(server.received) == 2
    assert server.cookies()[0] == server.cookies()[1]
    assert stats["retransmitted"] == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"d6:result", "document ends inside a"),  # truncated bencode
        (b"le", "reply is not a dictionary"),
        (b"d4:spam4:eggse", "reply has no 'result' string"),
        (b"d6:resulti1ee", "reply has no 'result' string"),
        (b"d6:result2:oke", "reply has no sdp string"),  # an offer reply without SDP
        (b"d6:result2:ok3:sdp0:e", "reply has no sdp string"),
        (b"d6:result2:ok3:sdpi1ee", "reply has no sdp string"),
        (b"i1ei2e", "bytes after the end of the value"),
    ],
)
def test_a_malformed_reply_fails_its_request_at_once(body: bytes, expected: str) -> None:
    async def scenario() -> tuple[MediaError, float, dict[str, int]]:
        async with (
            fake_ng(lambda request, _n: cookie_of(request) + b" " + body) as (_, address),
            RtpengineClient(address, timeout=5.0) as client,
        ):
            started = time.monotonic()
            with pytest.raises(MediaError) as caught:
                await client.offer(call_id="c", from_tag="f", sdp=b"v=0", toward=Leg.PBX)
            return caught.value, time.monotonic() - started, client.stats

    error, elapsed, _stats = run(scenario())
    assert type(error) is MediaError
    assert elapsed < 1.0  # no waiting for the 5 s timeout
    assert expected in str(error)
    assert error.command == "offer"
    assert str(error).startswith("rtpengine at udp:127.0.0.1:")


@pytest.mark.parametrize(
    "garbage",
    [b"garbage", b"\n", b" d6:result4:ponge", b"\x00\xff" * 40, b"x" * 65 + b" d6:result4:ponge"],
    ids=["no-space", "newline", "empty-cookie", "binary", "cookie-too-long"],
)
def test_garbage_without_a_cookie_is_counted_and_named_at_the_timeout(garbage: bytes) -> None:
    async def scenario() -> tuple[MediaError, dict[str, int]]:
        async with (
            fake_ng(lambda _request, _n: garbage) as (_, address),
            RtpengineClient(address, timeout=0.3, retransmit_interval=0.1) as client,
        ):
            with pytest.raises(MediaError) as caught:
                await client.ping()
            return caught.value, client.stats

    error, stats = run(scenario())
    assert stats["malformed"] >= 1
    assert "no reply within 0.3 s" in str(error)
    assert "last problem: malformed reply" in str(error)
    assert "rule: ng-cookie" in str(error)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"d6:result5:error12:error-reason15:Unknown call-ide", "Unknown call-id"),
        (b"d6:result5:errore", "result 'error'"),
        (b"d6:result10:load limite", "result 'load limit'"),
    ],
)
def test_an_error_result_is_media_rejected(body: bytes, reason: str) -> None:
    async def scenario() -> MediaRejectedError:
        async with (
            fake_ng(lambda request, _n: cookie_of(request) + b" " + body) as (_, address),
            RtpengineClient(address) as client,
        ):
            with pytest.raises(MediaRejectedError) as caught:
                await client.query(call_id="c")
            return caught.value

    error = run(scenario())
    assert error.error_reason == reason
    assert error.command == "query"


class BackwardsNg(FakeNg):
    """Holds requests until ``hold`` are in, then answers them in reverse order, after a
    reply to a cookie nobody sent. Each answer's ``sdp`` is its request's call-id."""

    def __init__(self, hold: int) -> None:
        super().__init__()
        self.hold = hold

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(data)
        if len(self.received) < self.hold:
            return
        assert self.transport is not None
        self.transport.sendto(b"nobody_1 d6:result4:ponge", addr)
        for request in reversed(self.received):
            cookie, _, body = request.partition(b" ")
            command = decode(body)
            assert isinstance(command, dict)
            reply = encode({"result": "ok", "sdp": command[b"call-id"]})
            self.transport.sendto(cookie + b" " + reply, addr)


def test_replies_are_matched_to_requests_by_cookie() -> None:
    async def scenario() -> tuple[list[bytes], dict[str, int]]:
        async with (
            fake_ng(BackwardsNg(hold=5)) as (_, address),
            RtpengineClient(address, timeout=2.0, retransmit_interval=1.0) as client,
        ):
            answers = await asyncio.gather(
                *(
                    client.offer(call_id=f"call-{i}", from_tag="f", sdp=b"v=0", toward=Leg.PBX)
                    for i in range(5)
                )
            )
            return answers, client.stats

    answers, stats = run(scenario())
    assert answers == [f"call-{i}".encode() for i in range(5)]
    assert stats["stale"] == 1
    assert stats["replies"] == 5
    assert stats["retransmitted"] == 0


def test_requests_in_flight_are_bounded() -> None:
    async def scenario() -> None:
        async with (
            fake_ng(lambda _request, _n: None) as (_, address),
            RtpengineClient(address, timeout=0.3, max_pending=1) as client,
        ):
            first = asyncio.ensure_future(client.ping())
            await asyncio.sleep(0)
            with pytest.raises(MediaError, match="1 requests in flight"):
                await client.ping()
            with pytest.raises(MediaError, match="no reply"):
                await first

    run(scenario())


def test_close_fails_requests_in_flight_and_unstarted_clients_refuse() -> None:
    async def scenario() -> None:
        async with fake_ng(lambda _request, _n: None) as (_, address):
            client = await RtpengineClient(address, timeout=5.0).start()
            pending = asyncio.ensure_future(client.ping())
            await asyncio.sleep(0.01)
            await client.close()
            with pytest.raises(MediaError, match="closed"):
                await pending
            with pytest.raises(MediaError, match="not started"):
                await client.ping()

    run(scenario())


# --- sans-IO: commands, wire format, configuration --------------------------------------------


def test_the_documented_ping_on_the_wire() -> None:
    # ng protocol documentation, first section: "5323_1 d7:command4:pinge".
    assert encode_request("5323_1", ping_command()) == b"5323_1 d7:command4:pinge"
    reply = parse_reply(b"5323_1 d6:result4:ponge")
    assert (reply.cookie, reply.result, reply.ok) == ("5323_1", "pong", True)


def test_offer_towards_the_outside() -> None:
    command = offer_command(call_id="c@h", from_tag="ft", sdp="v=0\r\n", toward=Leg.OUTSIDE)
    assert command == {
        "command": "offer",
        "call-id": "c@h",
        "from-tag": "ft",
        "sdp": b"v=0\r\n",
        "direction": ["internal", "external"],  # from the PBX's side to the outside
        "replace": ["origin", "session-connection"],
        "ICE": "remove",
        "flags": ["strict-source"],
    }


def test_offer_towards_the_pbx_with_every_option() -> None:
    policy = MediaPolicy(
        outside_interface="pub",
        pbx_interface="priv",
        strict_source=False,
        pbx_transport="RTP/AVP",
    )
    command = offer_command(
        call_id="c",
        from_tag="ft",
        to_tag="tt",
        via_branch="z9hG4bK1",
        sdp=b"v=0",
        toward=Leg.PBX,
        policy=policy,
    )
    assert command["direction"] == ["pub", "priv"]
    assert command["transport-protocol"] == "RTP/AVP"
    assert command["to-tag"] == "tt"
    assert command["via-branch"] == "z9hG4bK1"
    assert "flags" not in command


def test_answer_delete_and_query_commands() -> None:
    answer = answer_command(call_id="c", from_tag="ft", to_tag="tt", sdp=b"v=0")
    assert answer["command"] == "answer"
    assert answer["to-tag"] == "tt"
    assert "direction" not in answer  # "It doesn't make sense to include the direction key"
    assert answer["replace"] == ["origin", "session-connection"]
    assert delete_command(call_id="c", from_tag="ft") == {
        "command": "delete",
        "call-id": "c",
        "from-tag": "ft",
        "delete-delay": 0,
    }
    assert "delete-delay" not in delete_command(call_id="c", from_tag="ft", delete_delay=None)
    assert delete_command(call_id="c", from_tag="f", to_tag="t")["to-tag"] == "t"
    assert query_command(call_id="c") == {"command": "query", "call-id": "c"}


@pytest.mark.parametrize(
    "build",
    [
        lambda: offer_command(call_id="", from_tag="f", sdp=b"v=0", toward=Leg.PBX),
        lambda: offer_command(call_id="c", from_tag="f\r\n", sdp=b"v=0", toward=Leg.PBX),
        lambda: offer_command(call_id="c", from_tag="f", sdp=b"", toward=Leg.PBX),
        lambda: answer_command(call_id="c", from_tag="f", to_tag="", sdp=b"v=0"),
        lambda: delete_command(call_id="c", from_tag="f", delete_delay=-1),
        lambda: MediaPolicy(outside_transport="UDP/TLS/RTP/SAVPF"),
        lambda: MediaPolicy(pbx_interface="two words"),
        lambda: encode_request("has space", ping_command()),
        lambda: encode_request("", ping_command()),
        lambda: encode_request("x" * 65, ping_command()),
        lambda: encode_request("ok", {"no": "command"}),
    ],
)
def test_misuse_is_a_local_protocol_error(build: Callable[[], object]) -> None:
    with pytest.raises(LocalProtocolError):
        build()


@pytest.mark.parametrize(
    ("datagram", "error", "rule", "offset"),
    [
        (b"nocookie", NgProtocolError, "ng-cookie", 0),
        (b" d6:result2:oke", NgProtocolError, "ng-cookie", 0),
        (b"ab\x01 d6:result2:oke", NgProtocolError, "ng-cookie", 0),
        (b"ab le", NgProtocolError, "ng-reply-dict", 3),
        (b"ab de", NgProtocolError, "ng-reply-result", 3),
        (b"ab d6:result0:e", NgProtocolError, "ng-reply-result", 3),
        (b"ab d6:result", BencodeError, "truncated", 12),
        (b"ab d1:ai1e1:ai2ee", BencodeError, "dict-duplicate-key", 10),
    ],
)
def test_malformed_replies_name_rule_and_datagram_offset(
    datagram: bytes, error: type[RemoteProtocolError], rule: str, offset: int
) -> None:
    with pytest.raises(error) as caught:
        parse_reply(datagram)
    assert caught.value.rule == rule
    assert caught.value.offset == offset


def test_reply_fields_warning_and_sdp() -> None:
    reply = parse_reply(b"k_1 d7:warning3:hmm6:result2:ok3:sdp3:v=0e")
    assert reply.ok
    assert reply.warning == "hmm"
    assert reply.error_reason is None
    assert reply.sdp == b"v=0"
    assert split_cookie(b"k_1 rest") == ("k_1", b"rest")
    with pytest.raises(NgProtocolError):
        _ = parse_reply(b"k d6:result2:oke").sdp


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("udp:127.0.0.1:2223", RtpengineAddress("127.0.0.1", 2223)),
        ("udp:[::1]:2223", RtpengineAddress("::1", 2223)),
        ("udp:[0:0::1]:1", RtpengineAddress("::1", 1)),
        ("udp:10.0.0.1:65535", RtpengineAddress("10.0.0.1", 65535)),
    ],
)
def test_parse_rtpengine_address(value: str, expected: RtpengineAddress) -> None:
    assert parse_rtpengine_address(value) == expected
    assert parse_rtpengine_address(str(expected)) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "127.0.0.1:2223",
        "tcp:127.0.0.1:2223",
        "udp:127.0.0.1",
        "udp:127.0.0.1:",
        "udp:127.0.0.1:0",
        "udp:127.0.0.1:65536",
        "udp:127.0.0.1:22x3",
        "udp:999.0.0.1:2223",
        "udp:rtpengine.local:2223",
        "udp:::1:2223",
        "udp:[127.0.0.1]:2223",
        "udp:127.0.0.1:²²²³",
    ],
)
def test_bad_rtpengine_addresses_name_the_config_key(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rtpengine_address(value)
    assert caught.value.key_path == CONFIG_KEY == "gateway.media.rtpengine"


def test_the_config_default_example_parses() -> None:
    config = GatewayMediaConfig(rtpengine="udp:127.0.0.1:2223")
    assert parse_rtpengine_address(config.rtpengine) == RtpengineAddress("127.0.0.1", 2223)
    assert str(parse_rtpengine_address(config.rtpengine)) == config.rtpengine
