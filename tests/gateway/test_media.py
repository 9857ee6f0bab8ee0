"""Media anchoring through a real rtpengine: the PBX's media address never goes outside.

Phone (SIPp) → gateway → Kamailio → SIPp UAS, with the gateway handing every
SDP to rtpengine (``internal`` 127.0.0.1 facing the PBX, ``external``
127.0.0.2 facing the outside). Both legs are captured.
"""

from __future__ import annotations

from pathlib import Path

from gateway.test_calls import Address, gateway_process
from peers import BENIGN_USERS, KamailioRegistrar, Sipp
from peers.capture import SipPacket, capture, read_sip
from peers.rtpengine import Rtpengine
from sipwarden.sip.message import Response
from sipwarden.sip.sdp import parse_sdp
from support import free_port


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
        gateway_process(
            tmp_path,
            port,
            pbx,
            extra=f'\n[gateway.media]\nrtpengine = "{rtpengine_daemon.ng_address}"\n',
        ) as gateway,
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
