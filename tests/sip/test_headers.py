"""Tests of sipwarden.sip.headers: header keys, list splitting, the Headers container."""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator

import pytest

from sipwarden.errors import LocalProtocolError
from sipwarden.sip import headers as headers_module
from sipwarden.sip.headers import (
    COMPACT_FORMS,
    KEY_CACHE,
    LIST_HEADERS,
    HeaderField,
    Headers,
    header_key,
    split_list,
)
from sipwarden.sip.parser import parse_message

# -- header_key -------------------------------------------------------------------


@pytest.mark.parametrize(("short", "long"), sorted(COMPACT_FORMS.items()))
def test_every_compact_form_in_both_cases(short: str, long: str) -> None:
    assert header_key(short) == long
    assert header_key(short.upper()) == long
    assert header_key(long) == long
    assert header_key(long.upper()) == long
    assert header_key(long.title()) == long


def test_rfc3261_compact_forms() -> None:
    # RFC 3261 7.3.3 and 20: the eight compact forms of the base specification.
    assert {short: COMPACT_FORMS[short] for short in "cefiklmstv"} == {
        "c": "content-type",
        "e": "content-encoding",
        "f": "from",
        "i": "call-id",
        "k": "supported",
        "l": "content-length",
        "m": "contact",
        "s": "subject",
        "t": "to",
        "v": "via",
    }


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Via", "via"),
        ("VIA", "via"),
        ("vIa", "via"),
        ("Call-ID", "call-id"),
        ("call-id", "call-id"),
        ("CALL-ID", "call-id"),
        ("Call-Id", "call-id"),
        ("CSeq", "cseq"),
        ("CSEQ", "cseq"),
        ("cseq", "cseq"),
        ("WWW-Authenticate", "www-authenticate"),
        ("www-AUTHENTICATE", "www-authenticate"),
        ("X-Custom-Header", "x-custom-header"),
        ("x-custom-header", "x-custom-header"),
        ("P-Asserted-Identity", "p-asserted-identity"),
        ("NewFangledHeader", "newfangledheader"),
        ("a.b!c%d*e_f+g`h'i~j", "a.b!c%d*e_f+g`h'i~j"),  # every token character
        ("Z", "z"),  # a letter that is no compact form stays itself
    ],
)
def test_header_key_case_variants(name: str, key: str) -> None:
    assert header_key(name) == key


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "Via ",
        " Via",
        "Via:",
        "Call ID",
        "Na\u00efve",
        "X@Y",
        "X(Y)",
        "a\tb",
        "\x00",
        "\ud800",
    ],
)
def test_invalid_names_have_no_key(name: str) -> None:
    assert header_key(name) is None


@pytest.fixture
def restored_key_cache() -> Iterator[None]:
    # The cache is module state shared with the parser: put it back as it was.
    saved = dict(KEY_CACHE)
    try:
        yield
    finally:
        KEY_CACHE.clear()
        KEY_CACHE.update(saved)


@pytest.mark.usefixtures("restored_key_cache")
def test_key_cache_is_bounded() -> None:
    rng = random.Random(4711)  # test data, not cryptography
    alphabet = string.ascii_letters + string.digits + "-"
    names = {
        "X-" + "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 24)))
        for _ in range(10_000)
    }
    for name in names:
        assert header_key(name) == name.lower()
        assert len(KEY_CACHE) <= headers_module.KEY_CACHE_MAX
    assert len(KEY_CACHE) == headers_module.KEY_CACHE_MAX  # it filled up, then stopped
    # Names that missed the cache still get the right key.
    assert header_key("X-Not-Cached-Anymore") == "x-not-cached-anymore"


@pytest.mark.usefixtures("restored_key_cache")
def test_key_cache_holds_only_valid_names() -> None:
    for name in ("Bad Name", "Bad:Name", "", "X\u00e9"):
        assert header_key(name) is None
        assert name not in KEY_CACHE


# -- split_list ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("timer", ["timer"]),
        ("  timer  ", ["timer"]),
        ("timer, 100rel,path", ["timer", "100rel", "path"]),
        ("a ,\tb", ["a", "b"]),
        ("", [""]),
        ("a,,b", ["a", "", "b"]),  # empty elements kept (RFC 4475 badinv01)
        ("a,", ["a", ""]),
        (",a", ["", "a"]),
        (",", ["", ""]),
        ('"Doe, John" <sip:j@d>, <sip:x@y>', ['"Doe, John" <sip:j@d>', "<sip:x@y>"]),
        ('"a \\" , b" <sip:a@b>, c', ['"a \\" , b" <sip:a@b>', "c"]),  # escaped quote
        ('"a\\\\", b', ['"a\\\\"', "b"]),  # an escaped backslash ends before the quote
        ("<sip:a@b;x=1,2>, <sip:c@d>", ["<sip:a@b;x=1,2>", "<sip:c@d>"]),
        ("<sip:a@b?h=1,2>,c", ["<sip:a@b?h=1,2>", "c"]),
        ('"<" <sip:a@b>, c', ['"<" <sip:a@b>', "c"]),  # an angle inside quotes is text
        ('"x,y", "z"', ['"x,y"', '"z"']),
        ('<sip:a@b>;p="1,2", <sip:c@d>', ['<sip:a@b>;p="1,2"', "<sip:c@d>"]),
        (
            "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP [2001:db8::1]:5060",
            ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/TCP [2001:db8::1]:5060"],
        ),
    ],
)
def test_split_list(value: str, parts: list[str]) -> None:
    assert split_list(value) == parts


def test_split_list_unbalanced_quote_does_not_split() -> None:
    # Everything after an unterminated quote is one element; validation rejects it.
    assert split_list('"open, a, b') == ['"open, a, b']


def test_list_headers_include_the_common_lists() -> None:
    assert {"via", "contact", "route", "record-route", "supported", "allow"} <= LIST_HEADERS
    # Credentials hold commas between their parameters: never split them.
    assert "authorization" not in LIST_HEADERS
    assert "www-authenticate" not in LIST_HEADERS


# -- Headers: reading --------------------------------------------------------------


def sample() -> Headers:
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP a.example.com;branch=z9hG4bK1")
    headers.add("v", "SIP/2.0/UDP b.example.com;branch=z9hG4bK2, SIP/2.0/UDP c;branch=z9hG4bK3")
    headers.add("From", "<sip:alice@example.com>;tag=1")
    headers.add("To", "<sip:bob@example.com>")
    headers.add("User-Agent", "softphone 1.0")
    headers.add("Supported", "timer")
    headers.add("k", "100rel, path")
    return headers


def test_headers_lookup_is_case_and_form_insensitive() -> None:
    headers = sample()
    assert len(headers) == 7
    assert headers.get("via") == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"
    assert headers.get("V") == headers.get("VIA")
    assert headers.count("Via") == 2
    assert headers.count("v") == 2
    assert headers.get_all("via")[1].startswith("SIP/2.0/UDP b.example.com")
    assert headers.values("Via") == [
        "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
        "SIP/2.0/UDP b.example.com;branch=z9hG4bK2",
        "SIP/2.0/UDP c;branch=z9hG4bK3",
    ]
    assert headers.values("supported") == ["timer", "100rel", "path"]
    assert "user-agent" in headers
    assert "f" in headers
    assert "Contact" not in headers
    assert headers.get("Contact") is None
    assert headers.get_all("Contact") == []
    assert headers.values("Contact") == []
    assert headers.keys() == ["via", "via", "from", "to", "user-agent", "supported", "supported"]


def test_headers_iteration_yields_fields_with_names_as_written() -> None:
    fields = list(sample())
    assert all(isinstance(field, HeaderField) for field in fields)
    assert [field.name for field in fields][:2] == ["Via", "v"]
    assert all(field.raw is None for field in fields)  # built, not parsed


def test_headers_from_fields() -> None:
    headers = Headers(
        [
            HeaderField("via", "Via", "SIP/2.0/UDP h", "Via:   SIP/2.0/UDP h"),
            HeaderField("call-id", "i", "x", "i:x"),
        ]
    )
    assert list(headers.lines()) == ["Via:   SIP/2.0/UDP h", "i:x"]
    assert headers.get("Call-ID") == "x"
    assert not headers.edited


def test_invalid_name_in_a_lookup_is_our_error() -> None:
    headers = sample()
    for call in (headers.get, headers.get_all, headers.count, headers.values):
        with pytest.raises(LocalProtocolError):
            call("Bad Name")
    with pytest.raises(LocalProtocolError):
        _ = "Bad Name" in headers


# -- Headers: editing -----------------------------------------------------------------


def test_add_appends_and_first_prepends() -> None:
    headers = sample()
    headers.add("X-Last", "1")
    headers.add("X-First", "0", first=True)
    assert headers.keys()[0] == "x-first"
    assert headers.keys()[-1] == "x-last"
    assert headers.edited


def test_insert_before_puts_a_via_topmost_after_unrelated_headers() -> None:
    # RFC 3261 16.6 step 8: the proxy's Via goes first among the Vias.
    headers = Headers()
    headers.add("Max-Forwards", "70")
    headers.add("Via", "SIP/2.0/UDP old;branch=z9hG4bK1")
    headers.add("To", "<sip:b@c>")
    headers.insert_before("Via", "SIP/2.0/UDP new;branch=z9hG4bK2")
    assert headers.keys() == ["max-forwards", "via", "via", "to"]
    assert headers.values("via")[0] == "SIP/2.0/UDP new;branch=z9hG4bK2"
    headers.insert_before("Record-Route", "<sip:p;lr>")  # none yet: appended
    assert headers.keys()[-1] == "record-route"


def test_insert_before_matches_compact_forms() -> None:
    headers = Headers()
    headers.add("To", "<sip:b@c>")
    headers.add("v", "SIP/2.0/UDP old;branch=z9hG4bK1")
    headers.insert_before("Via", "SIP/2.0/UDP new;branch=z9hG4bK2")
    assert [field.name for field in headers] == ["To", "Via", "v"]


def test_remove_removes_every_instance_in_any_form() -> None:
    headers = sample()
    assert headers.remove("VIA") == 2
    assert "via" not in headers
    assert headers.remove("supported") == 2
    assert headers.remove("Contact") == 0
    assert headers.keys() == ["from", "to", "user-agent"]


def test_remove_first() -> None:
    headers = sample()
    assert headers.remove_first("v") == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"
    assert headers.count("via") == 1
    assert headers.remove_first("Contact") is None


def test_set_replaces_first_in_place_and_drops_others() -> None:
    headers = sample()
    headers.set("Via", "SIP/2.0/TCP only;branch=z9hG4bK9")
    assert headers.keys() == ["via", "from", "to", "user-agent", "supported", "supported"]
    assert headers.get_all("via") == ["SIP/2.0/TCP only;branch=z9hG4bK9"]
    headers.set("Supported", "")
    assert headers.get_all("supported") == [""]
    headers.set("Contact", "<sip:new@h>")  # none yet: appended
    assert headers.keys()[-1] == "contact"


def test_remove_where_removes_matching_fields_and_forgets_only_their_views() -> None:
    headers = sample()
    via = headers.typed("via", lambda current: current.values("via"))
    removed = headers.remove_where(lambda key: key.startswith("user"))
    assert removed == 1
    assert "user-agent" not in headers
    assert headers.typed("via", lambda current: []) is via  # the untouched view is kept
    headers.edited = False
    assert headers.remove_where(lambda key: False) == 0
    assert not headers.edited  # nothing removed, nothing changed


def test_edit_regenerates_only_the_edited_line() -> None:
    message = parse_message(
        b"OPTIONS sip:b@c SIP/2.0\r\nVia:SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"To:   <sip:b@c>\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
    )
    message.headers.set("CSeq", "2 OPTIONS")
    assert list(message.headers.lines()) == [
        "Via:SIP/2.0/UDP h;branch=z9hG4bK1",
        "To:   <sip:b@c>",
        "CSeq: 2 OPTIONS",
        "l: 0",
    ]


def parsed_headers() -> Headers:
    return parse_message(
        b"OPTIONS sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"Supported: timer\r\nl: 0\r\n\r\n"
    ).headers


@pytest.mark.parametrize(
    "edit",
    [
        lambda headers: headers.add("Via", "SIP/2.0/UDP x;branch=z9hG4bK2", first=True),
        lambda headers: headers.insert_before("Via", "SIP/2.0/UDP x;branch=z9hG4bK2"),
        lambda headers: headers.set("Via", "SIP/2.0/UDP x;branch=z9hG4bK2"),
        lambda headers: headers.remove("Via"),
        lambda headers: headers.remove_first("Via"),
        lambda headers: headers.remove_where(lambda key: key == "via"),
    ],
    ids=["add", "insert_before", "set", "remove", "remove_first", "remove_where"],
)
def test_typed_view_cache_is_dropped_on_edit(edit: Callable[[Headers], object]) -> None:
    headers = parsed_headers()
    calls: list[str | None] = []

    def parse(current: Headers) -> str | None:
        calls.append(current.get("via"))
        return current.get("via")

    assert headers.typed("via", parse) == "SIP/2.0/UDP h;branch=z9hG4bK1"
    assert headers.typed("via", parse) == "SIP/2.0/UDP h;branch=z9hG4bK1"
    assert len(calls) == 1  # cached
    assert not was_edited(headers)
    edit(headers)
    assert was_edited(headers)
    expected = headers.get("via")
    assert headers.typed("via", parse) == expected
    assert len(calls) == 2  # parsed again after the edit


def was_edited(headers: Headers) -> bool:
    return headers.edited  # a call: mypy must not narrow the attribute across edits


def test_typed_view_on_message_follows_edits() -> None:
    message = parse_message(
        b"OPTIONS sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"Supported: timer\r\nl: 0\r\n\r\n"
    )
    assert message.supported == ["timer"]
    message.headers.add("k", "path")
    assert message.supported == ["timer", "path"]
    assert message.top_via is not None
    assert message.top_via.host == "h"
    message.headers.insert_before("Via", "SIP/2.0/TCP proxy;branch=z9hG4bK2")
    assert message.top_via is not None
    assert message.top_via.host == "proxy"


def test_clear_cache() -> None:
    headers = parsed_headers()
    calls: list[int] = []

    def parse(_: Headers) -> int:
        calls.append(1)
        return len(calls)

    assert headers.typed("x", parse) == 1
    headers.clear_cache()
    assert headers.typed("x", parse) == 2
    assert not headers.edited


@pytest.mark.parametrize(
    "value",
    [
        "x\r\nVia: SIP/2.0/UDP evil;branch=z9hG4bK6",
        "x\nVia: injected",
        "x\rVia: injected",
        "\r\n",
        "trailing\r",
    ],
)
def test_cr_lf_injection_rejected(value: str) -> None:
    edits: list[Callable[[Headers], object]] = [
        lambda headers: headers.add("Subject", value),
        lambda headers: headers.add("Subject", value, first=True),
        lambda headers: headers.insert_before("Via", value),
        lambda headers: headers.set("User-Agent", value),
        lambda headers: headers.set("Via", value),
    ]
    for edit in edits:
        with pytest.raises(LocalProtocolError):
            edit(sample())


@pytest.mark.parametrize(
    "edit",
    [
        lambda headers: headers.add("Subject", "x\r\nVia: injected"),
        lambda headers: headers.insert_before("Via", "x\r\nVia: injected"),
        lambda headers: headers.set("Via", "x\r\nVia: injected"),
    ],
    ids=["add", "insert_before", "set"],
)
def test_rejected_edit_leaves_headers_unchanged(edit: Callable[[Headers], object]) -> None:
    headers = sample()
    before = list(headers)
    with pytest.raises(LocalProtocolError):
        edit(headers)
    assert list(headers) == before
    assert len(headers) == len(before)


@pytest.mark.parametrize("name", ["Bad Name", "", "X:Y", "Via\r\n"])
def test_invalid_name_in_an_edit_rejected(name: str) -> None:
    headers = sample()
    with pytest.raises(LocalProtocolError):
        headers.add(name, "v")
    with pytest.raises(LocalProtocolError):
        headers.set(name, "v")
    with pytest.raises(LocalProtocolError):
        headers.remove(name)
    assert len(headers) == 7


def test_folded_value_is_not_an_injection() -> None:
    # A parsed folded value is one line with SP; copying it into an edit is safe.
    message = parse_message(b"OPTIONS sip:b@c SIP/2.0\r\nSubject: one\r\n two\r\nl: 0\r\n\r\n")
    value = message.headers.get("Subject")
    assert value == "one two"
    message.headers.add("X-Copy", value)
    assert message.to_bytes().count(b"one two") == 1


def test_replace_all_keeps_the_position_and_the_order_of_the_new_values() -> None:
    headers = Headers()
    for name, value in (("Via", "a"), ("Via", "b"), ("From", "f"), ("Route", "r1")):
        headers.add(name, value)
    headers.replace_all("Via", ["x", "y", "z"])
    assert [field.key for field in headers] == ["via", "via", "via", "from", "route"]
    assert headers.get_all("via") == ["x", "y", "z"]
    headers.replace_all("Route", [])
    assert "route" not in headers
    headers.replace_all("Record-Route", ["<sip:p;lr>"])
    assert [field.key for field in headers][-1] == "record-route"


def test_replace_all_gathers_scattered_fields_where_the_first_stood() -> None:
    headers = Headers()
    for name, value in (("Via", "a"), ("From", "f"), ("Via", "b"), ("To", "t")):
        headers.add(name, value)
    headers.replace_all("Via", ["x", "y"])
    assert [(field.key, field.value) for field in headers] == [
        ("via", "x"),
        ("via", "y"),
        ("from", "f"),
        ("to", "t"),
    ]


def test_an_edit_forgets_only_the_typed_views_of_the_header_it_changed() -> None:
    headers = Headers()
    headers.add("Call-ID", "c1")
    headers.add("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")
    calls: list[str] = []

    def parse_call_id(fields: Headers) -> str | None:
        calls.append("call-id")
        return fields.get("call-id")

    assert headers.typed("call-id", parse_call_id) == "c1"
    headers.replace_all("Via", ["SIP/2.0/UDP g;branch=z9hG4bK2"])
    assert headers.typed("call-id", parse_call_id) == "c1"
    assert calls == ["call-id"]  # not parsed again
    headers.set("Call-ID", "c2")
    assert headers.typed("call-id", parse_call_id) == "c2"


def test_seed_sets_the_view_an_edit_would_parse_again() -> None:
    headers = sample()
    vias = headers.values("via")
    headers.replace_all("Via", vias[1:])
    headers.seed("via", ["seeded"])
    assert headers.typed("via", lambda current: ["parsed"]) == ["seeded"]
    headers.add("Via", "SIP/2.0/UDP d;branch=z9hG4bK4")  # a later edit forgets it
    assert headers.typed("via", lambda current: ["parsed"]) == ["parsed"]
