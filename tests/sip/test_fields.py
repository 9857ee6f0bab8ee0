"""Tests of sipwarden.sip.fields: the typed header views and the full grammar check.

Table-driven: each row is a header value and either the value the view must
give or the rule a strict parse must name (fail2ban's "sample input annotated
with the expected result").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sipwarden.errors import RemoteProtocolError
from sipwarden.sip import fields
from sipwarden.sip.headers import Headers
from sipwarden.sip.message import Message
from sipwarden.sip.parser import parse_message


class Rule:
    """An expected error: the rule (a substring of it) a strict parse must name."""

    def __init__(self, rule: str) -> None:
        self.rule = rule

    def __repr__(self) -> str:
        return f"Rule({self.rule!r})"


def headers_with(*pairs: tuple[str, str], strict: bool = True) -> Headers:
    headers = Headers(strict=strict)
    for name, value in pairs:
        headers.add(name, value)
    return headers


def check(
    parse: Callable[[Headers], Any],
    name: str,
    value: str,
    expected: object,
    convert: Callable[[Any], object] = lambda result: result,
) -> RemoteProtocolError | None:
    headers = headers_with((name, value))
    if isinstance(expected, Rule):
        with pytest.raises(RemoteProtocolError) as info:
            parse(headers)
        assert expected.rule in info.value.rule
        return info.value
    assert convert(parse(headers)) == expected
    return None


# -- Via (RFC 3261 20.42) ---------------------------------------------------------------


def via_summary(vias: list[fields.Via]) -> list[tuple[object, ...]]:
    return [
        (via.protocol, via.version, via.transport, via.host, via.port, via.params) for via in vias
    ]


VIA_CASES: list[tuple[str, object]] = [
    ("SIP/2.0/UDP h.example.com", [("SIP", "2.0", "UDP", "h.example.com", None, ())]),
    (
        "SIP/2.0/UDP h.example.com:5060;branch=z9hG4bK776",
        [("SIP", "2.0", "UDP", "h.example.com", 5060, (("branch", "z9hG4bK776"),))],
    ),
    # SLASH = SWS "/" SWS, and LWS between sent-protocol and sent-by
    (
        "SIP / 2.0 / TCP\t h:5061 ;branch=z9hG4bK1",
        [("SIP", "2.0", "TCP", "h", 5061, (("branch", "z9hG4bK1"),))],
    ),
    # EQUAL = SWS "=" SWS, SEMI = SWS ";" SWS
    (
        "SIP/2.0/TLS h ; branch = z9hG4bK1",
        [("SIP", "2.0", "TLS", "h", None, (("branch", "z9hG4bK1"),))],
    ),
    ("SIP/2.0/udp h", [("SIP", "2.0", "UDP", "h", None, ())]),  # transport upper-cased
    ("SIP/2.0/SCTP 192.0.2.1:0", [("SIP", "2.0", "SCTP", "192.0.2.1", 0, ())]),
    ("SIP/2.0/WSS h:65535", [("SIP", "2.0", "WSS", "h", 65535, ())]),
    ("SIP/2.0/UDP [2001:db8::1]", [("SIP", "2.0", "UDP", "[2001:db8::1]", None, ())]),
    (
        "SIP/2.0/UDP [2001:db8::1]:5060;received=2001:db8::9;rport=5062",
        [
            (
                "SIP",
                "2.0",
                "UDP",
                "[2001:db8::1]",
                5060,
                (("received", "2001:db8::9"), ("rport", "5062")),
            )
        ],
    ),
    (
        "SIP/2.0/UDP [::ffff:192.0.2.1]:5060;received=[2001:db8::9]",
        [("SIP", "2.0", "UDP", "[::ffff:192.0.2.1]", 5060, (("received", "[2001:db8::9]"),))],
    ),
    (
        "SIP/2.0/UDP h;rport;branch=z9hG4bK1;received=192.0.2.7",
        [
            (
                "SIP",
                "2.0",
                "UDP",
                "h",
                None,
                (("rport", None), ("branch", "z9hG4bK1"), ("received", "192.0.2.7")),
            )
        ],
    ),
    (
        "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b:5070",
        [
            ("SIP", "2.0", "UDP", "a", None, (("branch", "z9hG4bK1"),)),
            ("SIP", "2.0", "TCP", "b", 5070, ()),
        ],
    ),
    (
        'SIP/2.0/UDP h;x-ext="quoted value"',
        [("SIP", "2.0", "UDP", "h", None, (("x-ext", '"quoted value"'),))],
    ),
    ("SIP/2.0/UDP h:65536", Rule("sent-by port")),
    ("SIP/2.0/UDP h:99999", Rule("sent-by port")),
    ("SIP/2.0/UDP h;", Rule("via-params")),  # empty parameter
    ("SIP/2.0/UDP h;;branch=z9hG4bK1", Rule("via-params")),
    ("SIP/2.0/UDP h;branch=z9hG4bK1;", Rule("via-params")),
    ("SIP/2.0/UDP h;branch=", Rule("via-params")),
    ("SIP/2.0/UDP h;=x", Rule("via-params")),
    ("SIP/2.0/UDP h garbage", Rule("via-params")),
    ("SIP/2.0/UDP h, , SIP/2.0/UDP i", Rule("via-parm")),  # empty element (badinv01)
    ("SIP/2.0/UDP h,", Rule("via-parm")),
    ("SIP/2.0/UDP", Rule("via-parm")),
    ("SIP/2.0 h", Rule("via-parm")),
    ("SIP/2.0/UDP/h", Rule("via-parm")),
    ("SIP/2.0/UDP [2001:db8::1", Rule("via")),
    ("SIP/2.0/UDP h_1", Rule("via")),
    ("", Rule("via-parm")),
]


@pytest.mark.parametrize(("value", "expected"), VIA_CASES)
def test_via(value: str, expected: object) -> None:
    check(fields.parse_via_headers, "Via", value, expected, via_summary)


def test_via_param_accessors() -> None:
    via = fields.parse_via(
        "SIP/2.0/UDP [2001:db8::1]:5060;BRANCH=z9hG4bKabc;Received=2001:db8::2;rport"
    )
    assert via.branch == "z9hG4bKabc"  # parameter names are case-insensitive
    assert via.received == "2001:db8::2"
    assert via.rport == ""  # a flag
    assert via.param("maddr") is None
    assert via.sent_by == "[2001:db8::1]:5060"
    assert str(via) == "SIP/2.0/UDP [2001:db8::1]:5060;BRANCH=z9hG4bKabc;Received=2001:db8::2;rport"
    assert fields.parse_via("SIP/2.0/UDP h").sent_by == "h"


@pytest.mark.parametrize(
    ("value", "offset"),
    [
        ("SIP/2.0/UDP h;;branch=1", 13),  # the empty parameter
        ("SIP/2.0/UDP h;branch=1;;x", 22),
        ("SIP/2.0/UDP h:70000", 14),  # the port
    ],
)
def test_via_error_offsets(value: str, offset: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        fields.parse_via(value)
    assert info.value.offset == offset


def test_via_parameter_count_is_bounded() -> None:
    many = "SIP/2.0/UDP h" + "".join(f";p{index}={index}" for index in range(100))
    with pytest.raises(RemoteProtocolError):
        fields.parse_via(many)


@pytest.mark.parametrize(
    ("parse", "name", "value"),
    [
        (fields.parse_via_headers, "Via", "SIP/2.0/UDP h;;x"),
        (fields.parse_via_headers, "Via", "SIP/2.0 h"),
        (fields.parse_content_type, "Content-Type", "application/sdp;"),
    ],
)
def test_field_errors_name_their_header(
    parse: Callable[[Headers], object], name: str, value: str
) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse(headers_with((name, value)))
    assert info.value.header == name


# -- CSeq (RFC 3261 20.16, 8.1.1.5) -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4711 INVITE", (4711, "INVITE")),
        ("0 ACK", (0, "ACK")),
        (f"{2**31 - 1} REGISTER", (2**31 - 1, "REGISTER")),
        ("1\tBYE", (1, "BYE")),
        ("1   NEWMETHOD", (1, "NEWMETHOD")),  # any token is a method
        ("007 OPTIONS", (7, "OPTIONS")),
        (f"{2**31} INVITE", Rule("8.1.1.5 CSeq")),  # "MUST be less than 2**31"
        ("99999999999999999999 INVITE", Rule("8.1.1.5 CSeq")),
        ("-1 INVITE", Rule("20.16 CSeq")),
        ("INVITE", Rule("20.16 CSeq")),
        ("1", Rule("20.16 CSeq")),
        ("1INVITE", Rule("20.16 CSeq")),
        ("1 INV ITE", Rule("20.16 CSeq")),
        ("1 INV/ITE", Rule("20.16 CSeq")),
        ("1.5 INVITE", Rule("20.16 CSeq")),
        ("", Rule("20.16 CSeq")),
    ],
)
def test_cseq(value: str, expected: object) -> None:
    error = check(fields.parse_cseq, "CSeq", value, expected, lambda cseq: (cseq.seq, cseq.method))
    if error is not None:
        assert error.header == "CSeq"


def test_cseq_value_semantics() -> None:
    assert fields.CSeq(1, "INVITE") == fields.CSeq(1, "INVITE")
    assert fields.CSeq(1, "INVITE") != fields.CSeq(1, "ACK")
    assert len({fields.CSeq(1, "INVITE"), fields.CSeq(1, "INVITE")}) == 1
    assert str(fields.CSeq(2, "BYE")) == "2 BYE"


# -- scalars: Max-Forwards, Expires, Content-Length ---------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("70", 70),
        ("255", 255),
        ("0070", 70),
        ("256", Rule("20.22 Max-Forwards")),  # RFC 3261 8.1.1.6: 0-255
        ("-1", Rule("20.22 Max-Forwards")),
        ("7 0", Rule("20.22 Max-Forwards")),
        ("seventy", Rule("20.22 Max-Forwards")),
        ("", Rule("20.22 Max-Forwards")),
        ("99999999999999", Rule("20.22 Max-Forwards")),
    ],
)
def test_max_forwards(value: str, expected: object) -> None:
    check(fields.parse_max_forwards, "Max-Forwards", value, expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("3600", 3600),
        (str(2**32 - 1), 2**32 - 1),
        (str(2**32), Rule("20.19 Expires")),
        ("1.5", Rule("20.19 Expires")),
        ("-5", Rule("20.19 Expires")),
        ("Thu, 01 Dec 1994 16:00:00 GMT", Rule("20.19 Expires")),  # RFC 2543 dates are gone
        ("", Rule("20.19 Expires")),
    ],
)
def test_expires(value: str, expected: object) -> None:
    check(fields.parse_expires, "Expires", value, expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("1234", 1234),
        (str(2**32 - 1), 2**32 - 1),
        (str(2**32), Rule("20.14 Content-Length")),
        ("-1", Rule("20.14 Content-Length")),
        ("1 2", Rule("20.14 Content-Length")),
    ],
)
def test_content_length(value: str, expected: object) -> None:
    check(fields.parse_content_length, "l", value, expected)


def test_absent_headers_give_none_or_empty() -> None:
    headers = Headers()
    assert fields.parse_via_headers(headers) == []
    assert fields.parse_cseq(headers) is None
    assert fields.parse_call_id(headers) is None
    assert fields.parse_max_forwards(headers) is None
    assert fields.parse_expires(headers) is None
    assert fields.parse_content_length(headers) is None
    assert fields.parse_content_type(headers) is None
    assert fields.parse_from(headers) is None
    assert fields.parse_to(headers) is None
    assert fields.parse_contact(headers) == []
    assert fields.parse_contact_star(headers) is False
    assert fields.parse_route(headers) == []
    assert fields.parse_record_route(headers) == []
    assert fields.parse_supported(headers) == []
    assert fields.parse_require(headers) == []
    assert fields.parse_proxy_require(headers) == []


# -- Call-ID (RFC 3261 20.8) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a84b4c76e66710@pc33.example.com", "a84b4c76e66710@pc33.example.com"),
        ("f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
        ('<weird>:{chars}?[ok]@"host"', '<weird>:{chars}?[ok]@"host"'),  # word chars
        ("a b", Rule("20.8 Call-ID")),
        ("a@b@c", Rule("20.8 Call-ID")),
        ("@b", Rule("20.8 Call-ID")),
        ("a@", Rule("20.8 Call-ID")),
        ("caf\u00e9", Rule("20.8 Call-ID")),
        ("", Rule("20.8 Call-ID")),
    ],
)
def test_call_id(value: str, expected: object) -> None:
    check(fields.parse_call_id, "Call-ID", value, expected)


# -- Content-Type (RFC 3261 20.15) -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/sdp", ("application/sdp", ())),
        ("Application/SDP", ("application/sdp", ())),
        ("application / sdp", ("application/sdp", ())),
        ("text/plain;charset=UTF-8", ("text/plain", (("charset", "UTF-8"),))),
        (
            'multipart/mixed; boundary="unique boundary 1"',
            ("multipart/mixed", (("boundary", '"unique boundary 1"'),)),
        ),
        ("application/vnd.3gpp.ims+xml", ("application/vnd.3gpp.ims+xml", ())),
        ("application", Rule("20.15 media-type")),
        ("application/", Rule("20.15 media-type")),
        ("/sdp", Rule("20.15 media-type")),
        ("application/sdp;", Rule("m-parameter")),
        ("application/sdp junk", Rule("m-parameter")),
        ("application/sdp;charset", ("application/sdp", (("charset", None),))),
    ],
)
def test_content_type(value: str, expected: object) -> None:
    check(
        fields.parse_content_type,
        "c",
        value,
        expected,
        lambda media: (media.mime, media.params),
    )


def test_content_type_param_lookup() -> None:
    media = fields.parse_content_type(headers_with(("Content-Type", "text/plain;CharSet=utf-8")))
    assert media is not None
    assert (media.type, media.subtype) == ("text", "plain")
    assert media.param("charset") == "utf-8"
    assert media.param("boundary") is None


# -- option tags (RFC 3261 20.37, 20.32, 20.29) -------------------------------------------


@pytest.mark.parametrize("parse_name", ["Supported", "Require", "Proxy-Require"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),  # "Supported:" with no tags is legal
        ("   ", []),
        ("timer", ["timer"]),
        ("timer, 100rel ,path", ["timer", "100rel", "path"]),
        ("org.example.foo", ["org.example.foo"]),
        ("timer,,100rel", Rule("option-tag")),
        ("timer,", Rule("option-tag")),
        ("a b", Rule("option-tag")),
        ("tim\u00e9r", Rule("option-tag")),
    ],
)
def test_option_tags(parse_name: str, value: str, expected: object) -> None:
    parse = {
        "Supported": fields.parse_supported,
        "Require": fields.parse_require,
        "Proxy-Require": fields.parse_proxy_require,
    }[parse_name]
    error = check(parse, parse_name, value, expected)
    if error is not None:
        assert error.header == parse_name


def test_option_tags_across_fields() -> None:
    headers = headers_with(("Supported", ""), ("k", "timer"), ("Supported", "path, gruu"))
    assert fields.parse_supported(headers) == ["timer", "path", "gruu"]


# -- addresses: From, To, Contact, Route, Record-Route --------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Alice <sip:alice@example.com>;tag=1928", ("alice@example.com", "Alice", "1928")),
        ('"Bob B." <sip:bob@example.com>', ("bob@example.com", "Bob B.", None)),
        ("sip:carol@example.com;tag=x", ("carol@example.com", None, "x")),
        ("<sip:alice@example.com", Rule("name-addr")),
        ('"unterminated <sip:a@b>', Rule("")),
    ],
)
def test_from(value: str, expected: object) -> None:
    def summary(address: Any) -> object:
        uri = address.uri
        return (f"{uri.user}@{uri.host}", address.display_name, address.tag)

    error = check(fields.parse_from, "From", value, expected, summary)
    if error is not None:
        assert error.header == "From"
    error = check(fields.parse_to, "t", value, expected, summary)
    if error is not None:
        assert error.header == "To"


@pytest.mark.parametrize("parse_name", ["Route", "Record-Route"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<sip:p1.example.com;lr>", ["<sip:p1.example.com;lr>"]),
        ("<sip:p1;lr>, <sip:p2;lr>", ["<sip:p1;lr>", "<sip:p2;lr>"]),
        ('"Proxy" <sip:p1;lr>;x=1', ['"Proxy" <sip:p1;lr>;x=1']),
        ("sip:p1.example.com;lr", Rule("route-param")),  # rec-route needs name-addr
        ("<sip:p1;lr>, sip:p2", Rule("route-param")),
        ("<sip:p1;lr>,,<sip:p2>", Rule("")),
    ],
)
def test_route_and_record_route(parse_name: str, value: str, expected: object) -> None:
    parse = fields.parse_route if parse_name == "Route" else fields.parse_record_route
    error = check(parse, parse_name, value, expected, lambda addresses: [str(a) for a in addresses])
    if error is not None:
        assert error.header == parse_name


def test_route_without_brackets_is_accepted_leniently() -> None:
    headers = headers_with(("Route", "sip:p1.example.com;lr"), strict=False)
    assert [str(address) for address in fields.parse_route(headers)] == ["sip:p1.example.com;lr"]


@pytest.mark.parametrize(
    ("values", "star", "contacts"),
    [
        (["*"], True, []),
        ([" * "], True, []),
        (["<sip:a@h>;expires=60"], False, ["<sip:a@h>;expires=60"]),
        (["sip:a@h", '"B" <sip:b@h>;q=0.5'], False, ["sip:a@h", '"B" <sip:b@h>;q=0.5']),
        (["<sip:a@h>, <sip:b@h>"], False, ["<sip:a@h>", "<sip:b@h>"]),
    ],
)
def test_contact(values: list[str], star: bool, contacts: list[str]) -> None:
    headers = headers_with(*(("m", value) for value in values))
    assert fields.parse_contact_star(headers) is star
    assert [str(address) for address in fields.parse_contact(headers)] == contacts


@pytest.mark.parametrize(("values"), [["*, <sip:a@h>"], ["*", "<sip:a@h>"], ["*;expires=0, *"]])
def test_contact_star_mixed_with_addresses_is_an_error(values: list[str]) -> None:
    # RFC 3261 10.2.2: "*" is only valid alone.
    headers = headers_with(*(("Contact", value) for value in values))
    assert fields.parse_contact_star(headers) is False
    with pytest.raises(RemoteProtocolError) as info:
        fields.parse_contact(headers)
    assert info.value.header == "Contact"


# -- generic parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        (";a", (("a", None),)),
        (";a=1;B=two", (("a", "1"), ("B", "two"))),
        (' ; a = "x;y" ', None),  # trailing space is not a parameter
        (' ; a = "x;y"', (("a", '"x;y"'),)),
        (";maddr=[2001:db8::1]", (("maddr", "[2001:db8::1]"),)),
        (";", None),
        (";a=", None),
        ("a=1", None),
    ],
)
def test_parse_params(text: str, expected: tuple[tuple[str, str | None], ...] | None) -> None:
    if expected is None:
        with pytest.raises(RemoteProtocolError):
            fields.parse_params(text, rule="test")
    else:
        assert fields.parse_params(text, rule="test") == expected


# -- the full check: Date, Warning and friends -----------------------------------------------

BASE = (
    b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"Call-ID: abc@h\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def with_header(line: str, *, strict: bool = True) -> Message:
    data = BASE.replace(b"Content-Length", line.encode() + b"\r\nContent-Length")
    return parse_message(data, strict=strict)


def rules_of(message: Message) -> list[str]:
    return [error.rule for error in fields.message_errors(message)]


def test_base_message_is_valid() -> None:
    message = parse_message(BASE)
    assert rules_of(message) == []
    message.validate()


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("Sat, 13 Nov 2010 23:29:00 GMT", True),
        ("Thu, 01 Jan 1970 00:00:00 GMT", True),
        ("Sat, 13 Nov 2010 23:29:00 PST", False),  # RFC 3261 20.17: GMT only
        ("Sat, 13 Nov 2010 23:29:00 UTC", False),
        ("Sat, 13 Nov 2010 23:29:00 +0000", False),
        ("Sat 13 Nov 2010 23:29:00 GMT", False),
        ("Sat, 13 November 2010 23:29:00 GMT", False),
        ("Sat, 3 Nov 2010 23:29:00 GMT", False),
        ("2010-11-13T23:29:00Z", False),
        ("", False),
    ],
)
def test_date(value: str, valid: bool) -> None:
    message = with_header(f"Date: {value}")
    assert rules_of(message) == ([] if valid else ["RFC 3261 20.17 Date"])


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ('399 h.example.com "Incompatible network protocol"', True),
        ('301 192.0.2.1:5060 "x"', True),
        ('399 h ""', True),
        ('399 h "with \\"escaped\\" quotes"', True),
        ('307 a "one", 399 b "two"', True),
        ('39 h "x"', False),  # warn-code = 3DIGIT
        ('3999 h "x"', False),
        ('abc h "x"', False),
        ("399 h unquoted", False),
        ('399 "no agent"', False),
        ('307 a "one",, 399 b "two"', False),
    ],
)
def test_warning(value: str, valid: bool) -> None:
    message = with_header(f"Warning: {value}")
    assert rules_of(message) == ([] if valid else ["RFC 3261 20.43 Warning"])


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ((b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"), "RFC 3261 8.1.1.5 CSeq method"),
        ((b"OPTIONS sip:bob@example.com", b"OPTIONS sip:bob@example.com?x=y"), "19.1.1"),
        ((b"Max-Forwards: 70", b"Max-Forwards: 300"), "20.22 Max-Forwards"),
        ((b"Call-ID: abc@h", b"Call-ID: a b"), "20.8 Call-ID"),
        ((b"h.example.com;branch", b"h.example.com;;branch"), "via-params"),
    ],
)
def test_full_check_finds_each_broken_rule(change: tuple[bytes, bytes], rule: str) -> None:
    message = parse_message(BASE.replace(*change))
    rules = rules_of(message)
    assert len(rules) == 1
    assert rule in rules[0]
    with pytest.raises(RemoteProtocolError) as info:
        fields.validate_message(message)
    assert rule in info.value.rule


def test_full_check_reports_every_error_in_order() -> None:
    data = (
        BASE.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 BYE")
        .replace(b"Max-Forwards: 70", b"Max-Forwards: -1")
        .replace(b"Content-Length", b"Date: yesterday\r\nWarning: 1 a b\r\nContent-Length")
    )
    message = parse_message(data)
    assert rules_of(message) == [
        "RFC 3261 20.22 Max-Forwards",
        "RFC 3261 8.1.1.5 CSeq method",
        "RFC 3261 20.17 Date",
        "RFC 3261 20.43 Warning",
    ]
    with pytest.raises(RemoteProtocolError) as info:
        fields.validate_message(message)
    assert info.value.rule == "RFC 3261 20.22 Max-Forwards"


def test_response_has_no_request_checks() -> None:
    data = b"SIP/2.0 200 OK\r\n" + BASE.split(b"\r\n", 1)[1].replace(b"1 OPTIONS", b"1 INVITE")
    message = parse_message(data)
    assert rules_of(message) == []
