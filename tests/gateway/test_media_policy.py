"""The SRTP policy (:mod:`sipwarden.gateway.media_policy`): which offers get a 488, and its shape.

Each sample offer is annotated with the verdict it must get under
``require_srtp``; one parametrised test runs them all, and the 488 itself is
checked once in detail (status, Warning, copied headers, no body).
"""

from __future__ import annotations

import re

import pytest

from sipwarden.gateway.media_policy import answer_offers_srtp, srtp_problem, srtp_verdict
from sipwarden.sip.message import Request, Response
from sipwarden.sip.parser import parse_message

FP = ":".join(["AB"] * 32)
KEY = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"

SESSION = [
    "v=0",
    "o=alice 2890844526 2890844527 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
]
AVP = [*SESSION, "m=audio 49170 RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000"]
SDES = [*SESSION, "m=audio 49170 RTP/SAVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}"]
SAVP_NO_KEY = [*SESSION, "m=audio 49170 RTP/SAVP 0"]
DTLS = [
    *SESSION,
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    f"a=fingerprint:sha-256 {FP}",
    "a=setup:actpass",
]
DTLS_NO_FP = [*SESSION, "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=setup:actpass"]
# SRTP audio beside plain video: the video would go in clear.
MIXED = [*SDES, "m=video 51372 RTP/AVP 96", "a=rtpmap:96 H264/90000"]
# The plain stream is disabled (port 0): nothing goes in clear.
DISABLED_PLAIN = [*SDES, "m=video 0 RTP/AVP 96"]
GARBAGE = ["this is not SDP at all"]
BROKEN_M = [*SESSION, "m=audio port RTP/AVP 0"]


def sdp(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def request(
    body: bytes = b"",
    *,
    method: str = "INVITE",
    content_type: str | None = "application/sdp",
    to_tag: str = "",
    extra: str = "",
) -> Request:
    """A request from outside; ``body`` with ``content_type`` when given."""
    head = (
        f"{method} sip:200@pbx.test SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK776asdhds\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:100@pbx.test>;tag=1928301774\r\n"
        f"To: <sip:200@pbx.test>{to_tag}\r\n"
        "Call-ID: a84b4c76e66710@192.0.2.10\r\n"
        f"CSeq: 314159 {method}\r\n"
        "Contact: <sips:100@192.0.2.10:5061>\r\n"
        f"{extra}"
    )
    if body and content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    raw = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    message = parse_message(raw)
    assert isinstance(message, Request)
    return message


def multipart(*parts: tuple[str, bytes], boundary: str = "unique-boundary-1") -> bytes:
    """A multipart/mixed body (RFC 2046 5.1.1) of (headers, content) parts."""
    out = b""
    for headers, content in parts:
        out += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


ISUP = ("Content-Type: application/isup;version=itu-t92+", b"\x01\x00\x49\x00")


# (id, request, refused?, what the reason must mention)
CASES = [
    ("rtp-avp", request(sdp(AVP)), True, "stream 1 (audio RTP/AVP) is plain RTP"),
    ("sdes", request(sdp(SDES)), False, ""),
    ("savp-without-crypto", request(sdp(SAVP_NO_KEY)), True, "no usable a=crypto"),
    ("dtls-srtp", request(sdp(DTLS)), False, ""),
    ("dtls-without-fingerprint", request(sdp(DTLS_NO_FP)), True, "no a=fingerprint"),
    ("srtp-audio-plain-video", request(sdp(MIXED)), True, "stream 2 (video RTP/AVP)"),
    ("plain-stream-disabled", request(sdp(DISABLED_PLAIN)), False, ""),
    ("late-offer", request(), False, ""),
    ("garbage-sdp", request(sdp(GARBAGE)), True, "malformed SDP (RFC 4566 5 session"),
    ("broken-m-line", request(sdp(BROKEN_M)), True, "malformed SDP (RFC 4566 5.14 m=)"),
    ("no-content-type", request(sdp(AVP), content_type=None), True, "without Content-Type"),
    ("not-sdp", request(ISUP[1], content_type="application/isup"), False, ""),
    (
        "gzip-encoded",
        request(sdp(AVP), extra="Content-Encoding: gzip\r\n"),
        True,
        "encoded body",
    ),
    (
        "re-invite-rtp",
        request(sdp(AVP), to_tag=";tag=a6c85cf"),
        True,
        "plain RTP",
    ),
    ("update-rtp", request(sdp(AVP), method="UPDATE", to_tag=";tag=a6c85cf"), True, "plain RTP"),
    ("update-sdes", request(sdp(SDES), method="UPDATE", to_tag=";tag=a6c85cf"), False, ""),
    # An answer in a PRACK cannot be refused with 488 (RFC 3264 6).
    ("prack-rtp", request(sdp(AVP), method="PRACK", to_tag=";tag=a6c85cf"), False, ""),
    ("message-rtp", request(sdp(AVP), method="MESSAGE"), False, ""),
    (
        "multipart-rtp",
        request(
            multipart(("Content-Type: application/sdp", sdp(AVP)), ISUP),
            content_type='multipart/mixed;boundary="unique-boundary-1"',
        ),
        True,
        "plain RTP",
    ),
    (
        "multipart-sdes",
        request(
            multipart(("Content-Type: application/sdp", sdp(SDES)), ISUP),
            content_type="multipart/mixed;boundary=unique-boundary-1",
        ),
        False,
        "",
    ),
    (
        "nested-multipart-rtp",
        request(
            multipart(
                (
                    "Content-Type: multipart/alternative; boundary=inner",
                    multipart(("Content-Type: application/sdp", sdp(AVP)), boundary="inner"),
                ),
                ISUP,
            ),
            content_type="multipart/mixed;boundary=unique-boundary-1",
        ),
        True,
        "plain RTP",
    ),
    (
        "multipart-base64-sdp",
        request(
            multipart(
                ("Content-Type: application/sdp\r\nContent-Transfer-Encoding: base64", b"dj0w")
            ),
            content_type="multipart/mixed;boundary=unique-boundary-1",
        ),
        True,
        "encoded SDP part",
    ),
    (
        "multipart-two-content-types",
        request(
            multipart(("Content-Type: application/sdp\r\nContent-Type: text/plain", sdp(AVP))),
            content_type="multipart/mixed;boundary=unique-boundary-1",
        ),
        True,
        "repeated header field",
    ),
    (
        "multipart-unterminated",
        request(
            multipart(("Content-Type: application/sdp", sdp(AVP)))[: -len("--\r\n")],
            content_type="multipart/mixed;boundary=unique-boundary-1",
        ),
        True,
        "close-delimiter",
    ),
    (
        "multipart-no-boundary",
        request(
            multipart(("Content-Type: application/sdp", sdp(AVP))),
            content_type="multipart/mixed",
        ),
        True,
        "without boundary",
    ),
]


@pytest.mark.parametrize(
    ("message", "refused", "reason"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_offers_get_the_verdict_they_are_annotated_with(
    message: Request, refused: bool, reason: str
) -> None:
    verdict = srtp_verdict(message, require_srtp=True, to_tag="gw1")
    if not refused:
        assert verdict is None
        return
    assert verdict is not None
    assert verdict.status == 488
    warning = verdict.headers.get("warning")
    assert warning is not None
    assert reason in warning


@pytest.mark.parametrize(("message", "_refused", "_reason"), [c[1:] for c in CASES])
def test_without_require_srtp_everything_passes(
    message: Request, _refused: bool, _reason: str
) -> None:
    assert srtp_verdict(message, require_srtp=False) is None


def test_the_488_copies_the_request_says_why_and_leaks_nothing() -> None:
    offer = request(sdp(AVP))
    verdict = srtp_verdict(offer, require_srtp=True, to_tag="gw1")
    assert verdict is not None
    again = parse_message(verdict.to_bytes())  # a well-formed response on the wire
    assert isinstance(again, Response)
    again.validate()
    assert again.start_line() == "SIP/2.0 488 Not Acceptable Here"
    # RFC 3261 8.2.6.2: Via, From, Call-ID, CSeq copied, To tagged.
    for name in ("via", "from", "call-id", "cseq"):
        assert again.headers.get_all(name) == offer.headers.get_all(name)
    assert again.headers.get("to") == "<sip:200@pbx.test>;tag=gw1"
    # RFC 3261 20.43: warn-code SP warn-agent SP quoted warn-text.
    assert again.headers.get_all("warning") == [
        '399 gateway "SRTP required: stream 1 (audio RTP/AVP) is plain RTP, '
        'not RTP/SAVP with a=crypto or DTLS-SRTP"'
    ]
    # No SDP of ours (nor an echo of the offer's) in the refusal.
    assert again.body == b""
    assert "content-type" not in again.headers
    assert b"192.0.2.10" not in verdict.to_bytes().split(b"Warning")[1]


def test_a_re_invite_keeps_its_to_tag_and_the_warn_agent_is_configurable() -> None:
    offer = request(sdp(AVP), to_tag=";tag=a6c85cf")
    verdict = srtp_verdict(offer, require_srtp=True, to_tag="ignored", warn_agent="sbc.test")
    assert verdict is not None
    assert verdict.headers.get("to") == "<sip:200@pbx.test>;tag=a6c85cf"
    warning = verdict.headers.get("warning")
    assert warning is not None
    assert warning.startswith('399 sbc.test "SRTP required: ')


def test_warning_text_stays_one_safe_quoted_string() -> None:
    # Whatever the reason holds, the warn-text has no quote, backslash or
    # control character that could end the quoted-string or the header.
    for _, message, refused, _ in CASES:
        verdict = srtp_verdict(message, require_srtp=True, to_tag="t")
        if refused:
            assert verdict is not None
            warning = verdict.headers.get("warning")
            assert warning is not None
            assert re.fullmatch(r'399 gateway "[ !#-\[\]-~]*"', warning), warning


def test_srtp_problem_names_the_reason_without_building_a_response() -> None:
    assert srtp_problem(request(sdp(SDES))) is None
    assert srtp_problem(request()) is None
    assert srtp_problem(request(sdp(GARBAGE))) == "malformed SDP (RFC 4566 5 session description)"
    only_fax = [*SESSION, "m=image 49172 udptl t38"]
    assert srtp_problem(request(sdp(only_fax))) == "no active RTP stream to protect"


def response(body: bytes, status: int = 200) -> Response:
    raw = (
        f"SIP/2.0 {status} OK\r\n"
        "Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK776asdhds\r\n"
        "From: <sip:100@pbx.test>;tag=1928301774\r\n"
        "To: <sip:200@pbx.test>;tag=a6c85cf\r\n"
        "Call-ID: a84b4c76e66710@192.0.2.10\r\n"
        "CSeq: 314159 INVITE\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    message = parse_message(raw)
    assert isinstance(message, Response)
    return message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(sdp(SDES), True, id="sdes"),
        pytest.param(sdp(DTLS), True, id="dtls-srtp"),
        pytest.param(sdp(AVP), False, id="rtp-avp"),
        pytest.param(sdp(MIXED), False, id="mixed"),
        pytest.param(sdp(GARBAGE), False, id="garbage"),
        pytest.param(b"", False, id="no-sdp"),
    ],
)
def test_answer_side_of_a_late_offer(body: bytes, expected: bool) -> None:
    # The 2xx to an INVITE without SDP carries the offer; the ACK the answer.
    assert answer_offers_srtp(response(body)) is expected
    ack = request(body, method="ACK", to_tag=";tag=a6c85cf")
    assert answer_offers_srtp(ack) is expected
    # An ACK is never answered, so srtp_verdict leaves it alone.
    assert srtp_verdict(ack, require_srtp=True) is None
