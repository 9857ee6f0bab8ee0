"""Benchmark the SIP core's hot path: lazy and full parse, unchanged and edited serialise.

Run: ``.venv/bin/python bench/parse.py`` (``make bench``). Pinned to one core.
Absolute rates on shared machines are noisy, so each figure is also printed
as a ratio against a baseline measured in the same run: the stdlib's
``email`` header parser (an RFC 5322 parser in pure Python) on the same bytes.
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from email.parser import BytesHeaderParser
from email.policy import compat32

from sipwarden.sip.message import Message
from sipwarden.sip.parser import parse_message

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, INFO\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: Grandstream GXP2170 1.0.11.3\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 253\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
REGISTER = (
    b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:bob@192.0.2.4;transport=udp>;expires=7200\r\n"
    b'Authorization: Digest username="bob", realm="biloxi.example.com", '
    b'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:registrar.biloxi.example.com", '
    b'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, qop=auth, nc=00000001, '
    b'cnonce="0a4f113b", opaque="5ccc069c403ebaf9f0171e9517f40e41"\r\n'
    b"User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    b"Expires: 7200\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4>\r\n"
    b"Server: Asterisk PBX 18.20.0\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def full_parse(data: bytes) -> Message:
    """Parse and validate every header the strict gateway checks."""
    message = parse_message(data)
    message.validate()
    return message


def edited_serialise(data: bytes) -> bytes:
    """What a proxy does: add its Via, rewrite Contact, drop User-Agent, serialise."""
    message = parse_message(data)
    message.headers.insert_before("Via", "SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKgw1")
    message.headers.set("Contact", "<sip:gw@203.0.113.1:5060>")
    message.headers.remove("User-Agent")
    return message.to_bytes()


def per_call_variants(template: bytes, count: int = 5000) -> list[bytes]:
    """``count`` copies of a message with the per-call identifiers made unique.

    Real traffic repeats addresses (the same phones, the same callees) but
    never Call-ID, From tag or Via branch: parsing the very same bytes over
    and over would flatter any cache. The figures use these variants.
    """
    return [
        template.replace(b"a84b4c76e66710", b"c%013d" % index)
        .replace(b"843817637684230", b"r%014d" % index)
        .replace(b"tag=1928301774", b"tag=f%09d" % index)
        .replace(b"tag=456248", b"tag=g%05d" % (index % 100000))
        .replace(b"z9hG4bK776asdhds", b"z9hG4bKv%08d" % index)
        .replace(b"z9hG4bKnashds7", b"z9hG4bKw%06d" % (index % 1000000))
        for index in range(count)
    ]


def rate(
    function: Callable[[bytes], object], data: bytes | list[bytes], seconds: float = 1.0
) -> float:
    """Calls per second over the variants, best of three timed rounds after a warm-up."""
    inputs = data if isinstance(data, list) else [data]
    for item in inputs[:2000]:
        function(item)
    best = 0.0
    size = len(inputs)
    for _ in range(3):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for index in range(count, count + 500):
                function(inputs[index % size])
            count += 500
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def email_baseline(data: bytes) -> object:
    return BytesHeaderParser(policy=compat32).parsebytes(data)


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    unchanged = parse_message(INVITE)
    invites = per_call_variants(INVITE)
    registers = per_call_variants(REGISTER)
    oks = per_call_variants(OK_200)
    figures = {
        "baseline_email_parser_invite_per_s": rate(email_baseline, invites),
        "lazy_invite_per_s": rate(parse_message, invites),
        "full_invite_per_s": rate(full_parse, invites),
        "full_invite_same_bytes_per_s": rate(full_parse, INVITE),
        "lazy_register_per_s": rate(parse_message, registers),
        "full_register_per_s": rate(full_parse, registers),
        "lazy_200_per_s": rate(parse_message, oks),
        "full_200_per_s": rate(full_parse, oks),
        "serialise_unchanged_per_s": rate(lambda _d: unchanged.to_bytes(), INVITE),
        "parse_edit_serialise_invite_per_s": rate(edited_serialise, invites),
    }
    baseline = figures["baseline_email_parser_invite_per_s"]
    print(f"{'figure':40} {'per second':>12} {'vs email parser':>16}")
    for name, value in figures.items():
        print(f"{name:40} {value:12,.0f} {value / baseline:15.2f}x")
    targets = {"lazy_invite_per_s": 100_000, "full_invite_per_s": 30_000}
    for name, target in targets.items():
        verdict = "meets" if figures[name] >= target else "MISSES"
        print(f"{name} {verdict} the target of {target:,}/s", file=sys.stderr)
    result: dict[str, object] = {name: round(value) for name, value in figures.items()}
    result["ratio_lazy_vs_email"] = round(figures["lazy_invite_per_s"] / baseline, 3)
    result["ratio_full_vs_email"] = round(figures["full_invite_per_s"] / baseline, 3)
    result["python"] = sys.version.split()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
