"""Media anchoring through a real rtpengine: the PBX's media address never goes outside.

Phone (SIPp) → gateway → Kamailio → SIPp UAS, with the gateway handing every
SDP to rtpengine (``internal`` 127.0.0.1 facing the PBX, ``external``
127.0.0.2 facing the outside). Both legs are captured.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest

from gateway.test_calls import Address, gateway_process
from monitor.live_support import LiveMonitor
from peers import BENIGN_USERS, KamailioRegistrar, Sipp
from peers.capture import SipPacket, capture, read_sip
from peers.phone import ScriptedPhone
from peers.rtpengine import Rtpengine
from sipwarden.sip.message import Response
from sipwarden.sip.sdp import parse_sdp
from support import free_port


def anchored_gateway(
    tmp_path: Path, port: int, pbx: KamailioRegistrar, rtpengine: Rtpengine
) -> LiveMonitor:
    """The real gateway in front of ``pbx``, every SDP anchored through ``rtpengine``."""
    media = f'\n[gateway.media]\nrtpengine = "{rtpengine.ng_address}"\n'
    return gateway_process(tmp_path, port, pbx, extra=media)


def sdp_addresses(packet: SipPacket) -> tuple[set[str], set[int]]:
    """The connection addresses and media ports of a message's SDP."""
    sdp = parse_sdp(packet.message.body, strict=False)
    addresses = {
        media.effective_connection.address for media in sdp.media if media.effective_connection
    }
    return addresses, {media.port for media in sdp.media}


def test_the_outside_sees_only_rtpengines_media_address(
    tmp_path: Path, rtpengine_daemon: Rtpengine
) -> None:
    users = BENIGN_USERS
    runner = Sipp(tmp_path / "sipp")
    port = free_port(tcp=False)
    with (
        runner.uas() as uas,
        KamailioRegistrar(tmp_path / "kamailio", users, downstream=(uas.host, uas.port)) as pbx,
        anchored_gateway(tmp_path, port, pbx, rtpengine_daemon) as gateway,
        capture(
            tmp_path, bpf=f"udp port {port} and not udp port {pbx.port}", name="outside.pcap"
        ) as outside,
        capture(
            tmp_path, bpf=f"udp port {port} and udp port {pbx.port}", name="inside.pcap"
        ) as inside,
    ):
        runner.call(Address("127.0.0.1", port), "100", users["100"], "9001", count=2).expect(
            successful=2
        )
        problems = gateway.problems()
    uas.stop().expect(successful=2)
    assert problems == []
    answers = [
        packet
        for packet in read_sip(outside.path)
        if isinstance(packet.message, Response) and packet.message.body
    ]
    assert len(answers) >= 2  # the 200 OK of each call
    for packet in answers:
        addresses, _ = sdp_addresses(packet)
        assert addresses == {rtpengine_daemon.external}, packet.message.to_bytes()
    phone_ports = {
        port
        for packet in read_sip(outside.path)
        if packet.message.is_request and packet.message.body
        for port in sdp_addresses(packet)[1]
    }
    offers = [
        packet
        for packet in read_sip(inside.path)
        if packet.message.is_request and packet.message.body
    ]
    assert len(offers) >= 2
    for packet in offers:
        addresses, ports = sdp_addresses(packet)
        assert addresses == {rtpengine_daemon.internal}
        assert not ports & phone_ports  # the phone's media port stays on the outside leg


def rtp_packet(sequence: int) -> bytes:
    """A minimal RTP packet (RFC 3550 5.1): version 2, PCMU, 160 bytes of silence."""
    header = bytes([0x80, 0x00]) + sequence.to_bytes(2, "big")
    return header + (sequence * 160).to_bytes(4, "big") + b"\x12\x34\x56\x78" + b"\xff" * 160


@pytest.mark.parametrize("late_offer", [False, True], ids=["early-offer", "late-offer"])
def test_rtp_flows_through_rtpengine_between_the_phone_and_the_pbx(
    tmp_path: Path, rtpengine_daemon: Rtpengine, late_offer: bool
) -> None:
    """The phone's RTP goes to rtpengine's outside address (the only one it knows),
    reaches the SIPp UAS behind Kamailio, is echoed, and comes back the same way."""
    users = BENIGN_USERS
    runner = Sipp(tmp_path / "sipp")
    port = free_port(tcp=False)
    echoed: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as media:
        media.bind(("127.0.0.1", 0))
        media.settimeout(0.5)

        def talk(answer: Response) -> None:
            (stream,) = parse_sdp(answer.body).media
            connection = stream.effective_connection
            assert connection is not None
            assert connection.address == rtpengine_daemon.external
            for sequence in range(1, 51):
                media.sendto(rtp_packet(sequence), (connection.address, stream.port))
                time.sleep(0.005)
            with contextlib.suppress(TimeoutError):
                while len(echoed) < 50:
                    echoed.append(media.recv(2048))

        with (
            runner.uas(extra=["-rtp_echo"]) as uas,
            KamailioRegistrar(tmp_path / "kamailio", users, downstream=(uas.host, uas.port)) as pbx,
            anchored_gateway(tmp_path, port, pbx, rtpengine_daemon),
            ScriptedPhone(
                "127.0.0.1", port, None, "100", users["100"], media_port=media.getsockname()[1]
            ) as phone,
        ):
            assert phone.call("9001", during=talk, late_offer=late_offer) == 200
        uas.stop().expect(successful=1)
    assert len(echoed) >= 45  # 50 sent; loopback may drop a few under load
    assert {packet[12:] for packet in echoed} == {b"\xff" * 160}
