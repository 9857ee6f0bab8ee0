"""Which rtpengine step each message needs, early and late offer (RFC 3264)."""

from __future__ import annotations

from gateway.test_core import INSIDE, PBX, PHONE, invite, pbx_answer, sdp_body
from sipwarden.detect.registry import DetectionSettings, build_engine
from sipwarden.engine.bans import BanSettings
from sipwarden.gateway.core import GatewayCore
from sipwarden.gateway.model import Endpoint, GatewaySettings, MediaStep, Side
from sipwarden.gateway.tokens import TokenSigner
from sipwarden.sip.message import Request
from sipwarden.sip.parser import parse_message

GATEWAY = Endpoint("udp", "203.0.113.10", 5060)


def anchoring_core() -> GatewayCore:
    return GatewayCore(
        GatewaySettings(outside=GATEWAY, inside=INSIDE, upstreams=(PBX,), anchor_media=True),
        engine=build_engine(DetectionSettings(), bans=BanSettings()),
        signer=TokenSigner(b"0123456789abcdef"),
    )


def without_sdp(data: bytes) -> bytes:
    head, _, _ = data.partition(b"\r\n\r\n")
    head = head.replace(b"Content-Type: application/sdp\r\n", b"")
    lines = [line for line in head.split(b"\r\n") if not line.startswith(b"Content-Length")]
    return b"\r\n".join(lines) + b"\r\nContent-Length: 0\r\n\r\n"


def test_early_offer_the_invite_offers_and_the_200_answers() -> None:
    gateway = anchoring_core()
    _, forward = gateway.receive(invite(), PHONE, 1000.0)
    assert forward.media == MediaStep("offer", "call-1@192.168.1.20", "f1", None, Side.INSIDE)
    forwarded = parse_message(forward.data)
    assert isinstance(forwarded, Request)
    (answer,) = gateway.receive(pbx_answer(forwarded), PBX, 1000.1)
    assert answer.media == MediaStep("answer", "call-1@192.168.1.20", "f1", "t9", Side.OUTSIDE)


def test_late_offer_the_200_offers_from_the_callee_and_the_ack_answers() -> None:
    gateway = anchoring_core()
    _, forward = gateway.receive(without_sdp(invite()), PHONE, 1000.0)
    assert forward.media is None  # nothing to anchor yet
    forwarded = parse_message(forward.data)
    assert isinstance(forwarded, Request)
    (answer,) = gateway.receive(pbx_answer(forwarded), PBX, 1000.1)
    # The callee (tag t9) offers; rtpengine names the offerer by from-tag.
    assert answer.media == MediaStep("offer", "call-1@192.168.1.20", "t9", "f1", Side.OUTSIDE)
    body = sdp_body("- 2 2 IN IP4 192.168.1.20", "-", "192.168.1.20", 4002)
    ack = (
        "ACK sip:200@10.0.0.5:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKack;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:100@pbx.example>;tag=f1\r\n"
        "To: <sip:200@pbx.example>;tag=t9\r\nCall-ID: call-1@192.168.1.20\r\n"
        f"CSeq: 1 ACK\r\nContent-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
        + body
    ).encode()
    sends = gateway.receive(ack, PHONE, 1000.2)
    assert [send.media for send in sends] == [
        MediaStep("answer", "call-1@192.168.1.20", "t9", "f1", Side.INSIDE)
    ]


def test_a_failed_call_and_a_bye_delete_the_media() -> None:
    gateway = anchoring_core()
    _, forward = gateway.receive(invite(), PHONE, 1000.0)
    forwarded = parse_message(forward.data)
    assert isinstance(forwarded, Request)
    (refusal,) = gateway.receive(pbx_answer(forwarded, 486), PBX, 1000.1)
    assert refusal.media is not None
    assert refusal.media.kind == "delete"
