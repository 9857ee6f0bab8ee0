"""Responses built from requests (RFC 3261 8.2.6)."""

from __future__ import annotations

from sipwarden.sip.message import Request
from sipwarden.sip.parser import parse_message
from sipwarden.sip.replies import make_response

INVITE = (
    b"INVITE sip:100@pbx.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK0\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:200@pbx.test>;tag=abc\r\n"
    b"To: <sip:100@pbx.test;tag=x>\r\n"
    b"Call-ID: c1@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:200@192.0.2.1>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def request(raw: bytes = INVITE) -> Request:
    message = parse_message(raw)
    assert isinstance(message, Request)
    return message


def test_a_response_copies_via_from_call_id_cseq_and_to() -> None:
    made = make_response(request(INVITE.replace(b";tag=x", b"")), 486, to_tag="t1")
    again = parse_message(made.to_bytes())
    assert again.start_line() == "SIP/2.0 486 Busy Here"
    assert again.headers.get_all("via") == [
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport",
        "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK0",
    ]
    assert again.headers.get("to") == "<sip:100@pbx.test>;tag=t1"
    assert again.headers.get("call-id") == "c1@192.0.2.1"
    assert again.headers.get("cseq") == "1 INVITE"
    assert "contact" not in again.headers
    assert again.body == b""


def test_a_to_tag_is_never_added_twice_nor_to_a_100() -> None:
    # ";tag=x" inside <...> is a URI parameter: the field itself has no tag yet.
    assert make_response(request(), 404, to_tag="t1").headers.get("to") == (
        "<sip:100@pbx.test;tag=x>;tag=t1"
    )
    tagged = INVITE.replace(b"To: <sip:100@pbx.test;tag=x>", b"To: <sip:100@pbx.test>;tag=y")
    assert make_response(request(tagged), 404, to_tag="t1").headers.get("to") == (
        "<sip:100@pbx.test>;tag=y"
    )
    untagged = INVITE.replace(b";tag=x", b"")
    assert make_response(request(untagged), 100, to_tag="t1").headers.get("to") == (
        "<sip:100@pbx.test>"
    )


def test_extra_headers_and_reason() -> None:
    made = make_response(request(), 488, "SRTP required", headers=[("Warning", '399 gw "x"')])
    assert made.start_line() == "SIP/2.0 488 SRTP required"
    assert made.headers.get("warning") == '399 gw "x"'
