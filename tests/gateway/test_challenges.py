"""Answers for unknown accounts that cannot be told from the PBX's real challenges."""

from __future__ import annotations

import re

from gateway.test_core import PBX, PHONE, core
from sipwarden.gateway.challenges import ChallengeMimic
from sipwarden.gateway.tokens import TokenSigner
from sipwarden.sip.message import Request, Response
from sipwarden.sip.parser import parse_message

REAL = 'Digest realm="sipwarden.test", nonce="ZmEx1b2cAAAAAABfYjE3ZTk0OWZjZmQ0YjM2ZmE4", qop="auth"'


def register(user: str, branch: str) -> bytes:
    return (
        f"REGISTER sip:sipwarden.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@sipwarden.test>;tag=f{branch}\r\n"
        f"To: <sip:{user}@sipwarden.test>\r\n"
        f"Call-ID: {branch}@phone\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@192.168.1.20>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answer(forwarded: bytes, status: str, extra: str = "") -> bytes:
    request = parse_message(forwarded)
    assert isinstance(request, Request)
    vias = "".join(f"Via: {value}\r\n" for value in request.headers.values("via"))
    return (
        f"SIP/2.0 {status}\r\n{vias}From: {request.headers.get('from')}\r\n"
        f"To: {request.headers.get('to')};tag=pbx\r\nCall-ID: {request.call_id}\r\n"
        f"CSeq: 1 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def test_an_unknown_accounts_404_copies_the_pbxs_last_challenge_with_a_fresh_nonce() -> None:
    gateway = core()
    known = gateway.receive(register("100", "a1"), PHONE, 1000.0)[-1]
    (real,) = gateway.receive(
        answer(known.data, "401 Unauthorized", f"WWW-Authenticate: {REAL}\r\n"), PBX, 1000.1
    )
    nonces = []
    for branch in ("b1", "b2"):
        unknown = gateway.receive(register("999", branch), PHONE, 1001.0)[-1]
        (fake,) = gateway.receive(answer(unknown.data, "404 Not Found"), PBX, 1001.1)
        response = parse_message(fake.data)
        real_response = parse_message(real.data)
        assert isinstance(response, Response) and isinstance(real_response, Response)
        assert response.start_line() == real_response.start_line()  # "401 Unauthorized"
        value = response.headers.get("www-authenticate") or ""
        shape = re.sub(r'nonce="[^"]*"', 'nonce=""', value)
        assert shape == re.sub(r'nonce="[^"]*"', 'nonce=""', REAL)
        nonce = re.search(r'nonce="([^"]*)"', value)
        assert nonce is not None
        nonces.append(nonce.group(1))
        # Where a PBX writes it: before Content-Length, which ends the head.
        assert fake.data.index(b"WWW-Authenticate") < fake.data.index(b"Content-Length")
    real_nonce = re.search(r'nonce="([^"]*)"', REAL)
    assert real_nonce is not None
    assert all(len(nonce) == len(real_nonce.group(1)) for nonce in nonces)
    assert nonces[0] != nonces[1]  # new for every request, as a PBX's


def test_before_any_real_challenge_a_plain_one_is_given() -> None:
    mimic = ChallengeMimic(TokenSigner(b"0123456789abcdef"), realm="gw.example")
    reason, value = mimic.challenge("Proxy-Authenticate", "seed")
    assert reason == "Proxy Authentication Required"
    assert value.startswith('Digest realm="gw.example", nonce="')


def test_hex_nonces_stay_hex_and_keep_their_case() -> None:
    mimic = ChallengeMimic(TokenSigner(b"0123456789abcdef"), realm="x")
    mimic.learn("WWW-Authenticate", "Unauthorized", 'Digest realm="r", nonce="ABCDEF0123456789"')
    _, value = mimic.challenge("WWW-Authenticate", "seed")
    nonce = re.search(r'nonce="([^"]*)"', value)
    assert nonce is not None
    assert re.fullmatch(r"[0-9A-F]{16}", nonce.group(1))
