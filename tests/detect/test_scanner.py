"""Scanner signatures: annotated messages of real tools and real phones, and the shared captures.

Each sample below is a request as the tool (or the phone) writes it, annotated
with the signatures it must match: exactly those, so a signature that starts
matching a legitimate phone fails here. Attack-tool messages follow the tools'
sources (SIPVicious svhelper.py/svmap.py/svcrack.py, sippts functions.py,
nmap nselib/sip.lua and nmap-service-probes, sipsak request.c); phone messages
follow what those products send (User-Agent, tag, branch and Call-ID shapes).
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.detect.scanner import (
    CHECKS,
    MATCH_FIELDS,
    RequestFields,
    ScannerDetector,
    ScannerSettings,
    builtin_signatures,
    decode_sipvicious_tag,
    load_signatures,
    merge_signatures,
    signatures_for,
)
from sipwarden.engine.contract import (
    Action,
    Direction,
    EventKind,
    Inspection,
    Observation,
    SecurityEvent,
    Severity,
)
from sipwarden.engine.engine import Engine, Findings
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.monitor.sources import observations_from_pcap
from sipwarden.sip.message import Request
from sipwarden.sip.parser import parse_message
from support import shared_path

PBX = "203.0.113.10"
ATTACKER = "198.51.100.23"


def sv_tag(data: str, random: int = 4291811489) -> str:
    """A From tag as SIPVicious createTag() writes it: hex(data + b'\\x01' + digits)."""
    return binascii.b2a_hex(data.encode() + b"\x01" + str(random).encode()).decode()


def sip(start: str, *headers: str, body: str = "") -> bytes:
    """A message from its start line and header lines (CRLF, Content-Length added)."""
    lines = [start, *headers, f"Content-Length: {len(body.encode())}", "", body]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def observation(
    raw: bytes, *, src: str = ATTACKER, ts: float = 1_800_000_000.0, sport: int = 5060
) -> Observation:
    try:
        message = parse_message(raw, strict=False)
    except RemoteProtocolError as error:
        return Observation(ts, src, sport, PBX, 5060, "udp", Direction.INBOUND, raw, None, error)
    return Observation(ts, src, sport, PBX, 5060, "udp", Direction.INBOUND, raw, message, None)


def request(raw: bytes) -> Request:
    message = parse_message(raw, strict=False)
    assert isinstance(message, Request)
    return message


# Built once: every test that does not change the settings shares the parsed signatures.
DETECTOR = ScannerDetector()


def matched_names(raw: bytes, detector: ScannerDetector = DETECTOR) -> set[str]:
    return {found.signature.name for found in detector.match(request(raw))}


# -- annotated samples: attack tools ---------------------------------------------------------

SVMAP_OPTIONS = sip(
    # svmap 127.0.0.1:15060 (default OPTIONS probe; as in shared/testdata/captures/svmap.pcap)
    "OPTIONS sip:100@127.0.0.1 SIP/2.0",
    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1375984418;rport",
    "Max-Forwards: 70",
    'To: "sipvicious"<sip:100@1.1.1.1>',
    f'From: "sipvicious"<sip:100@1.1.1.1>;tag={sv_tag("7f0000013ad4")}',
    "User-Agent: friendly-scanner",
    "Call-ID: 147770265600628708133308",
    "Contact: sip:100@127.0.0.1:5060",
    "CSeq: 1 OPTIONS",
    "Accept: application/sdp",
)

ATTACK_SAMPLES: list[tuple[str, bytes, set[str]]] = [
    (
        "svmap default OPTIONS",
        SVMAP_OPTIONS,
        {
            "sipvicious-user-agent",
            "sipvicious-tag",
            "svmap-default-from",
            "svmap-from-equals-to",
            "sipvicious-message-shape",
        },
    ),
    (
        # svmap -m INVITE --fromname alice with a patched User-Agent: the tag still gives it away
        "svmap with a disguised User-Agent",
        sip(
            "INVITE sip:100@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-83710264;rport",
            "Max-Forwards: 70",
            'To: "alice"<sip:200@example.org>',
            f'From: "alice"<sip:200@example.org>;tag={sv_tag("c00002071Bc4", 12345678)}',
            "User-Agent: Yealink SIP-T46S 66.86.0.15",
            "Call-ID: 902372106533458801264",
            "Contact: sip:100@198.51.100.23:5060",
            "CSeq: 1 INVITE",
            "Accept: application/sdp",
        ),
        {"sipvicious-tag", "svmap-from-equals-to", "sipvicious-message-shape"},
    ),
    (
        # svmap -c (compact headers): no User-Agent at all
        "svmap compact mode",
        sip(
            "OPTIONS sip:100@192.0.2.7 SIP/2.0",
            "v: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-2201934;rport",
            'f: "sipvicious"<sip:100@1.1.1.1>;tag=' + sv_tag("c000020713c4", 2201934),
            't: "sipvicious"<sip:100@1.1.1.1>',
            "i: 883001927365512",
            "m: sip:100@198.51.100.23:5060",
            "CSeq: 1 OPTIONS",
            "Max-Forwards: 70",
            "Accept: application/sdp",
        ),
        {
            "sipvicious-tag",
            "svmap-default-from",
            "svmap-from-equals-to",
            "sipvicious-message-shape",
        },
    ),
    (
        "svwar REGISTER sweep",
        sip(
            "REGISTER sip:127.0.0.1 SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-104038851;rport",
            "Max-Forwards: 70",
            'To: "95"<sip:95@127.0.0.1>',
            f'From: "95"<sip:95@127.0.0.1>;tag={sv_tag("95", 1411701448)}',
            "User-Agent: friendly-scanner",
            "Call-ID: 3385717534",
            "Contact: sip:95@127.0.0.1",
            "CSeq: 1 REGISTER",
            "Accept: application/sdp",
        ),
        {"sipvicious-user-agent", "sipvicious-tag", "sipvicious-message-shape"},
    ),
    (
        "svcrack first probe (fixed tag, default Contact)",
        sip(
            "REGISTER sip:127.0.0.1 SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1919051530;rport",
            "Max-Forwards: 70",
            'To: "100" <sip:100@127.0.0.1>',
            'From: "100" <sip:100@127.0.0.1>;tag=3206210844',
            "User-Agent: friendly-scanner",
            "Call-ID: 2371182930",
            "Contact: sip:123@1.1.1.1",
            "CSeq: 1 REGISTER",
            "Accept: application/sdp",
        ),
        {
            "sipvicious-user-agent",
            "svcrack-probe-tag",
            "sipvicious-default-contact",
            "sipvicious-message-shape",
        },
    ),
    (
        "svcrack password attempt",
        sip(
            "REGISTER sip:127.0.0.1 SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-2707517316;rport",
            "Max-Forwards: 70",
            'To: "100" <sip:100@127.0.0.1>',
            f'From: "100" <sip:100@127.0.0.1>;tag={sv_tag("100:100", 2406320498)}',
            "User-Agent: friendly-scanner",
            "Call-ID: 2371182930",
            "Contact: sip:123@1.1.1.1",
            "CSeq: 2 REGISTER",
            "Accept: application/sdp",
            'Authorization: Digest username="100",realm="lab.invalid",'
            'nonce="ca0a452ca5be46aa1e6adae5a30ac132",uri="sip:127.0.0.1",algorithm=MD5,'
            'qop=auth,response="9d6baf8110d85cd963b0f7f24ec746cf"',
        ),
        {
            "sipvicious-user-agent",
            "sipvicious-tag",
            "sipvicious-default-contact",
            "sipvicious-message-shape",
        },
    ),
    (
        # sippts scan 192.0.2.7 (functions.py create_message, sipscan.py defaults)
        "sippts scan OPTIONS",
        sip(
            "OPTIONS sip:100@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 10.0.0.1:41727;branch="
            "q3nvm1f8k0z2x7c4b9a6s5d0f1g2h3j4k5l6p7o8i9u0y1t2r3e4w5q6a7s8d9f0g1h2j3k;rport",
            "From:  <sip:100@192.0.2.7>;tag=3fa91c0e",
            "To:  <sip:100@192.0.2.7>",
            "Contact: <sip:100@10.0.0.1:41727;transport=UDP>;expires=120",
            "Call-ID: 6f1c0a9e3b7d2f4c8a5e1b0d9c7f3a2e",
            "CSeq: 1 OPTIONS",
            "Max-Forwards: 70",
            "User-Agent: pplsip",
            "Allow: INVITE, REGISTER, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, INFO, "
            "SUBSCRIBE, UPDATE, PRACK, MESSAGE",
        ),
        {"pplsip-user-agent", "sippts-message-shape"},
    ),
    (
        "sippts with -ua set to a phone's",
        sip(
            "REGISTER sip:192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 10.0.0.1:50211;branch="
            "vq24zklmvt45hu43jsiom1tma7v3di8fppv5aspzh8rzhqmoe95b9ee0vbgi09qynk8w3tz;rport",
            "From:  <sip:200@192.0.2.7>;tag=b01d4e7a",
            "To:  <sip:200@192.0.2.7>",
            "Contact: <sip:200@10.0.0.1:50211;transport=UDP>;expires=120",
            "Call-ID: 0d4e9a7c2b6f1e3a8c5d0b9f7e2a4c6d",
            "CSeq: 1 REGISTER",
            "Max-Forwards: 70",
            "User-Agent: Grandstream GXP2170 1.0.11.23",
            "Expires: 120",
        ),
        {"sippts-message-shape"},
    ),
    (
        "sippts' Perl ancestor (sipptk)",
        sip(
            "OPTIONS sip:100@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK0f1e2d3c;rport",
            "From: 100 <sip:100@10.0.0.1>;tag=0c1d2e3f",
            "To: 100 <sip:100@192.0.2.7>",
            "Call-ID: 9a8b7c6d5e4f@10.0.0.1",
            "CSeq: 1 OPTIONS",
            "Max-Forwards: 70",
            "User-Agent: sipptk",
        ),
        {"pplsip-user-agent"},
    ),
    (
        # nmap --script sip-enum-users (nselib/sip.lua Request:__tostring)
        "Nmap NSE sip library",
        sip(
            "REGISTER sip:192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:40213;rport;branch=z9hG4bKq0W8e2R4t6Y8u0I2o4P6a8S0d",
            "Max-Forwards: 70",
            'From: "Nmap NSE" <sip:1000@192.0.2.7>;tag=Ab3_dE5fG7hI9jK1lM3n',
            'To: "Nmap NSE" <sip:1000@192.0.2.7>',
            "Call-ID: Zx8_cV6bN4mQ2wE0rT9y",
            "CSeq: 1234 REGISTER",
            "User-Agent: Nmap NSE",
            'Contact: "Nmap NSE" <sip:1000@198.51.100.23:40213>',
            "Expires: 300",
            "Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, SUBSCRIBE, NOTIFY, REFER, "
            "MESSAGE, OPTIONS",
        ),
        {"nmap-nse-user-agent", "nmap-nse-display-name"},
    ),
    (
        # nmap -sV / -sU payload "SIPOptions" (nmap-service-probes)
        "Nmap service probe",
        sip(
            "OPTIONS sip:nm SIP/2.0",
            "Via: SIP/2.0/UDP nm;branch=foo;rport",
            "From: <sip:nm@nm>;tag=root",
            "To: <sip:nm2@nm2>",
            "Call-ID: 50000",
            "CSeq: 42 OPTIONS",
            "Max-Forwards: 70",
            "Contact: <sip:nm@nm>",
            "Accept: application/sdp",
        ),
        {"nmap-sip-options-probe"},
    ),
    (
        "sipcli toll-fraud INVITE",
        sip(
            "INVITE sip:0046812345678@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:5071;branch=z9hG4bK1785306712;rport",
            "From: <sip:1000@192.0.2.7>;tag=1476593018",
            "To: <sip:0046812345678@192.0.2.7>",
            "Call-ID: 1957285213@198.51.100.23",
            "CSeq: 1 INVITE",
            "Contact: <sip:1000@198.51.100.23:5071>",
            "Max-Forwards: 70",
            "User-Agent: sipcli/v1.8",
        ),
        {"sipcli-user-agent"},
    ),
    (
        # sipsak -s sip:100@192.0.2.7 (request.c REQ_OPT)
        "sipsak OPTIONS",
        sip(
            "OPTIONS sip:100@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:43120;branch=z9hG4bK.29b2a4f1;rport;alias",
            "From: sip:sipsak@198.51.100.23:43120;tag=4f3b1a7e",
            "To: sip:100@192.0.2.7",
            "Call-ID: 1329273470@198.51.100.23",
            "CSeq: 1 OPTIONS",
            "Contact: sip:sipsak@198.51.100.23:43120",
            "Max-Forwards: 70",
            "User-Agent: sipsak 0.9.8",
            "Accept: text/plain",
        ),
        {"sipsak-user-agent", "sipsak-from-user"},
    ),
    (
        "sip-scan",
        sip(
            "OPTIONS sip:100@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK77102;rport",
            "From: <sip:100@192.0.2.7>;tag=5a2e",
            "To: <sip:100@192.0.2.7>",
            "Call-ID: 77102@198.51.100.23",
            "CSeq: 1 OPTIONS",
            "User-Agent: sip-scan",
        ),
        {"sip-scan-user-agent"},
    ),
    (
        "sundayddr",
        sip(
            "OPTIONS sip:100@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK930216",
            "From: <sip:100@192.0.2.7>;tag=930216",
            "To: <sip:100@192.0.2.7>",
            "Call-ID: 930216@198.51.100.23",
            "CSeq: 1 OPTIONS",
            "User-Agent: sundayddr",
        ),
        {"sundayddr-user-agent"},
    ),
    (
        "iWar war dialler",
        sip(
            "INVITE sip:5551234@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK41a2",
            "From: <sip:iwar@198.51.100.23>;tag=41a2",
            "To: <sip:5551234@192.0.2.7>",
            "Call-ID: 41a2b3c4@198.51.100.23",
            "CSeq: 1 INVITE",
            "User-Agent: iWar",
        ),
        {"iwar-user-agent"},
    ),
    (
        "smap",
        sip(
            "OPTIONS sip:192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK.1f2e3d4c",
            "From: <sip:smap@localhost>;tag=1f2e3d4c",
            "To: <sip:smap@192.0.2.7>",
            "Call-ID: 1f2e3d4c@localhost",
            "CSeq: 23 OPTIONS",
            "User-Agent: smap 0.6.0",
        ),
        {"smap-user-agent"},
    ),
    (
        "SIP Army Knife",
        sip(
            "INVITE sip:100@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK5531",
            "From: <sip:100@198.51.100.23>;tag=5531",
            "To: <sip:100@192.0.2.7>",
            "Call-ID: 5531@198.51.100.23",
            "CSeq: 1 INVITE",
            "User-Agent: siparmyknife",
        ),
        {"siparmyknife-user-agent"},
    ),
    (
        "SiVuS",
        sip(
            "OPTIONS sip:100@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK2004",
            "From: <sip:sivus@198.51.100.23>;tag=2004",
            "To: <sip:100@192.0.2.7>",
            "Call-ID: 2004@198.51.100.23",
            "CSeq: 1 OPTIONS",
            "User-Agent: SIVuS 1.09",
        ),
        {"sivus-user-agent"},
    ),
    (
        "VaxSIPUserAgent toll-fraud INVITE",
        sip(
            "INVITE sip:900972592348861@192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:5070"
            ";branch=z9hG4bK-d87543-5a2f1c0e9b3d7a41-1--d87543-;rport",
            "From: <sip:101@192.0.2.7>;tag=6b1f0e3a",
            "To: <sip:900972592348861@192.0.2.7>",
            "Call-ID: MzE3YjY0ZTk3NjJhNGE2OGYzN2Q4ZDY0YzE0ZjM2YzE.",
            "CSeq: 1 INVITE",
            "Contact: <sip:101@198.51.100.23:5070>",
            "User-Agent: VaxSIPUserAgent/3.1",
        ),
        {"vaxsip-user-agent"},
    ),
    (
        "VaxIPUserAgent",
        sip(
            "REGISTER sip:192.0.2.7 SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.23:5070;branch=z9hG4bK-d87543-77a0c1e2-1--d87543-;rport",
            "From: <sip:101@192.0.2.7>;tag=0a1b2c3d",
            "To: <sip:101@192.0.2.7>",
            "Call-ID: NzdhMGMxZTI.",
            "CSeq: 1 REGISTER",
            "User-Agent: VaxIPUserAgent/3.5",
        ),
        {"vaxsip-user-agent"},
    ),
]

# -- annotated samples: legitimate phones and PBXs (must match nothing) -----------------------

PHONE_SAMPLES: list[tuple[str, bytes]] = [
    (
        "Yealink REGISTER (From equals To, as every registration)",
        sip(
            "REGISTER sip:pbx.example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.100:5062;branch=z9hG4bK1846356125",
            'From: "Alice" <sip:100@pbx.example.com>;tag=1523698745',
            'To: "Alice" <sip:100@pbx.example.com>',
            "Call-ID: 0_2857123456@192.168.1.100",
            "CSeq: 1 REGISTER",
            "Contact: <sip:100@192.168.1.100:5062>;reg-id=1;+sip.instance="
            '"<urn:uuid:00000000-0000-1000-8000-805EC0A1B2C3>"',
            "Max-Forwards: 70",
            "User-Agent: Yealink SIP-T46S 66.86.0.15",
            "Expires: 3600",
            "Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, "
            "SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE",
        ),
    ),
    (
        "Yealink MWI SUBSCRIBE to its own mailbox",
        sip(
            "SUBSCRIBE sip:100@pbx.example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.100:5062;branch=z9hG4bK2058913346",
            'From: "Alice" <sip:100@pbx.example.com>;tag=2145897362',
            'To: "Alice" <sip:100@pbx.example.com>',
            "Call-ID: 0_2857199012@192.168.1.100",
            "CSeq: 1 SUBSCRIBE",
            "Contact: <sip:100@192.168.1.100:5062>",
            "Max-Forwards: 70",
            "User-Agent: Yealink SIP-T46S 66.86.0.15",
            "Expires: 3600",
            "Event: message-summary",
            "Accept: application/simple-message-summary",
        ),
    ),
    (
        "Yealink calls its own extension (voicemail)",
        sip(
            "INVITE sip:100@pbx.example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.100:5062;branch=z9hG4bK2091456630",
            'From: "Alice" <sip:100@pbx.example.com>;tag=1967230458',
            "To: <sip:100@pbx.example.com>",
            "Call-ID: 0_2860011234@192.168.1.100",
            "CSeq: 1 INVITE",
            "Contact: <sip:100@192.168.1.100:5062>",
            "Max-Forwards: 70",
            "User-Agent: Yealink SIP-T46S 66.86.0.15",
            "Content-Type: application/sdp",
        ),
    ),
    (
        "Polycom VVX INVITE",
        sip(
            "INVITE sip:201@pbx.example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.21:5060;branch=z9hG4bK58b4e6d63A7CB2E5;rport",
            'From: "Bob" <sip:101@pbx.example.com>;tag=C2B0E1B4-4E0F1A2D',
            "To: <sip:201@pbx.example.com;user=phone>",
            "CSeq: 1 INVITE",
            "Call-ID: 3f8b4a1e-bb5c7a2d-f0e1c2d3@192.168.1.21",
            "Contact: <sip:101@192.168.1.21>",
            "User-Agent: PolycomVVX-VVX_411-UA/6.3.1.8427",
            "Accept-Language: en",
            "Supported: 100rel,replaces",
            "Allow-Events: conference,talk,hold",
            "Max-Forwards: 70",
        ),
    ),
    (
        "Grandstream REGISTER with credentials",
        sip(
            "REGISTER sip:pbx.example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.30:5060;branch=z9hG4bK1783456921;rport",
            'From: "Carol" <sip:102@pbx.example.com>;tag=1529394812',
            'To: "Carol" <sip:102@pbx.example.com>',
            "Call-ID: 1675432109-5060-1@BA.CA.DA.EA",
            "CSeq: 2 REGISTER",
            "Contact: <sip:102@192.168.1.30:5060;transport=udp>",
            'Authorization: Digest username="102", realm="asterisk", '
            'nonce="1a2b3c4d", uri="sip:pbx.example.com", response="0f9e8d7c6b5a49382716"'
            ", algorithm=MD5",
            "Max-Forwards: 70",
            "User-Agent: Grandstream GXP2170 1.0.11.23",
            "Expires: 3600",
        ),
    ),
    (
        "Asterisk chan_pjsip qualify OPTIONS",
        sip(
            "OPTIONS sip:101@192.168.1.21:5060 SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.5:5060;rport;branch=z9hG4bKPj6f1e3c0a-4b2d-4e8f-9a7c",
            "From: <sip:101@192.168.1.5>;tag=7a3f9e2b-1c4d-4a6e-8f0b-2d5c7e9a1b3f",
            "To: <sip:101@192.168.1.21>",
            "Contact: <sip:101@192.168.1.5:5060>",
            "Call-ID: 3e5d7c9b-1a2f-4e6d-8c0b-9a7f5e3d1c2b",
            "CSeq: 27190 OPTIONS",
            "Max-Forwards: 70",
            "User-Agent: Asterisk PBX 18.12.1",
        ),
    ),
    (
        "Asterisk chan_sip qualify OPTIONS",
        sip(
            "OPTIONS sip:101@192.168.1.21:5060 SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK3c1a2b4d;rport",
            "Max-Forwards: 70",
            'From: "asterisk" <sip:asterisk@192.168.1.5>;tag=as6b2c1d3e',
            "To: <sip:101@192.168.1.21:5060>",
            "Contact: <sip:asterisk@192.168.1.5:5060>",
            "Call-ID: 5c1b0e8a3f7d2e1c10f2a4b6@192.168.1.5:5060",
            "CSeq: 102 OPTIONS",
            "User-Agent: Asterisk PBX 16.2.1",
            "Date: Tue, 24 Nov 2026 16:30:55 GMT",
            "Accept: application/sdp",
        ),
    ),
    (
        "FreeSWITCH outbound INVITE",
        sip(
            "INVITE sip:+441632960961@trunk.example.net SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.50:5080;rport;branch=z9hG4bKp7rNc3UK5e0Xa",
            "Max-Forwards: 69",
            'From: "Alice" <sip:100@192.0.2.50>;tag=Hm8p3K0rQ2g0N',
            "To: <sip:+441632960961@trunk.example.net>",
            "Call-ID: b7a3c1d0-5e9f-123b-8c2d-0242ac110002",
            "CSeq: 104287731 INVITE",
            "Contact: <sip:mod_sofia@192.0.2.50:5080>",
            "User-Agent: FreeSWITCH-mod_sofia/1.10.9-release~64bit",
            "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, "
            "REFER, NOTIFY",
        ),
    ),
    (
        "Zoiper REGISTER (reSIProcate-style dashed branch)",
        sip(
            "REGISTER sip:pbx.example.com;transport=UDP SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.40:52731;branch=z9hG4bK-524287-1---8f3a2b1c4d5e6f70;rport",
            "Max-Forwards: 70",
            "Contact: <sip:103@192.168.1.40:52731;rinstance=5e1f9a2b3c4d;transport=UDP>",
            "To: <sip:103@pbx.example.com;transport=UDP>",
            "From: <sip:103@pbx.example.com;transport=UDP>;tag=9a8b7c6d",
            "Call-ID: Yk9vN2ZlM2I0ZDc5YjA1ZTk4MjYxZjQ3NjU4OTg2",
            "CSeq: 1 REGISTER",
            "Expires: 60",
            "User-Agent: Z 5.5.13 v2.10.18.2",
            "Allow-Events: presence, kpml, talk",
        ),
    ),
    (
        "Linphone REGISTER",
        sip(
            "REGISTER sip:sip.example.org SIP/2.0",
            "Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK.Hc9r~dMjE;rport",
            "From: <sip:dave@sip.example.org>;tag=vAmEuEeYh",
            "To: sip:dave@sip.example.org",
            "CSeq: 20 REGISTER",
            "Call-ID: Fq7tDcn3Xc",
            "Max-Forwards: 70",
            "Supported: replaces, outbound, gruu, path",
            "Contact: <sip:dave@192.168.1.50;transport=udp>;+sip.instance="
            '"<urn:uuid:3a2b1c0d-9e8f-4a7b-b6c5-d4e3f2a1b0c9>"',
            "Expires: 600",
            "User-Agent: Linphone/5.0.5 (belle-sip/5.0.0)",
        ),
    ),
    (
        "SIPp UAC INVITE (load testing, not a scanner)",
        sip(
            "INVITE sip:service@127.0.0.1:15060 SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK-8462-1-0",
            "From: sipp <sip:sipp@127.0.0.1:15070>;tag=8462SIPpTag001",
            "To: service <sip:service@127.0.0.1:15060>",
            "Call-ID: 1-8462@127.0.0.1",
            "CSeq: 1 INVITE",
            "Contact: sip:sipp@127.0.0.1:15070",
            "Max-Forwards: 70",
            "Subject: Performance Test",
        ),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), [(r, e) for _, r, e in ATTACK_SAMPLES],
                         ids=[name for name, _, _ in ATTACK_SAMPLES])  # fmt: skip
def test_attack_tool_sample_matches_exactly_its_signatures(raw: bytes, expected: set[str]) -> None:
    assert matched_names(raw) == expected


@pytest.mark.parametrize("raw", [raw for _, raw in PHONE_SAMPLES],
                         ids=[name for name, _ in PHONE_SAMPLES])  # fmt: skip
def test_legitimate_phone_matches_no_signature(raw: bytes) -> None:
    assert matched_names(raw) == set()
    findings = Findings(None)
    DETECTOR.observe(observation(raw), findings)
    assert findings.events == []
    assert findings.verdict.allowed


def test_every_shipped_signature_has_a_matching_sample() -> None:
    covered = set().union(*(expected for _, _, expected in ATTACK_SAMPLES))
    assert {signature.name for signature in builtin_signatures()} == covered


def test_shipped_signatures_are_documented_and_named_for_rules() -> None:
    signatures = builtin_signatures()
    assert len(signatures) >= 20
    for signature in signatures:
        assert signature.description, signature.name
        assert signature.reference, signature.name
        assert signature.rule == f"scanner.{signature.name}"
    tools = {signature.tool for signature in signatures}
    for tool in ("SIPVicious", "sippts", "Nmap", "sipcli", "sipsak", "sip-scan", "sundayddr",
                 "iWar", "smap", "VaxSIPUserAgent"):  # fmt: skip
        assert tool in tools
    by_name = {signature.name: signature for signature in signatures}
    assert by_name["sipvicious-user-agent"].severity is Severity.HIGH
    # An admin's own monitoring may well be sipsak: reported, never blocked by default.
    assert by_name["sipsak-user-agent"].confidence == "medium"
    assert by_name["sipsak-user-agent"].severity < Severity.HIGH


# -- the SIPVicious tag ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind", "text"),
    [
        ("7f0000013ad4", "target", "127.0.0.1:15060"),  # svmap: 127.0.0.1:15060
        ("c0a8010113c4", "target", "192.168.1.1:5060"),
        ("95", "extension", "95"),  # svwar
        ("3252733393", "extension", "3252733393"),  # svwar's random first probe
        ("100:123", "credentials", "100:123"),  # svcrack: user 100, password 123
        ("alice:pässwörd", "credentials", "alice:pässwörd"),  # dictionary words are UTF-8
    ],
)
def test_sipvicious_tag_decodes_what_was_probed(data: str, kind: str, text: str) -> None:
    decoded = decode_sipvicious_tag(sv_tag(data))
    assert decoded is not None
    assert (decoded.kind, decoded.text) == (kind, text)


@pytest.mark.parametrize(
    "tag",
    [
        "3206210844",  # decimal (svcrack's probe; Yealink tags look alike)
        "as6b2c1d3e",  # Asterisk chan_sip
        "C2B0E1B4-4E0F1A2D",  # Polycom
        "9a8b7c6d",  # short random hex
        "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",  # 16 random octets
        "310131",  # "1\x011": too few random digits to be createTag's
        sv_tag("95", 42),  # createTag's number has 5-10 digits, almost always
        binascii.b2a_hex(b"\x1b[31m\x0112345678").decode(),  # control characters are no data
        "",
    ],
)
def test_random_tags_are_not_sipvicious_tags(tag: str) -> None:
    assert decode_sipvicious_tag(tag) is None


@given(st.text(max_size=300))
def test_tag_decoding_never_raises(tag: str) -> None:
    decode_sipvicious_tag(tag)


@given(
    st.text(
        st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Co", "Cn", "Cf")),
        min_size=1,
        max_size=40,
    ),
    st.integers(min_value=10_000, max_value=2**32 - 1),
)
def test_any_create_tag_output_decodes_back(data: str, random: int) -> None:
    decoded = decode_sipvicious_tag(sv_tag(data, random))
    if not data.isprintable():  # a few separators the strategy lets through
        return
    assert decoded is not None
    if ":" in data:
        assert decoded.text == data
        assert f"{decoded.user}:{decoded.password}" == data


# -- events, verdicts, re-alerts ------------------------------------------------------------


def run(
    detector: ScannerDetector, observations: Iterable[Observation]
) -> tuple[list[SecurityEvent], list[Findings]]:
    events: list[SecurityEvent] = []
    all_findings: list[Findings] = []
    for obs in observations:
        findings = Findings(None)
        detector.observe(obs, findings)
        events.extend(findings.events)
        all_findings.append(findings)
    return events, all_findings


def test_event_names_the_tool_the_transport_source_and_the_evidence() -> None:
    detector = ScannerDetector()
    events, findings = run(detector, [observation(SVMAP_OPTIONS, src=ATTACKER, sport=5061)])
    (event,) = events
    assert event.kind is EventKind.SCANNER
    assert event.severity is Severity.HIGH
    assert event.rule == "scanner.sipvicious-user-agent"
    # Only the transport source: the From host (1.1.1.1), the Via host and the
    # tag's decoded 127.0.0.1 are all attacker-written.
    assert (event.source, event.source_port) == (ATTACKER, 5061)
    assert event.account is None  # the From user of an OPTIONS probe is made up
    assert event.detail["tool"] == "SIPVicious"
    assert event.detail["decoded_tag"] == "127.0.0.1:15060"
    assert event.detail["decoded"] == {"kind": "target", "value": "127.0.0.1:15060"}
    assert event.detail["matched"]["user_agent"] == "friendly-scanner"  # type: ignore[index]
    assert "svmap-from-equals-to" in event.detail["signatures"]  # type: ignore[operator]
    (line,) = event.evidence.messages
    assert f"{ATTACKER}:5061" in line
    assert "OPTIONS sip:100@127.0.0.1" in line
    assert event.evidence.counts["messages"] == 1
    verdict = findings[0].verdict
    assert verdict.action is Action.DROP
    assert verdict.rule == "scanner.sipvicious-user-agent"


def test_only_requests_count() -> None:
    response = sip(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-1375984418;rport",
        f'From: "sipvicious"<sip:100@1.1.1.1>;tag={sv_tag("7f0000013ad4")}',
        'To: "sipvicious"<sip:100@1.1.1.1>;tag=as1234',
        "Call-ID: 147770265600628708133308",
        "CSeq: 1 OPTIONS",
        "Server: friendly-scanner",
    )
    events, findings = run(ScannerDetector(), [observation(response)])
    assert events == []
    assert findings[0].verdict.allowed
    error = RemoteProtocolError("not SIP", rule="RFC 3261 7.1 Request-Line", offset=0)
    raw = b"\x16\x03\x01 friendly-scanner\r\n\r\n"
    garbage = Observation(
        1.0, ATTACKER, 5060, PBX, 5060, "udp", Direction.INBOUND, raw, None, error
    )
    events, findings = run(ScannerDetector(), [garbage])
    assert events == []
    assert findings[0].verdict.allowed


def test_one_event_per_source_and_tool_then_one_per_realert_period() -> None:
    detector = ScannerDetector(ScannerSettings(realert_after=300.0))
    start = 1_800_000_000.0
    times = [start, start + 10.0, start + 20.0, start + 320.0, start + 330.0]
    events, findings = run(detector, [observation(SVMAP_OPTIONS, ts=t) for t in times])
    assert [event.time for event in events] == [start, start + 320.0]
    again = events[1]
    assert again.evidence.counts["messages"] == 4
    assert again.evidence.counts["since_last_event"] == 3  # at +10, +20 and +320
    assert len(again.evidence.messages) == 3
    # Suppressed events still drop: re-alerting is about noise, not enforcement.
    assert all(f.verdict.action is Action.DROP for f in findings)
    # Another source is reported on its own; another tool from the same source too.
    other, _ = run(detector, [observation(SVMAP_OPTIONS, src="192.0.2.99", ts=start + 331)])
    assert len(other) == 1
    nmap = next(raw for name, raw, _ in ATTACK_SAMPLES if name == "Nmap service probe")
    more, _ = run(detector, [observation(nmap, ts=start + 332)])
    assert [event.detail["tool"] for event in more] == ["Nmap"]


def test_ipv6_sources_are_counted_per_64() -> None:
    detector = ScannerDetector()
    sources = ["2001:db8:1:2::10", "2001:db8:1:2::11", "2001:db8:1:2:ffff::1"]
    start = 1_800_000_000.0
    events, _ = run(
        detector,
        [observation(SVMAP_OPTIONS, src=src, ts=start + i) for i, src in enumerate(sources)],
    )
    (event,) = events  # rotating addresses inside one /64 does not earn new alerts
    assert event.source == "2001:db8:1:2::10"
    assert event.detail["prefix"] == "2001:db8:1:2::/64"
    (sighting,) = detector.sightings("2001:db8:1:2::abcd")
    assert sighting.addresses == tuple(sources)
    assert sighting.messages == 3
    elsewhere, _ = run(detector, [observation(SVMAP_OPTIONS, src="2001:db8:1:3::10")])
    assert len(elsewhere) == 1


def test_blocking_follows_confidence_and_settings() -> None:
    vax = next(raw for name, raw, _ in ATTACK_SAMPLES if name.startswith("VaxSIP"))
    # medium confidence: reported, not dropped
    events, findings = run(ScannerDetector(), [observation(vax)])
    assert len(events) == 1
    assert findings[0].verdict.allowed
    lenient = ScannerDetector(ScannerSettings(block_confidence="medium"))
    assert run(lenient, [observation(vax)])[1][0].verdict.action is Action.DROP
    monitor_only = ScannerDetector(ScannerSettings(block=False))
    events, findings = run(monitor_only, [observation(SVMAP_OPTIONS)])
    assert len(events) == 1
    assert findings[0].verdict.allowed


def test_account_is_the_probed_account_when_there_is_one() -> None:
    by_name = {name: raw for name, raw, _ in ATTACK_SAMPLES}
    events, _ = run(ScannerDetector(), [observation(by_name["svcrack password attempt"])])
    assert events[0].account == "100"
    assert events[0].detail["decoded"] == {"kind": "credentials", "value": "100:100"}
    events, _ = run(ScannerDetector(), [observation(by_name["svwar REGISTER sweep"])])
    assert events[0].account == "95"
    events, _ = run(ScannerDetector(), [observation(by_name["sipcli toll-fraud INVITE"])])
    assert events[0].account is None


def test_passwords_can_be_kept_out_of_events() -> None:
    by_name = {name: raw for name, raw, _ in ATTACK_SAMPLES}
    detector = ScannerDetector(ScannerSettings(show_passwords=False))
    (event,), _ = run(detector, [observation(by_name["svcrack password attempt"])])
    assert event.detail["decoded_tag"] == "100:<hidden>"
    assert event.account == "100"
    assert "100:100" not in repr(event)


def test_state_is_bounded_under_a_flood_of_sources() -> None:
    detector = ScannerDetector(ScannerSettings(max_sources=1000))
    message = request(SVMAP_OPTIONS)
    ts = 1_800_000_000.0
    for index in range(50_000):
        src = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
        obs = Observation(ts, src, 5060, PBX, 5060, "udp", Direction.INBOUND, b"", message, None)
        detector.observe(obs, Findings(None))
        assert detector.tracked_sources <= 1000
    assert detector.tracked_sources == 1000
    # An IPv6 flood from one /64 is one entry with a bounded sample of addresses.
    for index in range(5_000):
        obs = Observation(ts, f"2001:db8::{index:x}", 5060, PBX, 5060, "udp",
                          Direction.INBOUND, b"", message, None)  # fmt: skip
        detector.observe(obs, Findings(None))
    (sighting,) = detector.sightings("2001:db8::1")
    assert len(sighting.addresses) <= 16
    assert sighting.messages == 5_000
    detector.expire(ts + 301.0)
    assert detector.tracked_sources == 0


def test_fields_are_cut_before_any_regex_sees_them() -> None:
    long_agent = "friendly-scanner" + "a" * 5000
    raw = SVMAP_OPTIONS.replace(
        b"User-Agent: friendly-scanner", f"User-Agent: {long_agent}".encode()
    )
    fields = RequestFields(request(raw))
    value = fields.get("user_agent")
    assert value is not None
    assert len(value) == 256
    assert "sipvicious-user-agent" in matched_names(raw)
    # The scanner's name beyond the cut is not seen.
    hidden = SVMAP_OPTIONS.replace(
        b"User-Agent: friendly-scanner", b"User-Agent: " + b"x" * 300 + b"friendly-scanner"
    )
    assert "sipvicious-user-agent" not in matched_names(hidden)


# -- the shared captures of the real tools ----------------------------------------------------


def replay(name: str, detector: ScannerDetector) -> list[Inspection]:
    engine = Engine([detector])
    path = shared_path("testdata", "captures", name)
    return [engine.inspect(obs) for obs in observations_from_pcap(path)]


def scanner_events(inspections: list[Inspection]) -> list[SecurityEvent]:
    return [e for i in inspections for e in i.events if e.kind is EventKind.SCANNER]


def test_svmap_capture_is_one_sipvicious_event_with_the_decoded_target() -> None:
    inspections = replay("svmap.pcap", ScannerDetector())
    (event,) = scanner_events(inspections)
    assert event.source == "127.0.0.1"
    assert event.detail["tool"] == "SIPVicious"
    assert event.detail["decoded_tag"] == "127.0.0.1:15060"  # the target, from the tag
    assert inspections[0].verdict.action is Action.DROP
    assert [ban.source for ban in inspections[0].bans] == ["127.0.0.1"]


def test_svwar_capture_is_one_event_and_the_tags_name_the_extensions() -> None:
    detector = ScannerDetector()
    (event,) = scanner_events(replay("svwar.pcap", detector))
    assert event.source == "127.0.0.1"
    assert event.detail["decoded"] == {"kind": "extension", "value": "3252733393"}
    assert event.account == "3252733393"  # svwar's first probe is a random user
    (sighting,) = detector.sightings("127.0.0.1")
    assert sighting.messages == 12
    assert sighting.decoded == ("3252733393", *(str(ext) for ext in range(95, 106)))


def test_svcrack_capture_is_one_event_and_the_tags_give_the_passwords_tried() -> None:
    detector = ScannerDetector()
    (event,) = scanner_events(replay("svcrack.pcap", detector))
    assert event.source == "127.0.0.1"
    assert event.account == "100"
    # svcrack's first REGISTER carries its fixed probe tag; the password
    # attempts that follow are counted, not re-alerted.
    assert event.detail["matched"]["from_tag"] == "3206210844"  # type: ignore[index]
    assert "svcrack-probe-tag" in event.detail["signatures"]  # type: ignore[operator]
    (sighting,) = detector.sightings("127.0.0.1")
    tried = [text.split(":", 1)[1] for text in sighting.decoded]
    assert tried == [str(password) for password in range(100, 124)]  # 123 was right


def test_svcrack_capture_realerts_carry_the_passwords_tried() -> None:
    events = scanner_events(
        replay("svcrack.pcap", ScannerDetector(ScannerSettings(realert_after=0.02)))
    )
    assert len(events) > 1
    # Each re-alert carries the password its message tried and every one tried so far.
    tried = [f"100:{password}" for password in range(100, 124)]
    for event in events[1:]:
        sample = event.detail["decoded_sample"]
        assert isinstance(sample, list)
        assert sample == tried[: len(sample)]
        assert event.detail["decoded_tag"] == sample[-1]
        assert event.evidence.counts["decoded_tags"] == len(sample)
    assert len(events[-1].detail["decoded_sample"]) > 10  # type: ignore[arg-type]


def test_sipp_flood_is_not_a_scanner() -> None:
    inspections = replay("sipp-invite-flood.pcap", ScannerDetector())
    assert scanner_events(inspections) == []
    assert all(inspection.verdict.allowed for inspection in inspections)


# -- signature files ------------------------------------------------------------------------

CUSTOM = """
# a site's own signatures, on top of the built-in ones
[[signature]]
name = "acme-probe"
tool = "AcmeProbe"
severity = "medium"
confidence = "high"
description = "our red team's probe"
user_agent = "^AcmeProbe/"
method = ["OPTIONS", "REGISTER"]
header_present = "X-Acme-Run"
headers = { "X-Acme-Run" = '^run-[0-9]+$' }

[[signature]]
# replaces the built-in one: block sipsak here, nobody monitors with it
name = "sipsak-user-agent"
tool = "sipsak"
severity = "high"
confidence = "high"
user_agent = '^sipsak\\b'
"""


def test_a_custom_signature_file_extends_and_overrides_the_builtins(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(CUSTOM, encoding="utf-8")
    detector = ScannerDetector(ScannerSettings(signature_files=(str(path),)))
    names = [signature.name for signature in detector.signatures]
    assert names[-1] == "acme-probe"
    assert len(names) == len(builtin_signatures()) + 1
    probe = sip(
        "OPTIONS sip:192.0.2.7 SIP/2.0",
        "Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKacme1",
        "From: <sip:red@acme.example>;tag=a1",
        "To: <sip:192.0.2.7>",
        "Call-ID: acme-1@10.1.1.1",
        "CSeq: 1 OPTIONS",
        "User-Agent: AcmeProbe/2.1",
        "X-Acme-Run: run-42",
    )
    (event,), findings = run(detector, [observation(probe)])
    assert event.rule == "scanner.acme-probe"
    assert event.severity is Severity.MEDIUM
    assert findings[0].verdict.action is Action.DROP
    assert matched_names(probe, detector) == {"acme-probe"}
    assert matched_names(probe.replace(b"run-42", b"walk"), detector) == set()
    sipsak = next(raw for name, raw, _ in ATTACK_SAMPLES if name == "sipsak OPTIONS")
    assert run(detector, [observation(sipsak)])[1][0].verdict.action is Action.DROP


def test_signatures_can_be_disabled_by_name_and_a_typo_is_an_error() -> None:
    settings = ScannerSettings(disabled=frozenset({"svmap-from-equals-to"}))
    names = {signature.name for signature in signatures_for(settings)}
    assert "svmap-from-equals-to" not in names
    assert "sipvicious-tag" in names
    with pytest.raises(ConfigError, match="svmap-from-equal-to"):
        signatures_for(ScannerSettings(disabled=frozenset({"svmap-from-equal-to"})))


def test_a_missing_signature_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        ScannerDetector(ScannerSettings(signature_files=(str(missing),)))
    assert info.value.file == str(missing)


def test_merge_replaces_by_name_in_place() -> None:
    first = load_signatures('[[signature]]\nname="a"\ntool="T"\nseverity="low"\n'
                            'confidence="medium"\nuser_agent="x"\n'
                            '[[signature]]\nname="b"\ntool="T"\nseverity="low"\n'
                            'confidence="medium"\nuser_agent="y"\n')  # fmt: skip
    second = load_signatures('[[signature]]\nname="a"\ntool="U"\nseverity="high"\n'
                             'confidence="high"\nuser_agent="z"\n')  # fmt: skip
    merged = merge_signatures(first, second)
    assert [(s.name, s.tool) for s in merged] == [("a", "U"), ("b", "T")]


SCREENED = """
[[signature]]
name = "tag-first"
tool = "T"
severity = "low"
confidence = "medium"
from_tag = "^probe-"

[[signature]]
name = "agent-and-tag"
tool = "T"
severity = "low"
confidence = "medium"
user_agent = "^Probe/"
from_tag = "-7$"

[[signature]]
name = "header-only"
tool = "T"
severity = "low"
confidence = "medium"
headers = { "X-Probe" = "^yes$" }

[[signature]]
name = "agent-only"
tool = "U"
severity = "low"
confidence = "medium"
user_agent = "^Probe/"
"""


def screened_probe(*, tag: str = "probe-7", agent: str = "Probe/1", extra: str = "") -> bytes:
    return sip(
        "OPTIONS sip:192.0.2.7 SIP/2.0",
        "Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKs1",
        f"From: <sip:a@10.1.1.1>;tag={tag}",
        "To: <sip:192.0.2.7>",
        "Call-ID: s1@10.1.1.1",
        "CSeq: 1 OPTIONS",
        f"User-Agent: {agent}",
        *([extra] if extra else []),
    )


def test_matches_come_in_signature_order_whichever_field_screens_them() -> None:
    detector = ScannerDetector(signatures=load_signatures(SCREENED))
    names = [found.signature.name for found in detector.match(request(screened_probe()))]
    assert names == ["tag-first", "agent-and-tag", "agent-only"]
    # The first regex screens a signature in; the others must still match.
    assert matched_names(screened_probe(tag="probe-8"), detector) == {"tag-first", "agent-only"}
    assert matched_names(screened_probe(extra="X-Probe: yes"), detector) == {
        "tag-first",
        "agent-and-tag",
        "header-only",
        "agent-only",
    }
    assert matched_names(screened_probe(tag="t", agent="Phone/1"), detector) == set()


def test_remembered_screen_verdicts_are_bounded_and_change_no_result() -> None:
    detector = ScannerDetector(signatures=load_signatures(SCREENED))
    for index in range(3000):  # a flood of unique User-Agents, some of them a tool's
        agent = f"Probe/{index}" if index % 7 == 0 else f"Phone/{index}"
        expected = {"tag-first", "agent-and-tag", "agent-only"} if index % 7 == 0 else {"tag-first"}
        assert matched_names(screened_probe(agent=agent), detector) == expected
    assert all(len(screen.verdicts) <= 1024 for screen in detector._screens)
    # A value seen before gets the verdict it got then.
    assert matched_names(screened_probe(agent="Probe/7"), detector) == {
        "tag-first",
        "agent-and-tag",
        "agent-only",
    }


def entry(**keys: str) -> str:
    base = {
        "name": '"probe-x"',
        "tool": '"X"',
        "severity": '"high"',
        "confidence": '"high"',
        "user_agent": '"^x"',
    }
    base.update(keys)
    body = "\n".join(f"{key} = {value}" for key, value in base.items() if value != "DROP")
    return f"[[signature]]\n{body}\n"


@pytest.mark.parametrize(
    ("text", "key_path", "message"),
    [
        (entry(user_agnet='"x"'), "signature[0].user_agnet",
         "signature 'probe-x': unknown key 'user_agnet' (did you mean 'user_agent'?)"),
        (entry(user_agent='"(unclosed"'), "signature[0].user_agent",
         "signature 'probe-x': user_agent is not a valid regular expression"),
        (entry(check='"sipvicious_tags"'), "signature[0].check", "unknown check 'sipvicious_tags'"),
        (entry(tool="DROP"), "signature[0].tool", "missing required key 'tool'"),
        (entry(severity='"severe"'), "signature[0].severity", "must be one of"),
        (entry(confidence='"low"'), "signature[0].confidence", "must be 'high' or 'medium'"),
        (entry(user_agent="DROP"), "signature[0].name", "has no matcher"),
        (entry(method="5"), "signature[0].method", "must be a string or an array of strings"),
        (entry(tool="3"), "signature[0].tool", "must be a string"),
        (entry(header_present='"Bad Header"'), "signature[0].header_present",
         "'Bad Header' is not a header name"),
        (entry(headers='{ "X-A" = 1 }'), "signature[0].headers.X-A", "must be a string"),
        (entry(name='"Has Spaces"'), "signature[0].name", "needs a name"),
        (entry() + entry(), "signature[1].name", "'probe-x' is defined twice"),
        ("version = 2\n" + entry(), "version", "unknown top-level key 'version'"),
        ("signature = 3\n", "signature", "array of tables"),
        ("[[signature]\nname = 'x'\n", "", "not valid TOML"),
    ],
)  # fmt: skip
def test_signature_files_are_validated_strictly(text: str, key_path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_signatures(text, origin="site.toml")
    assert info.value.key_path == key_path
    assert message in str(info.value)
    assert info.value.file == "site.toml"


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="realert_after"):
        ScannerSettings(realert_after=0)
    with pytest.raises(ConfigError, match="max_sources"):
        ScannerSettings(max_sources=0)
    with pytest.raises(ConfigError, match="block_confidence"):
        ScannerSettings(block_confidence="low")  # type: ignore[arg-type]


def test_the_documented_field_and_check_names_are_the_implemented_ones() -> None:
    path = Path(__file__).parents[2] / "src" / "sipwarden" / "data" / "signatures.toml"
    text = path.read_text(encoding="utf-8")
    for name in (*MATCH_FIELDS, *CHECKS):
        assert name in text


# -- hostile input never raises -------------------------------------------------------------

# Any text a header line can hold (CR and LF would end it), and any bytes at all:
# invalid UTF-8 reaches the typed views as lone surrogates.
HEADER_TEXT = st.one_of(
    st.text(st.characters(codec="utf-8", blacklist_characters="\r\n"), max_size=200),
    st.binary(max_size=200).map(
        lambda data: data.replace(b"\r", b"").replace(b"\n", b"").decode("utf-8", "surrogateescape")
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["OPTIONS", "INVITE", "REGISTER", "SUBSCRIBE", "X-FOO"]),
    via=HEADER_TEXT,
    from_=HEADER_TEXT,
    to=HEADER_TEXT,
    call_id=HEADER_TEXT,
    user_agent=HEADER_TEXT,
    contact=HEADER_TEXT,
    tag=st.one_of(HEADER_TEXT, st.binary(max_size=64).map(lambda b: b.hex())),
)
def test_arbitrary_header_values_never_raise(
    method: str,
    via: str,
    from_: str,
    to: str,
    call_id: str,
    user_agent: str,
    contact: str,
    tag: str,
) -> None:
    raw = sip(
        f"{method} sip:100@192.0.2.7 SIP/2.0",
        f"Via: {via}",
        f"From: {from_};tag={tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        "CSeq: 1 " + method,
        f"User-Agent: {user_agent}",
        f"Contact: {contact}",
    )
    obs = observation(raw)
    detector = ScannerDetector(ScannerSettings(), signatures=DETECTOR.signatures)
    started = time.perf_counter()
    detector.observe(obs, Findings(None))
    assert time.perf_counter() - started < 1.0
