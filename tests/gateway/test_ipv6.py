"""The gateway over IPv6: bracketed hosts in Via, Contact and Record-Route, routing back."""

from __future__ import annotations

from sipwarden.detect.registry import DetectionSettings, build_engine
from sipwarden.engine.bans import BanSettings
from sipwarden.gateway.core import GatewayCore
from sipwarden.gateway.model import Endpoint, GatewaySettings
from sipwarden.gateway.tokens import TokenSigner
from sipwarden.sip.message import Request, Response
from sipwarden.sip.parser import parse_message

OUTSIDE = Endpoint("udp", "2a05:d000::10", 5060)
INSIDE = Endpoint("udp", "fd00::1", 5060)
PBX = Endpoint("udp", "fd00::5", 5060)
PHONE = Endpoint("udp", "2a05:d000::77", 41000)

REGISTER = (
    b"REGISTER sip:pbx.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP [2a05:d000::77]:41000;branch=z9hG4bKv6;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:100@pbx.example>;tag=a\r\n"
    b"To: <sip:100@pbx.example>\r\n"
    b"Call-ID: v6@phone\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:100@[2a05:d000::77]:41000>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_an_ipv6_registration_is_forwarded_and_its_answer_routed_back() -> None:
    gateway = GatewayCore(
        GatewaySettings(outside=OUTSIDE, inside=INSIDE, upstreams=(PBX,)),
        engine=build_engine(DetectionSettings(), bans=BanSettings()),
        signer=TokenSigner(b"0123456789abcdef"),
    )
    (forward,) = gateway.receive(REGISTER, PHONE, 1000.0)
    assert forward.to == PBX
    request = parse_message(forward.data)
    assert isinstance(request, Request)
    assert request.via[0].sent_by == "[fd00::1]:5060"
    assert "[fd00::1]:5060" in (request.headers.get("contact") or "")
    vias = "".join(f"Via: {value}\r\n" for value in request.headers.values("via"))
    answer = (
        f"SIP/2.0 200 OK\r\n{vias}From: <sip:100@pbx.example>;tag=a\r\n"
        "To: <sip:100@pbx.example>;tag=b\r\nCall-ID: v6@phone\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: {request.headers.get('contact')};expires=300\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    (back,) = gateway.receive(answer, PBX, 1000.1)
    assert back.to == PHONE
    response = parse_message(back.data)
    assert isinstance(response, Response)
    assert response.status == 200
    assert "fd00::" not in back.data.decode()  # the inside addresses stay inside
