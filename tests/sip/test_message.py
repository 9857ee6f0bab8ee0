"""Tests of sipwarden.sip.message: editing, serialising, validating, building."""

from __future__ import annotations

import contextlib

import pytest

from sipwarden.errors import LocalProtocolError, RemoteProtocolError
from sipwarden.sip.headers import Headers
from sipwarden.sip.message import Defect, Message, Request, Response
from sipwarden.sip.parser import parse_message
from sipwarden.sip.uri import SipUri
from support import shared_path

BODY = b"v=0\r\no=alice 2890844526 2890844526 IN IP4 pc33.example.com\r\ns=-\r\n"

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.example.com>\r\n"
    b"User-Agent: FancyPhone/1.2.3 (vulnerable build)\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n" % len(BODY)
) + BODY

RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
    b"To: Bob <sip:bob@example.com>;tag=a6c85cf\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Server: PBX 13.1\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def head_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


# -- unchanged messages are byte-exact ----------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        INVITE,
        RESPONSE,
        # odd but legal spacing and spelling survive untouched
        INVITE.replace(b"Via: ", b"v:   ").replace(b"CSeq: ", b"CSEQ:\t"),
        INVITE.replace(b"Max-Forwards: 70\r\n", b"Subject: folded\r\n  across lines\r\n"),
    ],
)
def test_unchanged_message_is_byte_exact(data: bytes) -> None:
    message = parse_message(data)
    # Reading typed views is not editing.
    _ = (message.via, message.from_, message.to, message.cseq, message.contact)
    message.validate()
    assert not message.edited
    assert message.to_bytes() == data


def test_parsed_lenient_message_is_byte_exact() -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 700")
    message = parse_message(data, strict=False)
    message.collect_defects()
    assert message.to_bytes() == data


# -- editing then serialising ------------------------------------------------------------


def test_added_via_is_topmost_and_reparses() -> None:
    message = parse_message(INVITE)
    message.headers.insert_before("Via", "SIP/2.0/UDP gw.example.net:5060;branch=z9hG4bKgw1")
    assert message.edited
    out = message.to_bytes()
    lines = head_lines(out)
    assert lines[1] == b"Via: SIP/2.0/UDP gw.example.net:5060;branch=z9hG4bKgw1"
    assert lines[2] == b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds"
    again = parse_message(out)
    assert [via.host for via in again.via] == ["gw.example.net", "pc33.example.com"]
    assert again.body == BODY
    again.validate()


def test_removed_user_agent_is_gone() -> None:
    message = parse_message(INVITE)
    assert message.user_agent is not None
    assert message.headers.remove("User-Agent") == 1
    out = message.to_bytes()
    assert b"User-Agent" not in out
    assert b"FancyPhone" not in out
    assert parse_message(out).user_agent is None


def test_rewritten_server_header() -> None:
    message = parse_message(RESPONSE)
    message.headers.set("Server", "sipwarden")
    out = message.to_bytes()
    assert b"Server: sipwarden\r\n" in out
    assert b"PBX 13.1" not in out
    assert parse_message(out).server == "sipwarden"


def test_replaced_body_fixes_content_length() -> None:
    message = parse_message(INVITE)
    new_body = b"v=0\r\no=gw 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\n"
    message.set_body(new_body)
    out = message.to_bytes()
    assert out.endswith(b"\r\n\r\n" + new_body)
    assert b"Content-Length: %d\r\n" % len(new_body) in out
    assert out.count(b"Content-Length") == 1
    again = parse_message(out)
    assert again.body == new_body
    assert again.content_length == len(new_body)


def test_set_body_with_content_type() -> None:
    message = parse_message(RESPONSE)
    message.set_body(b'{"a": 1}', content_type="application/json")
    again = parse_message(message.to_bytes())
    assert again.content_type is not None
    assert again.content_type.mime == "application/json"
    assert again.body == b'{"a": 1}'
    assert again.content_length == 8


def test_emptied_body() -> None:
    message = parse_message(INVITE)
    message.set_body(b"")
    again = parse_message(message.to_bytes())
    assert again.body == b""
    assert again.content_length == 0


def test_compact_content_length_is_fixed_in_place() -> None:
    data = INVITE.replace(b"Content-Length: %d" % len(BODY), b"l: %d" % len(BODY))
    message = parse_message(data)
    message.set_body(b"x")
    out = message.to_bytes()
    assert b"Content-Length: 1\r\n" in out
    assert b"\r\nl: " not in out


def test_missing_content_length_is_added_on_edit() -> None:
    data = INVITE.replace(b"Content-Length: %d\r\n" % len(BODY), b"")
    message = parse_message(data)
    assert message.content_length is None
    message.headers.add("X-Edited", "1")
    out = message.to_bytes()
    assert parse_message(out).content_length == len(BODY)


def test_wrong_content_length_is_fixed_on_edit() -> None:
    data = INVITE.replace(b"Content-Length: %d" % len(BODY), b"Content-Length: 9999")
    message = parse_message(data, strict=False)
    message.headers.add("X-Edited", "1")
    again = parse_message(message.to_bytes())
    assert again.content_length == len(BODY)
    assert again.body == BODY


def test_duplicate_content_lengths_become_one_on_edit() -> None:
    # mcl01: two lengths parse in a datagram; what we forward has exactly one.
    data = INVITE.replace(b"Content-Length: %d\r\n" % len(BODY), b"Content-Length: 3\r\nl: 5\r\n")
    message = parse_message(data + b"xx")
    message.headers.add("X-Edited", "1")
    out = message.to_bytes()
    assert parse_message(out).headers.get_all("Content-Length") == [str(len(message.body))]


def test_conflicting_content_lengths_replaced_by_one_when_the_body_changes() -> None:
    data = INVITE.replace(b"Content-Length: %d\r\n" % len(BODY), b"Content-Length: 9\r\nl: 5\r\n")
    message = parse_message(data)
    message.set_body(b"x")
    assert parse_message(message.to_bytes()).headers.get_all("Content-Length") == ["1"]


def test_leading_crlf_not_forwarded() -> None:
    message = parse_message(b"\r\n\r\n" + RESPONSE)
    assert message.to_bytes() == RESPONSE


def test_edited_message_keeps_unedited_lines_verbatim() -> None:
    data = INVITE.replace(b"To: Bob", b"tO:\tBob")
    message = parse_message(data)
    message.headers.add("X-Edited", "1")
    assert b"\r\ntO:\tBob <sip:bob@example.com>\r\n" in message.to_bytes()


def test_request_uri_edit() -> None:
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    request_uri = message.request_uri
    assert isinstance(request_uri, SipUri)
    assert request_uri.host == "example.com"
    message.uri = "sip:bob@192.0.2.10:5080"
    assert message.edited
    assert message.to_bytes().startswith(b"INVITE sip:bob@192.0.2.10:5080 SIP/2.0\r\n")
    rewritten = message.request_uri
    assert isinstance(rewritten, SipUri)
    assert rewritten.port == 5080


@pytest.mark.parametrize("uri", ["sip:a b@c", "sip:a@b\r\nVia: x", "sip:a@b\t"])
def test_request_uri_with_whitespace_rejected(uri: str) -> None:
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    with pytest.raises(LocalProtocolError):
        message.uri = uri
    assert message.uri == "sip:bob@example.com"


def test_response_status_edit_is_serialised() -> None:
    message = parse_message(RESPONSE)
    assert isinstance(message, Response)
    message.status = 486
    message.reason = "Busy Here"
    assert message.to_bytes().startswith(b"SIP/2.0 486 Busy Here\r\n")


# -- validate() versus collect_defects() on lenient messages -------------------------------

LENIENT_RECOVERABLE = (
    INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")  # mismatch01
    .replace(b"Alice <sip:alice@example.com>", b"Alice <sip:alice@host_1.lan>")  # '_' in host
    .replace(b"Content-Type", b"Date: Sat, 13 Nov 2010 23:29:00 PST\r\nContent-Type")  # baddate
)


def test_validate_raises_the_first_error_strict_parse() -> None:
    message = parse_message(LENIENT_RECOVERABLE)
    with pytest.raises(RemoteProtocolError) as info:
        message.validate()
    assert info.value.header == "From"


def test_collect_defects_applies_the_strict_grammar_to_a_lenient_message() -> None:
    message = parse_message(LENIENT_RECOVERABLE, strict=False)
    assert message.defects == []  # the lazy parse only framed it
    defects = message.collect_defects()
    assert defects is message.defects
    assert all(isinstance(defect, Defect) for defect in defects)
    rules = [defect.rule for defect in defects]
    assert len(rules) == 3
    assert "RFC 3261 8.1.1.5 CSeq method" in rules
    assert "RFC 3261 20.17 Date" in rules
    assert all(defect.status == 400 for defect in defects)


def test_lenient_views_still_usable_after_collect_defects() -> None:
    message = parse_message(LENIENT_RECOVERABLE, strict=False)
    message.collect_defects()
    assert message.headers.strict is False
    from_ = message.from_  # recovered by the lenient name-addr grammar
    assert from_ is not None
    assert isinstance(from_.uri, SipUri)
    assert from_.uri.host == "host_1.lan"
    assert from_.tag == "1928301774"
    assert message.cseq is not None
    assert message.cseq.method == "BYE"
    assert message.to_bytes() == LENIENT_RECOVERABLE


def test_lenient_validate_is_strict_too() -> None:
    message = parse_message(LENIENT_RECOVERABLE, strict=False)
    with pytest.raises(RemoteProtocolError):
        message.validate()
    # ... and the lenient view is back afterwards.
    assert message.from_ is not None


def test_lenient_parse_defects_come_first() -> None:
    data = INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n").replace(
        b"CSeq: 314159 INVITE", b"CSeq: 314159 ACK"
    )
    message = parse_message(data, strict=False)
    assert [defect.rule for defect in message.defects] == ["RFC 3261 7 CRLF line ends"]
    assert [defect.rule for defect in message.collect_defects()] == [
        "RFC 3261 7 CRLF line ends",
        "RFC 3261 8.1.1.5 CSeq method",
    ]


def test_collect_defects_on_a_valid_message_is_empty() -> None:
    message = parse_message(INVITE, strict=False)
    assert message.collect_defects() == []
    message.validate()


def test_collect_defects_is_idempotent() -> None:
    message = parse_message(LENIENT_RECOVERABLE, strict=False)
    first = list(message.collect_defects())
    assert message.collect_defects() == first


def _read_every_view(message: Message) -> None:
    # What the detectors before the malformed one do: read views leniently.
    for view in (
        "via", "from_", "to", "call_id", "cseq", "contact", "max_forwards", "content_length",
        "content_type", "route", "record_route", "expires", "diversion", "history_info",
        "supported", "require", "proxy_require", "authorization", "proxy_authorization",
        "www_authenticate", "proxy_authenticate",
    ):  # fmt: skip
        with contextlib.suppress(RemoteProtocolError):
            getattr(message, view)


@pytest.mark.parametrize(
    "data",
    [LENIENT_RECOVERABLE, INVITE, RESPONSE]
    + [path.read_bytes() for path in sorted(shared_path("testdata", "rfc4475").glob("*.dat"))],
)
def test_collect_defects_does_not_depend_on_the_views_read_before(data: bytes) -> None:
    # The full check keeps the lenient views that strictness cannot change
    # and parses valid addresses once for both: the defects must be exactly
    # those of a message nobody read before.
    try:
        fresh = parse_message(data, strict=False)
        read = parse_message(data, strict=False)
    except RemoteProtocolError:
        return  # not even framed: there is no message to check
    _read_every_view(read)
    assert read.collect_defects() == fresh.collect_defects()
    _read_every_view(read)  # and the views read afterwards are the fresh message's
    _read_every_view(fresh)
    for view in ("from_", "to", "contact", "route", "record_route"):
        try:
            expected = repr(getattr(fresh, view))
        except RemoteProtocolError:
            continue
        assert repr(getattr(read, view)) == expected


def test_defect_from_error() -> None:
    error = RemoteProtocolError("too big", rule="max_message_size", offset=7, status_hint=513)
    defect = Defect.from_error(error)
    assert defect == Defect(rule="max_message_size", message="too big", offset=7, status=513)


# -- building from scratch -------------------------------------------------------------------


def build_options() -> Request:
    request = Request("OPTIONS", "sip:a@b.example.com", headers=Headers())
    headers = request.headers
    headers.add("Via", "SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKbuilt;rport")
    headers.add("Max-Forwards", "70")
    headers.add("From", '"Scanner" <sip:probe@192.0.2.5>;tag=abc')
    headers.add("To", "<sip:a@b.example.com>")
    headers.add("Call-ID", "built-1@192.0.2.5")
    headers.add("CSeq", "1 OPTIONS")
    headers.add("Accept", "application/sdp")
    return request


def test_built_request_serialises_and_parses_back() -> None:
    request = build_options()
    assert request.edited  # nothing to be byte-exact to
    data = request.to_bytes()
    assert data.startswith(b"OPTIONS sip:a@b.example.com SIP/2.0\r\nVia: SIP/2.0/UDP ")
    assert data.endswith(b"Content-Length: 0\r\n\r\n")
    parsed = parse_message(data)
    assert isinstance(parsed, Request)
    parsed.validate()
    assert parsed.method == "OPTIONS"
    assert parsed.uri == "sip:a@b.example.com"
    assert parsed.top_via is not None
    assert parsed.top_via.branch == "z9hG4bKbuilt"
    assert parsed.top_via.rport == ""
    assert parsed.from_ is not None
    assert parsed.from_.display_name == "Scanner"
    assert parsed.from_.tag == "abc"
    assert parsed.call_id == "built-1@192.0.2.5"
    assert parsed.cseq is not None
    assert (parsed.cseq.seq, parsed.cseq.method) == (1, "OPTIONS")
    assert parsed.max_forwards == 70
    assert parsed.content_length == 0
    assert parsed.to_bytes() == data


def test_built_request_with_body() -> None:
    request = build_options()
    request.set_body(BODY, content_type="application/sdp")
    parsed = parse_message(request.to_bytes())
    assert parsed.body == BODY
    assert parsed.content_length == len(BODY)
    assert parsed.content_type is not None
    assert parsed.content_type.mime == "application/sdp"


def test_built_request_default_headers() -> None:
    request = Request("BYE", "sip:x@y")
    assert len(request.headers) == 0
    assert request.to_bytes() == b"BYE sip:x@y SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    assert repr(request) == "<Request BYE sip:x@y>"


@pytest.mark.parametrize(("status", "reason"), [(200, "OK"), (486, "Busy Here"), (183, "")])
def test_built_response_parses_back(status: int, reason: str) -> None:
    response = Response(status, reason, headers=Headers())
    response.headers.add("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")
    response.headers.add("CSeq", "1 INVITE")
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, Response)
    assert (parsed.status, parsed.reason) == (status, reason)
    assert parsed.cseq == response.cseq
    assert repr(parsed) == f"<Response {status} {reason}>"


def test_typed_views_of_a_built_message() -> None:
    request = build_options()
    assert request.cseq is not None
    assert request.cseq.seq == 1
    request.headers.set("CSeq", "2 OPTIONS")
    assert request.cseq is not None
    assert request.cseq.seq == 2  # the cache followed the edit


def test_message_base_is_abstract() -> None:
    message = Message(headers=Headers())
    with pytest.raises(NotImplementedError):
        message.start_line()
    with pytest.raises(NotImplementedError):
        _ = message.is_request


# -- typed views on parsed messages ---------------------------------------------------------


def test_typed_views() -> None:
    data = INVITE.replace(
        b"Content-Type",
        b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
        b"Record-Route: <sip:rr.example.com;lr>\r\n"
        b"Supported: timer, 100rel\r\nRequire: 100rel\r\nProxy-Require: foo\r\n"
        b"Expires: 120\r\n"
        b"Diversion: <sip:old@example.com>;reason=unconditional\r\n"
        b"History-Info: <sip:h@example.com>;index=1\r\n"
        b'Authorization: Digest username="alice", realm="example.com", nonce="n1", '
        b'uri="sip:bob@example.com", response="6629fae49393a05397450978507c4ef1"\r\n'
        b"Authorization: NoOneKnowsThisScheme opaque-data=here\r\n"
        b'WWW-Authenticate: Digest realm="r", nonce="n", qop="auth"\r\n'
        b'Proxy-Authenticate: Digest realm="p", nonce="m"\r\n'
        b"Content-Type",
    )
    message = parse_message(data)
    message.validate()
    assert [str(route) for route in message.route] == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert [str(route) for route in message.record_route] == ["<sip:rr.example.com;lr>"]
    assert message.supported == ["timer", "100rel"]
    assert message.require == ["100rel"]
    assert message.proxy_require == ["foo"]
    assert message.expires == 120
    assert [address.param("reason") for address in message.diversion] == ["unconditional"]
    assert [address.param("index") for address in message.history_info] == ["1"]
    assert [credentials.username for credentials in message.authorization] == ["alice"]
    # Another scheme is skipped by the view but kept verbatim in the headers.
    assert message.headers.get_all("Authorization")[1].startswith("NoOneKnowsThisScheme")
    assert message.proxy_authorization == []
    assert [(challenge.realm, challenge.nonce) for challenge in message.www_authenticate] == [
        ("r", "n")
    ]
    assert [challenge.realm for challenge in message.proxy_authenticate] == ["p"]
    assert message.user_agent == "FancyPhone/1.2.3 (vulnerable build)"
    assert message.server is None
    assert message.contact_is_star is False
    assert message.max_forwards == 70
    assert message.to is not None
    assert message.to.tag is None


def test_a_message_that_validated_is_not_checked_again_for_defects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gateway validates every request, then the malformed detector asks for its
    defects: the second full parse would find nothing the first did not."""
    from sipwarden.sip import fields  # noqa: PLC0415

    message = parse_message(
        b"OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\nCall-ID: c\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    message.validate()

    def again(_message: object) -> object:
        raise AssertionError("the full check ran twice")

    monkeypatch.setattr(fields, "message_errors", again)
    assert message.collect_defects() == []
