"""Tests of sipwarden.sip.parser: datagram parsing, limits, errors, stream framing.

Every StreamParser test feeds its input whole and byte by byte and expects the
same events (DESIGN convention 8). The RFC 4475 messages are covered by
test_rfc4475.py; the messages here are small and built for one rule each.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest

from sipwarden.errors import LocalProtocolError, RemoteProtocolError
from sipwarden.sip.limits import DEFAULT_LIMITS, ParserLimits
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.parser import KeepAlive, StreamParser, parse_message

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
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n" % len(BODY)
) + BODY

OPTIONS = (
    b"OPTIONS sip:carol@chicago.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP pc33.example.com;branch=z9hG4bKhjhs8ass877\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:carol@chicago.example.com>\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 63104 OPTIONS\r\n"
    b"Accept: application/sdp\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

RESPONSE = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
    b"To: Bob <sip:bob@example.com>;tag=a6c85cf\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def raises_remote(data: bytes, **kwargs: object) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data, **kwargs)  # type: ignore[arg-type]
    return info.value


# -- datagrams: the happy path ------------------------------------------------------


def test_request_parses_and_is_byte_exact() -> None:
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    assert message.method == "INVITE"
    assert message.uri == "sip:bob@example.com"
    assert message.version == "SIP/2.0"
    assert message.is_request
    assert message.body == BODY
    assert message.defects == []
    assert message.headers.get("Call-ID") == "a84b4c76e66710@pc33.example.com"
    assert len(message.headers) == 9
    assert message.to_bytes() == INVITE
    assert bytes(message) == INVITE


def test_response_parses_and_is_byte_exact() -> None:
    message = parse_message(RESPONSE)
    assert isinstance(message, Response)
    assert not message.is_request
    assert message.status == 180
    assert message.reason == "Ringing"
    assert message.body == b""
    assert message.to_bytes() == RESPONSE


@pytest.mark.parametrize(
    ("line", "status", "reason"),
    [
        (b"SIP/2.0 200 OK", 200, "OK"),
        (b"SIP/2.0 404 Not Found Here", 404, "Not Found Here"),
        (b"SIP/2.0 699 ", 699, ""),  # empty Reason-Phrase keeps its SP (RFC 4475 noreason)
        (b"SIP/2.0 100 Trying\xc3\xa9", 100, "Trying\u00e9"),  # UTF-8 reason (RFC 4475 unreason)
    ],
)
def test_status_lines(line: bytes, status: int, reason: str) -> None:
    data = line + RESPONSE[RESPONSE.index(b"\r\n") :]
    message = parse_message(data)
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (status, reason)
    assert message.to_bytes() == data


def test_lowercase_version_is_sip_2_0() -> None:
    # ABNF literals are case-insensitive (RFC 5234 2.3).
    data = INVITE.replace(b" SIP/2.0\r\n", b" sip/2.0\r\n", 1)
    message = parse_message(data)
    assert message.version == "sip/2.0"
    assert message.to_bytes() == data


def test_leading_crlfs_are_skipped() -> None:
    # RFC 3261 7.5: CRLFs before the start line are ignored.
    message = parse_message(b"\r\n\r\n\r\n" + OPTIONS)
    assert isinstance(message, Request)
    assert message.method == "OPTIONS"
    assert message.defects == []
    assert message.to_bytes() == OPTIONS


def test_body_without_content_length_is_rest_of_datagram() -> None:
    data = INVITE.replace(b"Content-Length: %d\r\n" % len(BODY), b"")
    message = parse_message(data)
    assert message.body == BODY
    assert message.headers.get("Content-Length") is None
    assert message.content_length is None
    assert message.to_bytes() == data


def test_octets_after_the_body_are_ignored() -> None:
    # RFC 3261 18.3 / RFC 4475 dblreq: what follows Content-Length bytes is dropped.
    message = parse_message(INVITE + b"garbage after the body\r\n")
    assert message.body == BODY
    assert message.to_bytes() == INVITE


def test_content_length_zero_drops_trailing_octets() -> None:
    message = parse_message(OPTIONS + OPTIONS)
    assert message.body == b""
    assert message.to_bytes() == OPTIONS


def test_content_length_larger_than_datagram_strict() -> None:
    data = INVITE.replace(b"Content-Length: %d" % len(BODY), b"Content-Length: 9999")
    error = raises_remote(data)
    assert "18.3 Content-Length" in error.rule
    assert error.status_hint == 400
    assert error.offset == data.index(b"\r\n\r\n") + 4  # where the body starts


def test_content_length_larger_than_datagram_lenient() -> None:
    data = INVITE.replace(b"Content-Length: %d" % len(BODY), b"Content-Length: 9999")
    message = parse_message(data, strict=False)
    assert message.body == BODY  # the rest of the datagram
    assert [defect.rule for defect in message.defects] == ["RFC 3261 18.3 Content-Length"]
    assert message.defects[0].offset == data.index(b"\r\n\r\n") + 4
    assert message.to_bytes() == data


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1e3", b"12345678901", b""])
def test_bad_content_length_value(value: bytes) -> None:
    data = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: " + value)
    error = raises_remote(data)
    assert error.rule == "RFC 3261 20.14 Content-Length"
    message = parse_message(data, strict=False)
    assert [defect.rule for defect in message.defects] == ["RFC 3261 20.14 Content-Length"]


def lf_only(message: bytes) -> bytes:
    """The header section with bare LF line ends; the body as it was."""
    head, _, body = message.partition(b"\r\n\r\n")
    return head.replace(b"\r\n", b"\n") + b"\n\n" + body


def test_bare_lf_line_ends_rejected_strictly() -> None:
    data = lf_only(INVITE)
    error = raises_remote(data)
    assert error.status_hint == 400
    assert "7 " in error.rule


def test_bare_lf_line_ends_recovered_leniently() -> None:
    data = lf_only(INVITE)
    message = parse_message(data, strict=False)
    assert isinstance(message, Request)
    assert message.body == BODY
    assert message.cseq is not None
    assert message.cseq.seq == 314159
    assert message.call_id == "a84b4c76e66710@pc33.example.com"
    assert [defect.rule for defect in message.defects] == ["RFC 3261 7 CRLF line ends"]
    # The first bare LF ends the request line.
    assert message.defects[0].offset == data.index(b"\n")


def test_one_bare_lf_inside_a_crlf_message() -> None:
    data = b"\r\n" + INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n")
    error = raises_remote(data)
    assert error.rule == "RFC 3261 7 CRLF line ends"
    assert error.offset == data.index(b"70\n") + 2  # the LF itself
    message = parse_message(data, strict=False)
    assert message.max_forwards == 70
    assert message.headers.get("To") == "Bob <sip:bob@example.com>"
    assert [defect.offset for defect in message.defects] == [error.offset]


def test_bare_cr_inside_the_header_section() -> None:
    data = OPTIONS.replace(b"Accept: application/sdp\r\n", b"Accept: application/sdp\rX: y\r\n")
    error = raises_remote(data)
    assert error.rule == "RFC 3261 7 CRLF line ends"
    message = parse_message(data, strict=False)
    assert message.headers.get("X") == "y"


def test_header_section_without_empty_line() -> None:
    cut_after_crlf = OPTIONS[:-2]
    error = raises_remote(cut_after_crlf)
    assert error.rule == "RFC 3261 7 message-header CRLF"
    assert error.offset == len(cut_after_crlf)
    # The monitor takes a capture whose header section ends at a line end...
    assert parse_message(cut_after_crlf, strict=False).headers.get("Content-Length") == "0"
    # ...but a section cut in the middle of a line cannot be framed in either mode.
    cut_mid_line = OPTIONS[:-4]
    raises_remote(cut_mid_line)
    raises_remote(cut_mid_line, strict=False)


def test_compact_forms() -> None:
    data = (
        b"OPTIONS sip:b@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/TCP h.example.com;branch=z9hG4bKx\r\n"
        b"f: <sip:a@example.com>;tag=1\r\n"
        b"t: <sip:b@example.com>\r\n"
        b"i: x@y\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"m: <sip:a@h.example.com>\r\n"
        b"k: timer, 100rel\r\n"
        b"c: application/sdp\r\n"
        b"s: hello\r\n"
        b"l: 3\r\n"
        b"\r\n"
        b"abc"
    )
    message = parse_message(data)
    assert message.top_via is not None
    assert message.top_via.host == "h.example.com"
    assert message.from_ is not None
    assert message.from_.tag == "1"
    assert str(message.to) == "<sip:b@example.com>"
    assert message.call_id == "x@y"
    assert [str(address) for address in message.contact] == ["<sip:a@h.example.com>"]
    assert message.supported == ["timer", "100rel"]
    assert message.content_type is not None
    assert message.content_type.mime == "application/sdp"
    assert message.headers.get("Subject") == "hello"
    assert message.content_length == 3
    assert message.body == b"abc"
    message.validate()
    assert message.to_bytes() == data


def test_folded_header_joined_with_one_space_raw_kept() -> None:
    # RFC 3261 7.3.1: folding is LWS, equivalent to one SP.
    data = INVITE.replace(
        b"Max-Forwards: 70\r\n",
        b"Max-Forwards: 70\r\nSubject: I know you're there,\r\n   \t pick up the phone\r\n"
        b"\tand talk to me!\r\n",
    )
    message = parse_message(data)
    assert message.headers.get("Subject") == (
        "I know you're there, pick up the phone and talk to me!"
    )
    assert message.to_bytes() == data
    # Still byte-exact for the folded line after an unrelated edit.
    message.headers.add("X-Edited", "1")
    assert b"\r\n   \t pick up the phone\r\n\tand talk to me!\r\n" in message.to_bytes()


def test_folded_via_parses() -> None:
    data = OPTIONS.replace(
        b"Via: SIP/2.0/TCP pc33.example.com;branch=z9hG4bKhjhs8ass877\r\n",
        b"Via: SIP/2.0/TCP pc33.example.com\r\n ;branch=z9hG4bKhjhs8ass877\r\n",
    )
    message = parse_message(data)
    assert message.top_via is not None
    assert message.top_via.branch == "z9hG4bKhjhs8ass877"
    message.validate()
    assert message.to_bytes() == data


def test_continuation_before_any_header() -> None:
    data = b"OPTIONS sip:b@c SIP/2.0\r\n folded\r\nCSeq: 1 OPTIONS\r\n\r\n"
    error = raises_remote(data)
    assert error.rule == "RFC 3261 7.3.1 folding"
    assert error.offset == data.index(b" folded")
    message = parse_message(data, strict=False)
    assert message.headers.keys() == ["cseq"]


@pytest.mark.parametrize(
    ("head", "rule"),
    [
        (b"OPTIONS  sip:b@c SIP/2.0", "RFC 3261 25.1 Request-Line"),
        (b"OPTIONS sip:b@c SIP/2.0 ", "RFC 3261 25.1 Request-Line"),
        (b"OPTIONS sip:b@c", "RFC 3261 25.1 Request-Line"),
        (b"OPT\xffIONS sip:b@c SIP/2.0", "RFC 3261 25.1 Method"),
        (b"OPTIONS sip:b@c SIP/two", "RFC 3261 25.1 SIP-Version"),
        (b"SIP/2.0 20 OK", "RFC 3261 25.1 Status-Code"),
        (b"SIP/2.0 700 Huh", "RFC 3261 25.1 Status-Code"),
        (b"SIP/2.0 2000 OK", "RFC 3261 25.1 Status-Code"),
        (b"SIP/2.0 200", "RFC 3261 25.1 Status-Line"),
        (b"SIP/2.0 200 O\x01K", "RFC 3261 25.1 Reason-Phrase"),
    ],
)
def test_bad_start_lines(head: bytes, rule: str) -> None:
    error = raises_remote(head + b"\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert error.rule == rule
    assert error.status_hint == 400


def test_start_line_with_two_parts_cannot_be_recovered() -> None:
    error = raises_remote(b"OPTIONS sip:b@c\r\nCSeq: 1 OPTIONS\r\n\r\n", strict=False)
    assert error.rule == "RFC 3261 7.1 start-line"


def test_extra_spaces_in_the_request_line_recovered_leniently() -> None:
    data = b"OPTIONS  sip:b@c   SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n"
    message = parse_message(data, strict=False)
    assert isinstance(message, Request)
    assert (message.method, message.uri, message.version) == ("OPTIONS", "sip:b@c", "SIP/2.0")
    assert [defect.rule for defect in message.defects] == ["RFC 3261 25.1 Request-Line"]


def test_unsupported_version_hints_505() -> None:
    data = b"\r\n" + OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1)
    error = raises_remote(data)
    assert error.status_hint == 505
    assert error.offset == data.index(b"SIP/7.0")
    message = parse_message(data, strict=False)
    assert message.version == "SIP/7.0"
    assert [defect.status for defect in message.defects] == [505]


def test_status_code_error_offset_points_at_the_code() -> None:
    data = b"\r\nSIP/2.0 7000 OK\r\nCSeq: 1 OPTIONS\r\n\r\n"
    error = raises_remote(data)
    assert error.offset == data.index(b"7000")
    # The status code cannot be recovered: it raises in lenient mode too.
    raises_remote(data, strict=False)


def test_bad_header_name_offset_points_at_the_line() -> None:
    data = b"\r\n" + OPTIONS.replace(b"Accept:", b"Bad Name:")
    error = raises_remote(data)
    assert error.rule == "RFC 3261 25.1 message-header"
    assert error.offset == data.index(b"Bad Name")
    message = parse_message(data, strict=False)
    assert "accept" not in message.headers
    assert message.defects[0].offset == error.offset


@pytest.mark.parametrize(
    "line", [b"No colon here", b": no name", b"Na\xffme: v", b"Name\x00: v", b"Via : ok"]
)
def test_header_lines_without_a_token_name(line: bytes) -> None:
    data = OPTIONS.replace(b"Accept: application/sdp", line)
    if line == b"Via : ok":
        # header-name HCOLON: HCOLON = *( SP / HTAB ) ":" SWS, so this is legal.
        assert parse_message(data).headers.get_all("Via")[-1] == "ok"
        return
    error = raises_remote(data)
    assert error.rule == "RFC 3261 25.1 message-header"
    assert error.offset == data.index(line)


def test_method_may_be_any_token() -> None:
    data = OPTIONS.replace(b"OPTIONS sip", b"NEWMETHOD sip").replace(b"63104 OPTIONS", b"1 N")
    message = parse_message(data)
    assert isinstance(message, Request)
    assert message.method == "NEWMETHOD"


def test_non_utf8_header_bytes_survive() -> None:
    data = OPTIONS.replace(b"Accept: application/sdp", b"Subject: \xff\xfe\x80")
    message = parse_message(data)
    assert message.to_bytes() == data
    message.headers.add("X-Edited", "1")
    assert b"Subject: \xff\xfe\x80\r\n" in message.to_bytes()


# -- limits -------------------------------------------------------------------------


def test_default_limits() -> None:
    assert ParserLimits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_message_size == 65536


def test_message_size_limit_default() -> None:
    data = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 70000") + b"x" * 70000
    error = raises_remote(data)
    assert error.rule == "max_message_size"
    assert error.status_hint == 513
    assert error.offset == DEFAULT_LIMITS.max_message_size
    # Too large is not a defect the monitor can skip: the size bound holds there too.
    assert raises_remote(data, strict=False).status_hint == 513


def test_message_size_limit_configured_smaller() -> None:
    limits = ParserLimits(max_message_size=len(INVITE) - 1)
    error = raises_remote(INVITE, limits=limits)
    assert error.status_hint == 513
    assert error.offset == len(INVITE) - 1
    assert parse_message(INVITE, limits=ParserLimits(max_message_size=len(INVITE))).body == BODY


def test_message_size_limit_configured_larger() -> None:
    body = b"x" * 100_000
    data = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 100000") + body
    raises_remote(data)
    message = parse_message(data, limits=ParserLimits(max_message_size=200_000))
    assert message.body == body


def header_lines(count: int) -> bytes:
    return b"".join(b"X-H%d: v\r\n" % index for index in range(count))


def test_header_count_limit_default() -> None:
    allowed = DEFAULT_LIMITS.max_header_count
    ok = b"OPTIONS sip:b@c SIP/2.0\r\n" + header_lines(allowed) + b"\r\n"
    assert len(parse_message(ok).headers) == allowed
    too_many = b"OPTIONS sip:b@c SIP/2.0\r\n" + header_lines(allowed + 1) + b"\r\n"
    error = raises_remote(too_many)
    assert error.rule == "max_header_count"
    assert error.status_hint == 400
    assert error.offset is not None
    assert 0 <= error.offset < len(too_many)
    raises_remote(too_many, strict=False)


def test_header_count_limit_configured() -> None:
    smaller = ParserLimits(max_header_count=5)
    assert raises_remote(INVITE, limits=smaller).rule == "max_header_count"
    data = b"OPTIONS sip:b@c SIP/2.0\r\n" + header_lines(500) + b"\r\n"
    raises_remote(data)
    assert len(parse_message(data, limits=ParserLimits(max_header_count=500)).headers) == 500


def test_line_length_limit_default() -> None:
    limit = DEFAULT_LIMITS.max_line_length
    prefix = b"X-Long: "
    ok = OPTIONS.replace(b"Accept: application/sdp", prefix + b"a" * (limit - len(prefix)))
    assert len(parse_message(ok).headers.get("X-Long") or "") == limit - len(prefix)
    data = OPTIONS.replace(b"Accept: application/sdp", prefix + b"a" * (limit - len(prefix) + 1))
    error = raises_remote(data)
    assert error.rule == "max_line_length"
    assert error.offset == data.index(prefix)


def test_line_length_limit_configured() -> None:
    smaller = ParserLimits(max_line_length=40)
    data = b"\r\n" + INVITE
    error = raises_remote(data, limits=smaller)
    assert error.rule == "max_line_length"
    assert error.offset == data.index(b"Via:")  # the first line longer than 40
    long_line = OPTIONS.replace(b"Accept: application/sdp", b"X-Long: " + b"a" * 10_000)
    raises_remote(long_line)
    larger = ParserLimits(max_line_length=20_000)
    assert parse_message(long_line, limits=larger).headers.get("X-Long") == "a" * 10_000


def test_line_length_limit_counts_physical_lines_when_folded_short() -> None:
    # Short folded pieces of a field that stays under the limit are fine.
    data = b"OPTIONS sip:b@c SIP/2.0\r\nSubject: a\r\n b\r\n c\r\nl: 0\r\n\r\n"
    message = parse_message(data, limits=ParserLimits(max_line_length=40))
    assert message.headers.get("Subject") == "a b c"


def test_line_length_limit_applies_to_the_whole_folded_field() -> None:
    folded = b"Subject: a\r\n" + b"".join(b" " + b"x" * 30 + b"\r\n" for _ in range(100))
    data = b"OPTIONS sip:b@c SIP/2.0\r\n" + folded + b"l: 0\r\n\r\n"
    error = raises_remote(data, limits=ParserLimits(max_line_length=1000))
    assert error.rule == "max_line_length"


@pytest.mark.parametrize(
    ("data", "marker", "shift"),
    [
        (
            "OPTIONS sip:b@c SIP/2.0\r\nSubject: h\u00e9llo\r\nMax-Forwards: 70\n"
            "CSeq: 1 OPTIONS\r\n\r\n".encode(),
            b"70\n",
            2,
        ),
        ("OPTIONS sip:b\u00e9@c SIP/2.1\r\nCSeq: 1 OPTIONS\r\n\r\n".encode(), b"SIP/2.1", 0),
    ],
)
def test_offsets_are_byte_offsets_after_utf8(data: bytes, marker: bytes, shift: int) -> None:
    assert raises_remote(data).offset == data.index(marker) + shift


def test_errors_carry_rule_offset_status_and_say_so() -> None:
    error = raises_remote(b"SIP/2.0 2000 OK\r\n\r\n")
    assert isinstance(error.rule, str)
    assert error.rule
    assert isinstance(error.offset, int)
    assert error.status_hint == 400
    assert f"at byte {error.offset}" in str(error)
    assert error.rule in str(error)


# -- StreamParser -------------------------------------------------------------------

Event = KeepAlive | tuple[str, bytes]


def summary(event: Message | KeepAlive) -> Event:
    if isinstance(event, KeepAlive):
        return event
    return (type(event).__name__, event.to_bytes())


def drain(parser: StreamParser, chunks: Iterable[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        parser.feed(chunk)
        while (event := parser.next_event()) is not None:
            events.append(summary(event))
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[index : index + 1] for index in range(len(data))]


def stream_events(data: bytes, **kwargs: object) -> list[Event]:
    """The events for ``data`` fed whole; asserts byte-by-byte feeding gives the same."""
    whole = drain(StreamParser(**kwargs), [data])  # type: ignore[arg-type]
    split = drain(StreamParser(**kwargs), bytewise(data))  # type: ignore[arg-type]
    assert split == whole
    return whole


def stream_error(data: bytes, **kwargs: object) -> RemoteProtocolError:
    """The error for ``data`` fed whole; asserts byte-by-byte feeding raises the same rule."""
    errors: list[RemoteProtocolError] = []
    for chunks in ([data], bytewise(data)):
        with pytest.raises(RemoteProtocolError) as info:
            drain(StreamParser(**kwargs), chunks)  # type: ignore[arg-type]
        errors.append(info.value)
    assert errors[0].rule == errors[1].rule
    assert errors[0].status_hint == errors[1].status_hint
    return errors[0]


def test_stream_one_message() -> None:
    assert stream_events(INVITE) == [("Request", INVITE)]


def test_stream_message_fields() -> None:
    parser = StreamParser()
    parser.feed(INVITE)
    message = parser.next_event()
    assert isinstance(message, Request)
    assert message.body == BODY
    assert message.cseq is not None
    assert message.cseq.method == "INVITE"
    assert parser.next_event() is None
    assert parser.buffered == 0


def test_stream_two_pipelined_messages_in_one_feed() -> None:
    assert stream_events(INVITE + RESPONSE) == [("Request", INVITE), ("Response", RESPONSE)]


def test_stream_many_pipelined_messages() -> None:
    data = (OPTIONS + INVITE + RESPONSE) * 5
    events = stream_events(data)
    assert [event[1] for event in events if isinstance(event, tuple)] == [
        OPTIONS,
        INVITE,
        RESPONSE,
    ] * 5


def test_stream_partial_message_waits() -> None:
    parser = StreamParser()
    parser.feed(INVITE[:-1])
    assert parser.next_event() is None
    assert parser.buffered == len(INVITE) - 1
    parser.feed(INVITE[-1:])
    assert isinstance(parser.next_event(), Request)
    assert parser.buffered == 0


def test_stream_ping_then_message() -> None:
    # RFC 5626 3.5.1: CRLF CRLF is a ping.
    assert stream_events(b"\r\n\r\n" + OPTIONS) == [KeepAlive("ping"), ("Request", OPTIONS)]


def test_stream_pong_then_message() -> None:
    # RFC 5626 3.5.1: a single CRLF is a pong.
    assert stream_events(b"\r\n" + OPTIONS) == [KeepAlive("pong"), ("Request", OPTIONS)]


def test_stream_keepalives_between_messages() -> None:
    data = OPTIONS + b"\r\n\r\n" + RESPONSE + b"\r\n" + OPTIONS
    assert stream_events(data) == [
        ("Request", OPTIONS),
        KeepAlive("ping"),
        ("Response", RESPONSE),
        KeepAlive("pong"),
        ("Request", OPTIONS),
    ]


def test_stream_keepalives_before_the_first_message() -> None:
    data = b"\r\n\r\n" + OPTIONS + b"\r\n\r\n" + RESPONSE + b"\r\n" + OPTIONS
    assert stream_events(data) == [
        KeepAlive("ping"),
        ("Request", OPTIONS),
        KeepAlive("ping"),
        ("Response", RESPONSE),
        KeepAlive("pong"),
        ("Request", OPTIONS),
    ]


def test_stream_lone_crlf_waits_for_more() -> None:
    parser = StreamParser()
    parser.feed(b"\r\n")
    assert parser.next_event() is None  # it could still become a ping
    parser.feed(b"\r\n")
    assert parser.next_event() == KeepAlive("ping")


def test_stream_ping_fed_byte_by_byte() -> None:
    # CRLF CR is not yet a pong: it may still become a ping.
    assert stream_events(b"\r\n\r\n") == [KeepAlive("ping")]
    parser = StreamParser()
    parser.feed(b"\r\n\r")
    assert parser.next_event() is None


def test_stream_ping_fed_in_two_halves() -> None:
    assert drain(StreamParser(), [b"\r\n", b"\r\n"]) == [KeepAlive("ping")]


def test_stream_missing_content_length_is_an_error() -> None:
    # RFC 3261 18.3: mandatory on stream transports, the framing depends on it.
    data = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    error = stream_error(data)
    assert error.rule == "RFC 3261 18.3 Content-Length on streams"
    assert error.status_hint == 400


def test_stream_missing_content_length_lenient_is_a_defect() -> None:
    data = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    parser = StreamParser(strict=False)
    parser.feed(data)
    message = parser.next_event()
    assert isinstance(message, Request)
    assert [defect.rule for defect in message.defects] == [
        "RFC 3261 18.3 Content-Length on streams"
    ]
    assert message.body == b""


@pytest.mark.parametrize(
    "second", [b"Content-Length: 5\r\n", b"l: 5\r\n", b"content-length: 1000\r\n"]
)
def test_stream_conflicting_content_length_is_an_error(second: bytes) -> None:
    # Request smuggling: whichever length a next hop believes, the other hides a message.
    data = OPTIONS.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\n" + second)
    error = stream_error(data + b"x" * 1000)
    assert error.rule == "RFC 3261 20.14 Content-Length"


def test_stream_repeated_equal_content_length_is_accepted() -> None:
    data = OPTIONS.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 0\r\n")
    assert stream_events(data) == [("Request", data)]


def test_stream_conflicting_content_length_in_a_datagram_parses() -> None:
    # In a datagram the datagram is the framing; the proxy checks answer 400 (mcl01).
    data = OPTIONS.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 5\r\n")
    assert parse_message(data).headers.get_all("Content-Length") == ["0", "5"]


def test_stream_error_is_sticky() -> None:
    parser = StreamParser()
    parser.feed(OPTIONS.replace(b"Content-Length: 0\r\n", b""))
    with pytest.raises(RemoteProtocolError) as first:
        parser.next_event()
    with pytest.raises(RemoteProtocolError) as second:
        parser.next_event()
    assert second.value is first.value
    with pytest.raises(LocalProtocolError):
        parser.feed(OPTIONS)
    with pytest.raises(RemoteProtocolError):
        parser.next_event()


def test_stream_bad_start_line_is_an_error() -> None:
    error = stream_error(b"GARBAGE\r\n\r\n" + OPTIONS)
    assert error.rule == "RFC 3261 25.1 Request-Line"


def test_stream_endless_header_section_is_cut_at_the_size_limit() -> None:
    limits = ParserLimits(max_message_size=2000)
    data = b"OPTIONS sip:b@c SIP/2.0\r\n" + b"X-Flood: aaaaaaaa\r\n" * 200
    error = stream_error(data, limits=limits)
    assert error.rule == "max_message_size"
    assert error.status_hint == 513
    # Byte by byte, the error comes as soon as the buffer passes the limit.
    parser = StreamParser(limits=limits)
    for index in range(len(data)):
        parser.feed(data[index : index + 1])
        if index < 2000:
            assert parser.next_event() is None
        else:
            with pytest.raises(RemoteProtocolError):
                parser.next_event()
            break
    assert parser.buffered == 2001


def test_stream_endless_header_section_default_limit() -> None:
    parser = StreamParser()
    chunk = b"X-Flood: " + b"a" * 1000 + b"\r\n"
    parser.feed(b"OPTIONS sip:b@c SIP/2.0\r\n")
    fed = 0
    while parser.buffered <= DEFAULT_LIMITS.max_message_size:
        parser.feed(chunk)
        fed += 1
        assert fed < 100
        if parser.buffered <= DEFAULT_LIMITS.max_message_size:
            assert parser.next_event() is None
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_event()
    assert info.value.status_hint == 513
    assert parser.buffered <= DEFAULT_LIMITS.max_message_size + len(chunk)


def test_stream_body_larger_than_the_limit() -> None:
    limits = ParserLimits(max_message_size=1000)
    data = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 5000")
    error = stream_error(data, limits=limits)
    assert error.rule == "max_message_size"
    assert error.status_hint == 513


def test_stream_configured_larger_limit() -> None:
    body = b"x" * 100_000
    data = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 100000") + body
    stream_error(data)
    parser = StreamParser(limits=ParserLimits(max_message_size=200_000))
    parser.feed(data)
    message = parser.next_event()
    assert isinstance(message, Request)
    assert message.body == body


def test_stream_lenient_bad_header_is_a_defect() -> None:
    data = OPTIONS.replace(b"Accept: application/sdp", b"Bad Name: x")
    events = stream_events(data, strict=False)
    assert events == [("Request", data)]
    parser = StreamParser(strict=False)
    parser.feed(data)
    message = parser.next_event()
    assert isinstance(message, Request)
    assert [defect.rule for defect in message.defects] == ["RFC 3261 25.1 message-header"]


def test_stream_slow_sender_costs_linear_time() -> None:
    # h11's receive-buffer property: the search for CRLF CRLF resumes where it
    # stopped, so 60 KB one byte at a time is O(n), not O(n**2).
    line = b"X-Padding: " + b"p" * 500 + b"\r\n"
    head = b"OPTIONS sip:b@c SIP/2.0\r\n" + line * 115
    body = b"b" * 3000
    data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    assert 60_000 <= len(data) <= DEFAULT_LIMITS.max_message_size
    limits = ParserLimits(max_header_count=200)
    parser = StreamParser(limits=limits)
    events: list[Message | KeepAlive] = []
    started = time.perf_counter()
    for index in range(len(data)):
        parser.feed(data[index : index + 1])
        event = parser.next_event()
        if event is not None:
            events.append(event)
    elapsed = time.perf_counter() - started
    assert len(events) == 1
    assert isinstance(events[0], Request)
    assert events[0].body == body
    # Linear is ~0.1 s here; a quadratic search would be tens of seconds.
    assert elapsed < 1.0, f"{elapsed:.2f} s for {len(data)} bytes fed one at a time"
