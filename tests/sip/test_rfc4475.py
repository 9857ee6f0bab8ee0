"""RFC 4475 torture tests: every message does what ../shared/testdata/rfc4475/README.md says.

The tables of ``tests/rfc4475_cases.py`` (shared with the gateway's torture
test) and the checks below are the sample input annotated with the expected
result (fail2ban's test pattern): for valid messages the fields as the RFC
reads them, for invalid ones the rule a strict parser must name.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rfc4475_cases import APPLICATION, INVALID, RECOVERABLE, VALID, load, message_names
from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.checks import check_proxy_request
from sipwarden.sip.headers import HeaderField, Headers, make_field
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.parser import parse_message
from sipwarden.sip.uri import SipUri


def test_the_table_covers_all_49_messages() -> None:
    names = set(message_names())
    assert len(names) == 49
    assert names == set(VALID) | set(INVALID) | set(APPLICATION)


def meaning(message: Message) -> tuple[object, ...]:
    start: tuple[object, ...]
    if isinstance(message, Request):
        start = (message.method, message.uri)
    else:
        assert isinstance(message, Response)
        start = (message.status, message.reason)
    # Serialising fixes Content-Length to the body: compare the body instead.
    fields = tuple((f.key, f.value) for f in message.headers if f.key != "content-length")
    return (*start, message.version.upper(), fields, message.body)


def reserialised(message: Message) -> bytes:
    """Serialise from the parsed parts, not the raw bytes (every line regenerated)."""
    fields = [make_field(HeaderField, (f.key, f.name, f.value, None)) for f in message.headers]
    copy: Message
    if isinstance(message, Request):
        copy = Request(message.method, message.uri, headers=Headers(fields), body=message.body)
    else:
        assert isinstance(message, Response)
        copy = Response(message.status, message.reason, headers=Headers(fields), body=message.body)
    copy.version = message.version
    return copy.to_bytes()


def assert_round_trip(data: bytes, message: Message) -> None:
    assert message.to_bytes() == data[: len(message.to_bytes())]
    again = parse_message(reserialised(message), strict=False)
    assert meaning(again) == meaning(message)
    assert again.content_length == len(message.body)


# -- 3.1.1 valid messages: every field as the RFC reads it -----------------------------


def check_wsinv(m: Message) -> None:
    assert isinstance(m, Request)
    assert m.method == "INVITE"
    assert m.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert m.to is not None and m.to.tag == "1918181833n"
    assert m.from_ is not None and m.from_.tag == "98asjd8"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert m.cseq is not None and (m.cseq.seq, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.via] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    (contact,) = m.contact
    assert contact.display_name == 'Quoted string ""'
    assert contact.param("newparam") == "newvalue"
    assert contact.param("q") == "0.33"
    assert contact.param("secondparam") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("subject") == ""
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert [str(r.uri) for r in m.route] == [
        "sip:services.example.com;lr;unknownwith=value;unknown-no-value"
    ]
    assert m.content_length == 150 and len(m.body) == 150
    assert m.content_type is not None and m.content_type.mime == "application/sdp"


def check_intmeth(m: Message) -> None:
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(m, Request) and m.method == method
    assert m.cseq is not None and m.cseq.method == method
    assert m.max_forwards == 255
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.top_via is not None and m.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    # UTF-8 (with a byte-order mark) in an extension header value, decoded.
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"
    assert m.to is not None and m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    uri = m.request_uri
    assert isinstance(uri, SipUri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"


def check_esc01(m: Message) -> None:
    assert isinstance(m, Request)
    uri = m.request_uri
    assert isinstance(uri, SipUri)
    assert uri.user == "sips%3Auser%40example.com"  # escapes kept as written
    assert uri.unescaped_user() == "sips:user@example.com"
    assert uri.host == "example.net"
    assert m.from_ is not None and isinstance(m.from_.uri, SipUri)
    assert m.from_.uri.unescaped_user() == "I have spaces"
    assert m.content_type is not None and m.content_type.mime == "application/sdp"
    (contact,) = m.contact
    assert isinstance(contact.uri, SipUri) and contact.uri.user == "cal%6Cer"


def check_escnull(m: Message) -> None:
    assert m.to is not None and isinstance(m.to.uri, SipUri)
    assert m.to.uri.unescaped_user() == "null-\x00-null"
    assert [str(c.uri) for c in m.contact] == [
        "sip:%00@host5.example.com",
        "sip:%00%00@host5.example.com",
    ]


def check_esc02(m: Message) -> None:
    assert isinstance(m, Request) and m.method == "RE%47IST%45R"  # not REGISTER
    assert m.cseq is not None and m.cseq.method == "RE%47IST%45R"
    # "C%6Fntact" is an extension header of its own, not a Contact.
    assert [str(c.uri) for c in m.contact] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert m.to is not None and m.to.display_name == "%Z%45"


def check_lwsdisp(m: Message) -> None:
    assert m.from_ is not None and m.from_.display_name == "caller"
    assert m.from_.tag == "323"


def check_longreq(m: Message) -> None:
    assert isinstance(m, Request) and m.method == "INVITE"
    assert m.to is not None and m.to.display_name is not None
    assert len(m.to.display_name) > 100
    assert len(m.via) > 30
    assert m.content_length == len(m.body)


def check_dblreq(m: Message) -> None:
    assert isinstance(m, Request) and m.method == "REGISTER"
    assert m.body == b""
    assert b"INVITE" not in m.to_bytes()


def check_semiuri(m: Message) -> None:
    uri = m.request_uri if isinstance(m, Request) else None
    assert isinstance(uri, SipUri)
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com"
    assert uri.params == ()
    assert len(m.headers.values("accept")) == 6


def check_transports(m: Message) -> None:
    assert [v.transport for v in m.via] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert m.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def check_mpart01(m: Message) -> None:
    assert m.content_type is not None and m.content_type.mime == "multipart/mixed"
    assert m.content_length == len(m.body)
    assert b"\r\n--" in m.body


def check_unreason(m: Message) -> None:
    assert isinstance(m, Response) and m.status == 200
    assert m.reason.startswith("= 2**3 * 5**2 ")
    assert "\u0441\u0442\u043e" in m.reason  # UTF-8 reason phrase decoded


def check_noreason(m: Message) -> None:
    assert isinstance(m, Response) and (m.status, m.reason) == (100, "")


CHECKS: dict[str, Callable[[Message], None]] = {name: globals()[f"check_{name}"] for name in VALID}


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse_with_every_field_as_the_rfc_reads_it(name: str) -> None:
    data = load(name)
    message = parse_message(data)
    message.validate()
    CHECKS[name](message)
    assert_round_trip(data, message)


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_have_no_defects_in_lenient_mode(name: str) -> None:
    message = parse_message(load(name), strict=False)
    assert message.collect_defects() == []


def parse_then_validate(data: bytes, stage: str) -> None:
    message = parse_message(data)
    assert stage == "validate", "the lazy parse should already have failed"
    message.validate()


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_are_rejected_in_strict_mode_naming_the_rule(name: str) -> None:
    stage, rule, status = INVALID[name]
    data = load(name)
    with pytest.raises(RemoteProtocolError) as caught:
        parse_then_validate(data, stage)
    assert rule in caught.value.rule
    assert caught.value.status_hint == status
    assert caught.value.offset is not None


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_never_come_out_of_lenient_mode_clean(name: str) -> None:
    try:
        message = parse_message(load(name), strict=False)
    except RemoteProtocolError:
        assert name not in RECOVERABLE
        return
    assert message.collect_defects(), "a broken rule went unrecorded"
    assert message.defects[0].status == INVALID[name][2]


@pytest.mark.parametrize("name", sorted(RECOVERABLE))
def test_lenient_mode_recovers_what_the_rfc_allows(name: str) -> None:
    message = parse_message(load(name), strict=False)
    assert message.call_id is not None
    assert message.cseq is not None
    assert message.from_ is not None and message.to is not None
    assert_round_trip(load(name), message)


@pytest.mark.parametrize("name", sorted(APPLICATION))
def test_application_layer_messages_parse_and_get_the_proxy_answer(name: str) -> None:
    data = load(name)
    message = parse_message(data)
    assert_round_trip(data, message)
    if isinstance(message, Response):
        message.validate()
        return
    assert isinstance(message, Request)
    rejection = check_proxy_request(message)
    expected = APPLICATION[name]
    assert (rejection.status if rejection else None) == expected, rejection


def test_bext01_lists_every_unsupported_proxy_extension() -> None:
    message = parse_message(load("bext01"))
    assert isinstance(message, Request)
    rejection = check_proxy_request(message)
    assert rejection is not None
    assert rejection.headers == (
        ("Unsupported", "noProxiesSupportThis, norDoAnyProxiesSupportThis"),
    )


def test_badvers_answers_505() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        parse_message(load("badvers"))
    assert caught.value.status_hint == 505


def test_bcast_second_via_is_the_broadcast_address() -> None:
    message = parse_message(load("bcast"))
    assert [v.host for v in message.via] == ["192.0.2.198", "255.255.255.255"]
