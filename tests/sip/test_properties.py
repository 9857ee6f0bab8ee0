"""Property tests (hypothesis) of the parser and serialiser.

* valid messages: parse -> ``to_bytes()`` is byte-identical, and rebuilding the
  message from its parts -> parse gives the same meaning;
* arbitrary bytes and mutations of valid messages: parsing in both modes, the
  full check and every typed view only ever raise ``RemoteProtocolError``
  (DESIGN convention 9), in bounded time;
* a valid pipelined stream (keep-alives included) cut into arbitrary chunks
  gives the same events as one whole feed (DESIGN convention 8).

The atheris target ``fuzz/fuzz_parser.py`` checks the same invariant outside
the suite, for hours rather than seconds.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.headers import Headers
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.parser import KeepAlive, StreamParser, parse_message

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# One example may take this long at most: far above the few milliseconds a
# message costs, far below what a quadratic or exponential path would take.
TIME_BOUND = 1.0

# -- a strategy for valid SIP messages ------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
WORD_CHARS = TOKEN_CHARS + '()<>:\\"/[]?{}'

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
words = st.text(WORD_CHARS, min_size=1, max_size=16)
labels = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)
top_labels = st.from_regex(r"[a-z]{2,6}", fullmatch=True)
domains = st.builds(
    lambda parts, top: ".".join([*parts, top]), st.lists(labels, min_size=0, max_size=3), top_labels
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda address: f"[{address}]")
hosts = st.one_of(domains, ipv4, ipv6)
ports = st.one_of(st.none(), st.integers(1, 65535))
users = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,9}", fullmatch=True)


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    user = draw(st.one_of(st.none(), users))
    host = draw(hosts)
    port = draw(ports)
    params = draw(st.sampled_from(["", ";transport=tcp", ";lr", ";user=phone;x=1"]))
    userinfo = f"{user}@" if user else ""
    hostport = host if port is None else f"{host}:{port}"
    return f"{scheme}:{userinfo}{hostport}{params}"


display_names = st.one_of(
    st.none(),
    st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}", fullmatch=True),  # token display name
    st.text("abcXYZ019 ,;:<>@'\\\"", max_size=12).map(
        lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
)


@st.composite
def addresses(draw: st.DrawFn, *, tag: bool | None = None) -> str:
    display = draw(display_names)
    uri = draw(sip_uris())
    with_tag = draw(st.booleans()) if tag is None else tag
    params = f";tag={draw(tokens)}" if with_tag else ""
    if display is None and not draw(st.booleans()) and ";" not in uri:
        return uri + params  # addr-spec form: only without URI parameters
    return f"{display} <{uri}>{params}" if display is not None else f"<{uri}>{params}"


@st.composite
def vias(draw: st.DrawFn) -> str:
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "udp"]))
    host = draw(hosts)
    port = draw(ports)
    sent_by = host if port is None else f"{host}:{port}"
    params = f";branch=z9hG4bK{draw(tokens)}"
    if draw(st.booleans()):
        params += ";rport"
    if draw(st.booleans()):
        params = f";received={draw(ipv4)}" + params
    return f"SIP/2.0/{transport} {sent_by}{params}"


# Header names as written: canonical, lower, upper, compact (RFC 3261 7.3.3).
SPELLINGS = {
    "via": ["Via", "via", "VIA", "v"],
    "from": ["From", "from", "f"],
    "to": ["To", "TO", "t"],
    "call-id": ["Call-ID", "call-id", "Call-Id", "i"],
    "cseq": ["CSeq", "CSEQ", "cseq"],
    "contact": ["Contact", "m"],
    "max-forwards": ["Max-Forwards", "max-forwards"],
    "content-type": ["Content-Type", "c"],
    "content-length": ["Content-Length", "l", "content-length"],
    "supported": ["Supported", "k"],
    "subject": ["Subject", "s"],
}

ext_names = st.from_regex(r"X-[A-Za-z0-9][A-Za-z0-9-]{0,10}", fullmatch=True)
ext_words = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=10)
ext_values = st.lists(ext_words, min_size=0, max_size=5).map(" ".join)


@dataclass(frozen=True)
class Field:
    key: str
    value: str
    fold: bool = False


@st.composite
def header_lines(draw: st.DrawFn, field: Field) -> str:
    """One header field as written: spelling, spacing around the colon, folding."""
    spellings = SPELLINGS.get(field.key, [field.key])
    name = draw(st.sampled_from(spellings))
    before = draw(st.sampled_from(["", "", "", " ", "\t"]))
    after = draw(st.sampled_from([" ", " ", "", "\t", "   "]))
    value = field.value
    if field.fold and " " in value:
        # RFC 3261 7.3.1: a line break plus whitespace is one SP once unfolded.
        fold = draw(st.sampled_from(["\r\n ", "\r\n\t", "\r\n   "]))
        value = value.replace(" ", fold, draw(st.integers(1, value.count(" "))))
    return f"{name}{before}:{after}{value}"


@st.composite
def valid_messages(draw: st.DrawFn) -> bytes:
    """A SIP request or response that a strict parser and the full check accept."""
    is_request = draw(st.booleans())
    method = draw(
        st.one_of(
            st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "NOTIFY"]),
            st.from_regex(r"[A-Z]{3,10}", fullmatch=True),
        )
    )
    if is_request:
        start = f"{method} {draw(sip_uris())} SIP/2.0"
    else:
        reason = draw(st.from_regex(r"([A-Za-z]+( [A-Za-z]+){0,3})?", fullmatch=True))
        start = f"SIP/2.0 {draw(st.integers(100, 699))} {reason}"
    fields = [Field("via", draw(vias())) for _ in range(draw(st.integers(1, 3)))]
    if len(fields) > 1 and draw(st.booleans()):
        fields = [Field("via", ", ".join(field.value for field in fields))]
    fields += [
        Field("from", draw(addresses(tag=True))),
        Field("to", draw(addresses(tag=None if is_request else True))),
        Field("call-id", draw(words) + (f"@{draw(words)}" if draw(st.booleans()) else "")),
        Field("cseq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
    ]
    if is_request:
        fields.append(Field("max-forwards", str(draw(st.integers(0, 255)))))
    if draw(st.booleans()):
        fields.append(Field("contact", draw(addresses(tag=False))))
    if draw(st.booleans()):
        fields.append(Field("supported", draw(st.sampled_from(["", "timer", "timer, 100rel"]))))
    if draw(st.booleans()):
        fields.append(Field("subject", draw(ext_values), fold=draw(st.booleans())))
    for _ in range(draw(st.integers(0, 3))):
        fields.append(Field(draw(ext_names), draw(ext_values), fold=draw(st.booleans())))
    fields = draw(st.permutations(fields))
    body = draw(st.one_of(st.just(b""), st.binary(max_size=200)))
    if body:
        fields.append(Field("content-type", "application/sdp"))
    if body or draw(st.booleans()):
        fields.append(Field("content-length", str(len(body))))
    lines = [start, *(draw(header_lines(field)) for field in fields)]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def stream_messages(draw: st.DrawFn) -> bytes:
    """A valid message that always carries Content-Length (streams need it)."""
    data = draw(valid_messages())
    message = parse_message(data)
    if message.headers.get("Content-Length") is None:
        message.headers.add("Content-Length", str(len(message.body)))
        data = message.to_bytes()
    return data


# -- meaning: what a receiver reads from a message --------------------------------------------


def meaning(message: Message) -> tuple[object, ...]:
    """Start line, fields and typed views; Content-Length aside (an edit adds it)."""
    if isinstance(message, Request):
        start: tuple[object, ...] = ("request", message.method, message.uri)
    else:
        assert isinstance(message, Response)
        start = ("response", message.status, message.reason)
    return (
        *start,
        message.version,
        [(field.key, field.value) for field in message.headers if field.key != "content-length"],
        message.body,
        [(via.transport, via.host, via.port, via.params) for via in message.via],
        str(message.from_),
        message.from_.tag if message.from_ is not None else None,
        str(message.to),
        message.call_id,
        message.cseq,
        [str(address) for address in message.contact],
        message.max_forwards,
        message.content_type.mime if message.content_type is not None else None,
        message.supported,
    )


def rebuilt(message: Message) -> Message:
    """The same message built from its parts (no raw text reused)."""
    copy: Message
    if isinstance(message, Request):
        copy = Request(message.method, message.uri, headers=Headers(), version=message.version)
    else:
        assert isinstance(message, Response)
        copy = Response(message.status, message.reason, headers=Headers(), version=message.version)
    for field in message.headers:
        copy.headers.add(field.name, field.value)
    copy.set_body(message.body)
    return copy


@given(valid_messages())
@SETTINGS
def test_valid_message_roundtrips_byte_exact(data: bytes) -> None:
    message = parse_message(data)
    assert message.defects == []
    message.validate()
    assert message.to_bytes() == data
    lenient = parse_message(data, strict=False)
    assert lenient.collect_defects() == []
    assert meaning(lenient) == meaning(message)
    assert lenient.to_bytes() == data


@given(valid_messages())
@SETTINGS
def test_rebuilt_from_parts_has_the_same_meaning(data: bytes) -> None:
    message = parse_message(data)
    copy = rebuilt(message)
    out = copy.to_bytes()
    again = parse_message(out)
    again.validate()
    assert meaning(again) == meaning(message)


@given(valid_messages(), st.sampled_from(["add", "insert_via", "remove_ext", "set_body"]))
@SETTINGS
def test_edited_message_reparses_with_the_edit(data: bytes, edit: str) -> None:
    message = parse_message(data)
    expected = [(field.key, field.value) for field in message.headers]
    body = message.body
    if edit == "add":
        message.headers.add("X-Sipwarden", "seen")
        expected.append(("x-sipwarden", "seen"))
    elif edit == "insert_via":
        value = "SIP/2.0/UDP gw.example.net;branch=z9hG4bKgw"
        message.headers.insert_before("Via", value)
        expected.insert([key for key, _ in expected].index("via"), ("via", value))
    elif edit == "remove_ext":
        message.headers.remove_where(lambda key: key.startswith("x-"))
        expected = [(key, value) for key, value in expected if not key.startswith("x-")]
    else:
        body = b"replaced body\r\n"
        message.set_body(body)
    out = message.to_bytes()
    if not message.edited:  # a filter that removed nothing changed nothing
        assert out == data
        return
    again = parse_message(out)
    again.validate()
    assert again.body == body
    without_length = [(key, value) for key, value in expected if key != "content-length"]
    fields = [(field.key, field.value) for field in again.headers]
    assert [field for field in fields if field[0] != "content-length"] == without_length
    assert again.headers.get_all("Content-Length") == [str(len(body))]


# -- any bytes: parse or RemoteProtocolError, nothing else -----------------------------------


def property_names(cls: type) -> list[str]:
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        names.extend(name for name, value in vars(klass).items() if isinstance(value, property))
    return sorted(set(names))


REQUEST_PROPERTIES = property_names(Request)
RESPONSE_PROPERTIES = property_names(Response)


def exercise(data: bytes) -> None:
    """Everything a gateway or monitor does with untrusted bytes; only RemoteProtocolError."""
    started = time.perf_counter()
    for strict in (True, False):
        try:
            message = parse_message(data, strict=strict)
        except RemoteProtocolError as error:
            failure: RemoteProtocolError | None = error
        else:
            failure = None
        if failure is not None:
            assert failure.rule
            assert 100 <= failure.status_hint <= 699
            continue
        assert message.to_bytes() in data  # unedited: the very bytes received
        touch_every_view(message)
        with suppress(RemoteProtocolError):
            message.validate()
        defects = message.collect_defects()  # records, never raises
        assert all(defect.rule for defect in defects)
        touch_every_view(message)  # again, after the full check swapped grammars
        message.headers.add("X-Sipwarden", "seen")
        out = message.to_bytes()
        with suppress(RemoteProtocolError):
            parse_message(out, strict=False)
        if strict:
            check_strict_reparse(message, out)
    elapsed = time.perf_counter() - started
    assert elapsed < TIME_BOUND, f"{elapsed:.2f} s for {len(data)} bytes"


def touch_every_view(message: Message) -> None:
    names = REQUEST_PROPERTIES if isinstance(message, Request) else RESPONSE_PROPERTIES
    for name in names:
        with suppress(RemoteProtocolError):
            getattr(message, name)


def check_strict_reparse(message: Message, out: bytes) -> None:
    """What a strict parse accepted and we edited, a strict parse accepts again."""
    try:
        again = parse_message(out)
    except RemoteProtocolError as error:
        failure = error
    else:
        assert fields_of(again) == fields_of(message)
        assert again.body == message.body
        return
    # Growing by one header may cross a limit; nothing else may fail.
    assert failure.rule in {"max_message_size", "max_header_count"}, failure


def fields_of(message: Message) -> list[tuple[str, str]]:
    return [(field.key, field.value) for field in message.headers if field.key != "content-length"]


PREFIXES = [
    b"",
    b"INVITE sip:bob@example.com SIP/2.0\r\n",
    b"SIP/2.0 200 OK\r\n",
    b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",
]
INTERESTING = [
    b"\r\n", b"\r", b"\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"=", b"@",
    b"/", b"[", b"]", b"?", b"%", b"\x00", b"\xff", b"\xc3\xa9", b"\r\n ", b"\r\n\r\n",
    b"sip:", b"SIP/2.0", b"Via: ", b"l: ", b"m: *", b"Content-Length: 99", b"CSeq: 1 X",
]  # fmt: skip
HEADER_NAMES = [
    "Via", "v", "From", "f", "To", "t", "Call-ID", "CSeq", "Contact", "m", "Max-Forwards",
    "Content-Length", "l", "Content-Type", "c", "Route", "Record-Route", "Expires", "Supported",
    "Require", "Proxy-Require", "Date", "Warning", "Diversion", "History-Info", "Authorization",
    "Proxy-Authorization", "WWW-Authenticate", "Proxy-Authenticate", "User-Agent",
]  # fmt: skip
VALUE_ALPHABET = 'aZ09:;,<>"\\@=. /[]?%*\t\u00e9-_!~+'


@st.composite
def structured_garbage(draw: st.DrawFn) -> bytes:
    """A request or status line, known header names, values from SIP's punctuation."""
    start = draw(
        st.sampled_from([b"INVITE sip:a@b SIP/2.0", b"SIP/2.0 401 Unauthorized", b"BYE x SIP/2.0"])
    )
    lines = [
        f"{draw(st.sampled_from(HEADER_NAMES))}: {draw(st.text(VALUE_ALPHABET, max_size=40))}"
        for _ in range(draw(st.integers(0, 8)))
    ]
    body = draw(st.binary(max_size=20))
    return start + b"\r\n" + "\r\n".join(lines).encode() + b"\r\n\r\n" + body


@given(
    st.one_of(
        st.binary(max_size=2000),
        st.builds(lambda prefix, rest: prefix + rest, st.sampled_from(PREFIXES), st.binary()),
        st.lists(st.sampled_from(INTERESTING), max_size=40).map(b"".join),
        structured_garbage(),
    )
)
@settings(SETTINGS, max_examples=400)
def test_arbitrary_bytes_parse_or_raise_remote_protocol_error(data: bytes) -> None:
    exercise(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_messages()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup_line"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[position:position] = draw(
                st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=8))
            )
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[position:]
        else:
            lines = bytes(data).split(b"\r\n")
            index = draw(st.integers(0, len(lines) - 1))
            lines.insert(index, lines[index])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@given(mutated())
@settings(SETTINGS, max_examples=200)
def test_mutated_messages_parse_or_raise_remote_protocol_error(data: bytes) -> None:
    exercise(data)


# -- streams: any chunking, the same messages -------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    data: bytes
    messages: list[bytes]
    keepalives: list[KeepAlive]
    cuts: list[int]


KEEPALIVES = {b"\r\n\r\n": KeepAlive("ping"), b"\r\n": KeepAlive("pong")}  # RFC 5626 3.5.1


@st.composite
def pipelined(draw: st.DrawFn) -> Pipeline:
    parts: list[bytes] = []
    messages: list[bytes] = []
    keepalives: list[KeepAlive] = []
    for _ in range(draw(st.integers(1, 4))):
        # At most one keep-alive before each message: two pongs in a row are a ping.
        keepalive = draw(st.sampled_from([None, *KEEPALIVES]))
        if keepalive is not None:
            parts.append(keepalive)
            keepalives.append(KEEPALIVES[keepalive])
        messages.append(stream_messages(draw))
        parts.append(messages[-1])
    data = b"".join(parts)
    cuts = sorted(draw(st.sets(st.integers(1, max(len(data) - 1, 1)), max_size=30)))
    return Pipeline(data, messages, keepalives, cuts)


def stream_summary(parser: StreamParser, chunks: list[bytes]) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        parser.feed(chunk)
        while (event := parser.next_event()) is not None:
            if isinstance(event, KeepAlive):
                events.append(event)
            else:
                events.append((type(event).__name__, event.to_bytes(), meaning(event)))
    return events


@given(pipelined())
@settings(SETTINGS, max_examples=60)
def test_stream_chunking_does_not_change_the_messages(case: Pipeline) -> None:
    data = case.data
    bounds = zip([0, *case.cuts], [*case.cuts, len(data)], strict=True)
    chunks = [data[start:end] for start, end in bounds]
    whole = stream_summary(StreamParser(), [data])
    assert stream_summary(StreamParser(), chunks) == whole
    messages = [event[1] for event in whole if isinstance(event, tuple)]
    assert messages == case.messages
    assert [event for event in whole if isinstance(event, KeepAlive)] == case.keepalives
    for event, raw in zip(
        [event for event in whole if isinstance(event, tuple)], case.messages, strict=True
    ):
        assert event[2] == meaning(parse_message(raw))


@given(st.lists(st.binary(max_size=200), max_size=10))
@SETTINGS
def test_stream_of_arbitrary_chunks_parses_or_raises(chunks: list[bytes]) -> None:
    for strict in (True, False):
        parser = StreamParser(strict=strict)
        try:
            for chunk in chunks:
                parser.feed(chunk)
                while (event := parser.next_event()) is not None:
                    if not isinstance(event, KeepAlive):
                        event.to_bytes()
                        touch_every_view(event)
                        with suppress(RemoteProtocolError):
                            event.validate()
                        event.collect_defects()
        except RemoteProtocolError:
            pass
