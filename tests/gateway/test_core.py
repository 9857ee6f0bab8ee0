"""The gateway core, sans-IO: each rule of the pipeline on crafted messages.

The real peers (SIPp, Kamailio, SIPVicious) drive the same core in
test_calls.py and test_attacks.py; here each RFC rule and each hiding rule
has a test of its own, with no socket.
"""

from __future__ import annotations

import base64

import pytest

from sipwarden.detect.registry import DetectionSettings, build_engine
from sipwarden.enforce.ban import Ban, BanTable
from sipwarden.engine.bans import BanSettings
from sipwarden.engine.contract import Inspection
from sipwarden.gateway.core import GatewayCore
from sipwarden.gateway.model import Endpoint, GatewaySettings, Send
from sipwarden.gateway.screening import RateLimiter
from sipwarden.gateway.tokens import TokenSigner
from sipwarden.sip.message import Request, Response
from sipwarden.sip.parser import parse_message

GATEWAY = Endpoint("udp", "203.0.113.10", 5060)
INSIDE = Endpoint("udp", "10.0.0.1", 5060)
PBX = Endpoint("udp", "10.0.0.5", 5060)
PHONE = Endpoint("udp", "81.2.69.142", 40000)  # public: documentation ranges are bogons


def core(*, answer_options: bool = True, **overrides: object) -> GatewayCore:
    settings = GatewaySettings(
        outside=GATEWAY,
        inside=INSIDE,
        upstreams=(PBX,),
        identity="Avaya CM",
        answer_options=answer_options,
    )
    options: dict[str, object] = {
        "engine": build_engine(DetectionSettings(), bans=BanSettings()),
        "signer": TokenSigner(b"0123456789abcdef0123456789abcdef"),
    }
    options.update(overrides)
    return GatewayCore(settings, **options)  # type: ignore[arg-type]


def sdp_body(origin: str, name: str, address: str, port: int) -> str:
    return (
        f"v=0\r\no={origin}\r\ns={name}\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
    )


def invite(
    *,
    extra: str = "",
    via: str = "SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKabc;rport",
    media: str = "RTP/AVP 0\r\n",
) -> bytes:
    body = sdp_body("- 1 1 IN IP4 192.168.1.20", "-", "192.168.1.20", 4000)
    body = body.replace("RTP/AVP 0\r\n", media)
    return (
        "INVITE sip:200@pbx.example SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:100@pbx.example>;tag=f1\r\n"
        "To: <sip:200@pbx.example>\r\n"
        "Call-ID: call-1@192.168.1.20\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:100@192.168.1.20:5060>\r\n"
        "P-Asserted-Identity: <sip:999@pbx.example>\r\n"
        f"{extra}"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def parsed(send: Send) -> Request | Response:
    message = parse_message(send.data)
    assert isinstance(message, Request | Response)
    return message


def forward_invite(gateway: GatewayCore, data: bytes | None = None) -> tuple[Response, Request]:
    sends = gateway.receive(data or invite(), PHONE, 1000.0)
    assert [send.to for send in sends] == [PHONE, PBX]
    trying, forwarded = (parsed(send) for send in sends)
    assert isinstance(trying, Response)
    assert isinstance(forwarded, Request)
    return trying, forwarded


def pbx_answer(forwarded: Request, status: int = 200, *, extra: str = "") -> bytes:
    vias = "".join(f"Via: {value}\r\n" for value in forwarded.headers.values("via"))
    body = sdp_body("asterisk 9 9 IN IP4 10.0.0.5", "Asterisk PBX 20.1", "10.0.0.5", 10000)
    sdp = body if status == 200 else ""
    kind = "Content-Type: application/sdp\r\n" if sdp else ""
    return (
        f"SIP/2.0 {status} Whatever\r\n{vias}"
        "Record-Route: <sip:10.0.0.5;lr>\r\n"
        f"Record-Route: {forwarded.headers.get('record-route')}\r\n"
        "From: <sip:100@pbx.example>;tag=f1\r\n"
        "To: <sip:200@pbx.example>;tag=t9\r\n"
        "Call-ID: call-1@192.168.1.20\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:200@10.0.0.5:5060>\r\n"
        "Server: Asterisk PBX 20.1.0\r\n"
        "X-Asterisk-HangupCause: none\r\n"
        f"{extra}{kind}Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def test_an_invite_is_answered_100_and_forwarded_as_a_record_routing_proxy() -> None:
    trying, forwarded = forward_invite(core())
    assert trying.status == 100
    vias = forwarded.via
    assert vias[0].sent_by == "10.0.0.1:5060"  # ours, towards the PBX
    assert vias[0].branch is not None and vias[0].branch.startswith("z9hG4bK")
    assert vias[1].received == "81.2.69.142"  # RFC 3261 18.2.1
    assert vias[1].rport == "40000"  # RFC 3581 4
    assert forwarded.max_forwards == 69
    assert "10.0.0.1:5060;lr;swr=in" in (forwarded.headers.get("record-route") or "")
    assert "p-asserted-identity" not in forwarded.headers  # trust ends at the gateway
    contact = forwarded.headers.get("contact") or ""
    assert "192.168.1.20" not in contact and "10.0.0.1:5060" in contact  # NAT alias


def test_the_answer_reaches_the_phone_with_the_pbx_hidden() -> None:
    gateway = core()
    _, forwarded = forward_invite(gateway)
    (send,) = gateway.receive(pbx_answer(forwarded), PBX, 1000.1)
    assert send.to == PHONE
    answer = parsed(send)
    # Without media anchoring the media goes to the PBX: c= must keep its address.
    text = "".join(
        line for line in send.data.decode().splitlines(True) if not line.startswith("c=")
    )
    assert "10.0.0.5" not in text and "10.0.0.1" not in text
    assert "Asterisk" not in text  # Server, X-Asterisk-*, SDP s= are gone or replaced
    assert answer.headers.get("server") == "Avaya CM"
    assert len(answer.headers.values("record-route")) == 1
    assert [via.branch for via in answer.via] == ["z9hG4bKabc"]
    for token in (answer.headers.get("record-route") or "", answer.headers.get("contact") or ""):
        raw = token.split("=")[-1].rstrip(">")
        assert b"10.0.0.5" not in base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))


def test_an_in_dialog_request_is_routed_back_from_the_tokens_alone() -> None:
    gateway = core()
    _, forwarded = forward_invite(gateway)
    answer = parsed(gateway.receive(pbx_answer(forwarded), PBX, 1000.1)[0])
    route = answer.headers.get("record-route")
    target = (answer.headers.get("contact") or "").strip("<>")
    bye = (
        f"BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKbye;rport\r\n"
        f"Route: {route}\r\nMax-Forwards: 70\r\nFrom: <sip:100@pbx.example>;tag=f1\r\n"
        "To: <sip:200@pbx.example>;tag=t9\r\nCall-ID: call-1@192.168.1.20\r\n"
        "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    fresh = core()  # a restarted gateway with the same key: no memory of the call
    (send,) = fresh.receive(bye, PHONE, 2000.0)
    assert send.to == PBX
    request = parsed(send)
    assert isinstance(request, Request)
    assert request.uri == "sip:200@10.0.0.5:5060"  # the PBX's real Contact again
    assert request.headers.values("route") == ["<sip:10.0.0.5;lr>"]


def test_a_request_from_the_pbx_reaches_the_phone_behind_its_nat_with_vias_hidden() -> None:
    gateway = core()
    _, forwarded = forward_invite(gateway)
    alias = (forwarded.headers.get("contact") or "").strip("<>")
    bye = (
        f"BYE {alias} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKpbx1;rport\r\n"
        f"Route: {forwarded.headers.get('record-route')}\r\nMax-Forwards: 70\r\n"
        "From: <sip:200@pbx.example>;tag=t9\r\nTo: <sip:100@pbx.example>;tag=f1\r\n"
        "Call-ID: call-1@192.168.1.20\r\nCSeq: 5 BYE\r\nUser-Agent: Asterisk PBX\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    (send,) = gateway.receive(bye, PBX, 1001.0)
    assert send.to == PHONE  # the address its packets came from, not 192.168.1.20
    request = parsed(send)
    assert isinstance(request, Request)
    assert request.uri == "sip:100@192.168.1.20:5060"
    assert "10.0.0.5" not in send.data.decode()
    assert [via.sent_by for via in request.via] == ["203.0.113.10:5060"]
    ok = (
        f"SIP/2.0 200 OK\r\nVia: {request.headers.values('via')[0]}\r\n"
        "From: <sip:200@pbx.example>;tag=t9\r\nTo: <sip:100@pbx.example>;tag=f1\r\n"
        "Call-ID: call-1@192.168.1.20\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    restarted = core()  # or another worker: the hidden Vias travel sealed in ours
    (back,) = restarted.receive(ok, PHONE, 1001.1)
    assert back.to == PBX
    assert [via.branch for via in parsed(back).via] == ["z9hG4bKpbx1"]  # restored
    assert "10.0.0.5" not in request.headers.values("via")[0]  # sealed, not in clear


def test_retransmissions_are_absorbed_and_cancel_shares_the_invite_branch() -> None:
    gateway = core()
    _, forwarded = forward_invite(gateway)
    ringing = pbx_answer(forwarded, 180)
    gateway.receive(ringing, PBX, 1000.1)
    (again,) = gateway.receive(invite(), PHONE, 1000.5)  # the phone retransmits
    assert again.to == PHONE
    assert parsed(again).start_line().startswith("SIP/2.0 180")
    cancel = invite().replace(b"INVITE sip:", b"CANCEL sip:").replace(b"1 INVITE", b"1 CANCEL")
    (sent,) = gateway.receive(cancel, PHONE, 1000.6)
    assert sent.to == PBX
    assert parsed(sent).via[0].branch == forwarded.via[0].branch  # RFC 3261 9.1


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ((b"Max-Forwards: 70", b"Max-Forwards: 0"), 483),
        ((b"sip:200@pbx.example SIP", b"xmpp:200@pbx.example SIP"), 416),
        ((b"Call-ID: call-1@192.168.1.20\r\n", b""), 400),
    ],
)
def test_rfc_3261_16_3_validation(change: tuple[bytes, bytes], status: int) -> None:
    (send,) = core().receive(invite().replace(*change), PHONE, 1000.0)
    assert send.to == PHONE
    assert parsed(send).start_line().split()[1] == str(status)


def test_a_loop_is_refused_482() -> None:
    looped = invite(extra="").replace(
        b"Via: ", b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKswXXXX\r\nVia: ", 1
    )
    (send,) = core().receive(looped, PHONE, 1000.0)
    assert parsed(send).start_line().startswith("SIP/2.0 482")


def test_garbage_gets_a_400_to_its_source_and_a_bad_response_nothing() -> None:
    broken = invite().replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE")
    (send,) = core().receive(broken, PHONE, 1000.0)
    assert send.to == PHONE  # never to a Via the sender wrote
    assert parsed(send).start_line().startswith("SIP/2.0 400")
    assert core().receive(b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", PHONE, 1000.0) == []
    assert core().receive(b"\x00\xff" * 50, PHONE, 1000.0) == []
    assert core().receive(b"\r\n\r\n", PHONE, 1000.0) == []  # keep-alive


def test_banned_bogon_and_flooding_sources_are_dropped_before_parsing() -> None:
    table = BanTable()
    table.put(Ban(source="81.2.69.142", since=0, until=9e9, rule="r", reason="x", returnable=True))
    assert core(bans=table).receive(invite(), PHONE, 1000.0) == []
    bogon = Endpoint("udp", "10.9.9.9", 5060)
    gateway = core()
    assert gateway.receive(invite(), bogon, 1000.0) == []
    assert gateway.counters.bogon == 1
    limited = core(limiter=RateLimiter(rate=1, burst=2))
    results = [limited.receive(invite(), PHONE, 1000.0) for _ in range(5)]
    assert sum(1 for sends in results if sends) == 2


def test_unknown_accounts_are_answered_like_known_ones() -> None:
    gateway = core()
    _, forwarded = forward_invite(gateway)
    (send,) = gateway.receive(pbx_answer(forwarded, 404), PBX, 1000.1)
    answer = parsed(send)
    assert isinstance(answer, Response)
    assert answer.status == 407  # a challenge, as for an account that exists
    assert answer.proxy_authenticate


def test_health_probes_fail_over_to_the_next_upstream() -> None:
    second = Endpoint("udp", "10.0.0.6", 5060)
    settings = GatewaySettings(outside=GATEWAY, inside=INSIDE, upstreams=(PBX, second))
    gateway = GatewayCore(
        settings,
        engine=build_engine(DetectionSettings(), bans=BanSettings()),
        signer=TokenSigner(b"0123456789abcdef"),
    )
    for second_passed in range(4):
        probes = gateway.tick(1000.0 + 10 * second_passed)
        assert [probe.to for probe in probes] == [PBX, second]
        answer = parse_message(probes[1].data)
        assert isinstance(answer, Request)
        reply = (
            f"SIP/2.0 200 OK\r\nVia: {answer.headers.get('via')}\r\nFrom: <sip:h@x>;tag=1\r\n"
            f"To: <sip:x>;tag=2\r\nCall-ID: {answer.call_id}\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        assert gateway.receive(reply, second, 1000.5 + 10 * second_passed) == []
    (_, forwarded_to) = gateway.receive(invite(), PHONE, 1100.0)
    assert forwarded_to.to == second  # the first missed three probes


def test_a_call_without_srtp_is_refused_488_when_the_policy_requires_it() -> None:
    settings = GatewaySettings(outside=GATEWAY, inside=INSIDE, upstreams=(PBX,), require_srtp=True)
    gateway = GatewayCore(
        settings,
        engine=build_engine(DetectionSettings(), bans=BanSettings()),
        signer=TokenSigner(b"0123456789abcdef"),
    )
    (send,) = gateway.receive(invite(), PHONE, 1000.0)
    assert send.to == PHONE
    refusal = parsed(send)
    assert refusal.start_line().startswith("SIP/2.0 488")
    assert "SRTP" in (refusal.headers.get("warning") or "")
    crypto = (
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    )
    secure = invite(media=f"RTP/SAVP 0\r\n{crypto}")
    sends = gateway.receive(secure, PHONE, 1000.1)
    assert [send.to for send in sends] == [PHONE, PBX]  # 100 Trying, then forwarded


def test_the_100_trying_carries_the_phones_vias_only() -> None:
    # Built before our Via is pushed (RFC 3261 16.2, 18.1.2): our inside face
    # on top would show the outside the inside address, and a strict phone
    # would discard the 100 and keep retransmitting.
    trying, _ = forward_invite(core())
    assert [via.sent_by for via in trying.via] == ["192.168.1.20:5060"]
    assert trying.via[0].received == "81.2.69.142"  # stamped as received (18.2.1)


def test_the_gateways_own_answers_carry_the_identity_the_pbxs_answers_get() -> None:
    """A 100 or 400 of the gateway's must not stand out from the PBX's answers, whose
    Server header becomes the configured identity."""
    (trying, _) = core().receive(invite(), PHONE, 1000.0)
    assert parsed(trying).headers.get("server") == "Avaya CM"
    plain = GatewayCore(
        GatewaySettings(outside=GATEWAY, inside=INSIDE, upstreams=(PBX,)),
        engine=build_engine(DetectionSettings(), bans=BanSettings()),
        signer=TokenSigner(b"0123456789abcdef"),
    )
    (trying, _) = plain.receive(invite(), PHONE, 1000.0)
    assert "server" not in parsed(trying).headers


def options(user: str, *, to_tag: str = "", number: int = 1) -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"OPTIONS sip:{user}@pbx.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKopt{number};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:100@pbx.example>;tag=o1\r\n"
        f"To: <sip:{user}@pbx.example>{tag}\r\n"
        f"Call-ID: options-{number}@192.168.1.20\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answer_probe(gateway: GatewayCore, extra: str) -> None:
    """The PBX answers the gateway's health check with its capabilities."""
    (probe,) = gateway.tick(1000.0)
    request = parse_message(probe.data)
    assert isinstance(request, Request)
    reply = (
        f"SIP/2.0 200 OK\r\nVia: {request.headers.get('via')}\r\nFrom: <sip:h@x>;tag=1\r\n"
        f"To: <sip:x>;tag=2\r\nCall-ID: {request.call_id}\r\nCSeq: 1 OPTIONS\r\n"
        f"{extra}Server: Asterisk PBX 20.1.0\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    assert gateway.receive(reply, PBX, 1000.01) == []


def test_options_are_answered_at_the_gateway_alike_for_every_account() -> None:
    """svwar -m OPTIONS asks the PBX about each extension: the gateway answers instead,
    with the PBX's capabilities (RFC 3261 11.2), so every extension looks the same."""
    gateway = core()
    answer_probe(
        gateway,
        "Allow: INVITE, ACK, CANCEL\r\nAllow: BYE, OPTIONS\r\nAccept: application/sdp\r\n"
        "Supported: replaces, timer\r\n",
    )
    answers = []
    for number, user in enumerate(("100", "no-such-user", "101"), start=1):
        (send,) = gateway.receive(options(user, number=number), PHONE, 1001.0 + number)
        assert send.to == PHONE  # answered, nothing forwarded to the PBX
        answer = parsed(send)
        assert isinstance(answer, Response)
        answers.append(answer)
    assert {answer.status for answer in answers} == {200}
    layouts = {tuple(answer.headers.keys()) for answer in answers}
    assert len(layouts) == 1  # the same headers whoever was asked
    first = answers[0].headers
    assert first.get("allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS"
    assert first.get("accept") == "application/sdp"
    assert first.get("supported") == "replaces, timer"
    assert first.get("server") == "Avaya CM"  # the identity, never the PBX's product
    assert gateway.counters.forwarded == 0


def test_in_dialog_options_and_the_setting_off_are_forwarded() -> None:
    (forwarded,) = core().receive(options("100", to_tag="t9"), PHONE, 1000.0)
    assert forwarded.to == PBX  # an OPTIONS inside a dialog is the PBX's to answer
    (send,) = core(answer_options=False).receive(options("100"), PHONE, 1000.0)
    assert send.to == PBX


def test_the_pbxs_grammar_is_not_judged() -> None:
    """A PBX that writes a broken Date is relayed as it is and reported on by no rule:
    the gateway protects it, and nobody could act on such a report."""
    reports: list[Inspection] = []
    gateway = core(report=reports.append)
    _, forwarded = forward_invite(gateway)
    (send,) = gateway.receive(pbx_answer(forwarded, extra="Date: yesterday\r\n"), PBX, 1000.1)
    assert send.to == PHONE
    assert (parsed(send).headers.get("date")) == "yesterday"
    assert [event.rule for inspection in reports for event in inspection.events] == []
