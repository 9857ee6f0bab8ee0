"""Digest authentication: RFC vectors, real clients and attack tools, strict/lenient, properties.

Sample inputs are annotated with the expected result (the fail2ban pattern):
every strict rejection names its rule and offset, and the lenient parse of the
same input records the matching defect code.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sipwarden.errors import LocalProtocolError, RemoteProtocolError
from sipwarden.sip import digest
from sipwarden.sip.digest import (
    ALGORITHMS,
    MAX_AUTH_PARAMS,
    MAX_AUTH_VALUE_LENGTH,
    DigestChallenge,
    DigestCredentials,
    ResponseTemplate,
    answer_challenge,
    build_challenge,
    build_credentials,
    canonical_algorithm,
    compute_response,
    find_password,
    ha1,
    hash_username,
    parse_auth_header,
    parse_auth_params,
    parse_challenge,
    parse_credentials,
    verify,
)

# The workplace lays shared/ beside the repository.
RFC4475_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "rfc4475"

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def md5(text: str) -> str:
    """Independent oracle: the RFC formulas written out with hashlib."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- RFC 2617 3.5

RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa",\r\n'
    '     realm="testrealm@host.com",\r\n'
    '     nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n'
    '     uri="/dir/index.html",\r\n'
    "     qop=auth,\r\n"
    "     nc=00000001,\r\n"
    '     cnonce="0a4f113b",\r\n'
    '     response="6629fae49393a05397450978507c4ef1",\r\n'
    '     opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com",\r\n'
    '     qop="auth,auth-int",\r\n'
    '     nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n'
    '     opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_example_parses_folded_and_verifies() -> None:
    creds = parse_credentials(RFC2617_AUTHORIZATION)
    assert creds == DigestCredentials(
        username="Mufasa",
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="/dir/index.html",
        response="6629fae49393a05397450978507c4ef1",
        cnonce="0a4f113b",
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
        qop="auth",
        nc="00000001",
    )
    assert creds.nonce_count == 1
    assert verify(creds, method="GET", password="Circle Of Life")
    assert not verify(creds, method="GET", password="Circle of Life")
    assert not verify(creds, method="POST", password="Circle Of Life")
    stored = ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    assert verify(creds, method="GET", ha1=stored)
    assert verify(creds, method="GET", ha1=stored.upper())  # stored HA1s may be uppercase


def test_rfc2617_example_compute_response() -> None:
    assert (
        compute_response(
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
            password="Circle Of Life",
            username="Mufasa",
            realm="testrealm@host.com",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc2617_challenge() -> None:
    chal = parse_challenge(RFC2617_CHALLENGE)
    assert chal.realm == "testrealm@host.com"
    assert chal.qop_options == ("auth", "auth-int")
    assert chal.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert chal.algorithm is None
    assert canonical_algorithm(chal.algorithm) == "MD5"
    assert not chal.stale


# --------------------------------------------------------------------------- RFC 7616 3.9.1

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_VECTORS = [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
]


def rfc7616_authorization(algorithm: str, response: str) -> str:
    return (
        'Digest username="Mufasa",\r\n'
        '    realm="http-auth@example.org",\r\n'
        '    uri="/dir/index.html",\r\n'
        f"    algorithm={algorithm},\r\n"
        f'    nonce="{RFC7616_NONCE}",\r\n'
        "    nc=00000001,\r\n"
        f'    cnonce="{RFC7616_CNONCE}",\r\n'
        "    qop=auth,\r\n"
        f'    response="{response}",\r\n'
        f'    opaque="{RFC7616_OPAQUE}"'
    )


@pytest.mark.parametrize(("algorithm", "expected"), RFC7616_VECTORS)
def test_rfc7616_example(algorithm: str, expected: str) -> None:
    got = compute_response(
        method="GET",
        uri="/dir/index.html",
        nonce=RFC7616_NONCE,
        algorithm=algorithm,
        qop="auth",
        nc="00000001",
        cnonce=RFC7616_CNONCE,
        password="Circle of Life",
        username="Mufasa",
        realm="http-auth@example.org",
    )
    assert got == expected
    creds = parse_credentials(rfc7616_authorization(algorithm, expected))
    assert creds.algorithm == algorithm
    assert creds.response == expected
    assert verify(creds, method="GET", password="Circle of Life")
    assert verify(
        creds, method="GET", ha1=ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
    )
    assert not verify(creds, method="GET", password="Circle Of Life")


def test_rfc7616_challenge() -> None:
    chal = parse_challenge(
        "Digest\r\n"
        '    realm="http-auth@example.org",\r\n'
        '    qop="auth, auth-int",\r\n'
        "    algorithm=SHA-256,\r\n"
        f'    nonce="{RFC7616_NONCE}",\r\n'
        f'    opaque="{RFC7616_OPAQUE}"'
    )
    assert chal == DigestChallenge(
        realm="http-auth@example.org",
        nonce=RFC7616_NONCE,
        opaque=RFC7616_OPAQUE,
        algorithm="SHA-256",
        qop_options=("auth", "auth-int"),
    )


def test_rfc7616_userhash_example_parses() -> None:
    # RFC 7616 3.9.2 (SHA-512-256, userhash, charset). Its printed hashes do not
    # reproduce from its printed inputs (a known erratum), so only the syntax is checked here.
    chal = parse_challenge(
        'Digest realm="api@example.org", qop="auth", algorithm=SHA-512-256, '
        'nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", '
        'opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", charset=UTF-8, userhash=true'
    )
    assert chal.userhash
    assert chal.charset == "UTF-8"
    creds = parse_credentials(
        'Digest username="488869477bf257147b804c45308cd62ac4e25eb717b12b298c79e62dcea254ec", '
        'realm="api@example.org", uri="/doe.json", algorithm=SHA-512-256, '
        'nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", nc=00000001, '
        'cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v", qop=auth, '
        'response="ae66e67d6b427bd3f120414a82e4acff38e8ecd9101d6c861229025f607a79dd", '
        'opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", userhash=true'
    )
    assert creds.userhash
    assert creds.algorithm == "SHA-512-256"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_userhash_exchange(algorithm: str) -> None:
    chal = DigestChallenge(
        realm="api@example.org",
        nonce="n0",
        algorithm=algorithm,
        qop_options=("auth",),
        userhash=True,
    )
    creds = answer_challenge(
        parse_challenge(build_challenge(chal)),
        method="REGISTER",
        uri="sip:api.example.org",
        username="Jäsøn Doe",
        password="Secret, or death!",
        cnonce="c0",
    )
    assert creds.userhash
    assert creds.username == hash_username("Jäsøn Doe", "api@example.org", algorithm)
    got = parse_credentials(build_credentials(creds))
    assert verify(got, method="REGISTER", password="Secret, or death!", username="Jäsøn Doe")
    with pytest.raises(LocalProtocolError):
        verify(got, method="REGISTER", password="Secret, or death!")


# --------------------------------------------------------------------------- algorithms, qop


def test_md5_sess_against_the_formula() -> None:
    base = md5("bob:biloxi.example.com:zanzibar")
    session = md5(f"{base}:n1:c1")
    ha2 = md5("INVITE:sip:bob@biloxi.example.com")
    expected = md5(f"{session}:n1:00000001:c1:auth:{ha2}")
    template = ResponseTemplate(
        method="INVITE",
        uri="sip:bob@biloxi.example.com",
        nonce="n1",
        algorithm="MD5-sess",
        qop="auth",
        nc="00000001",
        cnonce="c1",
    )
    assert template.from_ha1(base) == expected
    assert (
        template.from_password("zanzibar", username="bob", realm="biloxi.example.com") == expected
    )
    assert (
        compute_response(
            method="INVITE",
            uri="sip:bob@biloxi.example.com",
            nonce="n1",
            algorithm="MD5-sess",
            qop="auth",
            nc="00000001",
            cnonce="c1",
            ha1=base,
        )
        == expected
    )
    creds = parse_credentials(
        'Digest username="bob", realm="biloxi.example.com", nonce="n1", '
        'uri="sip:bob@biloxi.example.com", algorithm=md5-SESS, qop=auth, nc=00000001, '
        f'cnonce="c1", response="{expected}"'
    )
    assert canonical_algorithm(creds.algorithm) == "MD5-sess"
    assert verify(creds, method="INVITE", password="zanzibar")
    assert verify(creds, method="INVITE", ha1=base)


def test_sha256_sess_against_the_formula() -> None:
    base = sha256("bob:r:pw")
    expected = sha256(f"{sha256(f'{base}:n:c')}:n:0000000a:c:auth:{sha256('BYE:sip:x')}")
    assert (
        compute_response(
            method="BYE",
            uri="sip:x",
            nonce="n",
            algorithm="SHA-256-sess",
            qop="auth",
            nc="0000000a",
            cnonce="c",
            ha1=base,
        )
        == expected
    )


def test_qop_absent_rfc2069() -> None:
    ha1_ = md5("alice:atlanta.com:secret")
    expected = md5(f"{ha1_}:nonce42:{md5('REGISTER:sip:atlanta.com')}")
    value = (
        'Digest username="alice", realm="atlanta.com", nonce="nonce42", '
        f'uri="sip:atlanta.com", response="{expected}", algorithm=MD5'
    )
    creds = parse_credentials(value)
    assert creds.qop is None
    assert creds.cnonce is None
    assert creds.nc is None
    assert creds.nonce_count is None
    assert verify(creds, method="REGISTER", password="secret")
    assert not verify(creds, method="REGISTER", password="Secret")
    chal = parse_challenge('Digest realm="atlanta.com", nonce="nonce42"')
    answer = answer_challenge(
        chal, method="REGISTER", uri="sip:atlanta.com", username="alice", password="secret"
    )
    assert answer.response == expected
    assert answer.qop is None


def test_auth_int_hashes_the_body() -> None:
    body = b"v=0\r\no=- 0 0 IN IP4 192.0.2.1\r\n"
    ha1_ = md5("a:r:p")
    ha2 = md5(f"INVITE:sip:b@r:{hashlib.md5(body, usedforsecurity=False).hexdigest()}")
    expected = md5(f"{ha1_}:n:00000001:c:auth-int:{ha2}")
    creds = DigestCredentials(
        username="a",
        realm="r",
        nonce="n",
        uri="sip:b@r",
        response=expected,
        qop="auth-int",
        nc="00000001",
        cnonce="c",
    )
    assert verify(creds, method="INVITE", password="p", body=body)
    assert not verify(creds, method="INVITE", password="p", body=body + b"x")
    chal = DigestChallenge(realm="r", nonce="n", qop_options=("auth-int",))
    answer = answer_challenge(
        chal, method="INVITE", uri="sip:b@r", username="a", password="p", cnonce="c", body=body
    )
    assert answer.response == expected


def test_qop_spelling_enters_the_hash() -> None:
    # The value as sent is hashed (RFC 7616 3.4.1 unq(qop)); "AUTH" is still auth.
    ha1_ = md5("a:r:p")
    expected = md5(f"{ha1_}:n:00000001:c:AUTH:{md5('GET:/')}")
    creds = DigestCredentials(
        username="a",
        realm="r",
        nonce="n",
        uri="/",
        response=expected,
        qop="AUTH",
        nc="00000001",
        cnonce="c",
    )
    assert verify(creds, method="GET", password="p")


def test_response_template_for_the_audit() -> None:
    creds = parse_credentials(RFC2617_AUTHORIZATION)
    template = ResponseTemplate.for_credentials(creds, method="GET")
    stored = ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    assert template.from_ha1(stored) == creds.response
    assert (
        template.from_password("Circle Of Life", username="Mufasa", realm="testrealm@host.com")
        == creds.response
    )
    words = ["123456", "password", "Circle Of Life", "later"]
    assert find_password(creds, words, method="GET") == "Circle Of Life"
    assert find_password(creds, words[:2], method="GET") is None


def test_algorithms_and_names() -> None:
    assert {"MD5", "MD5-sess", "SHA-256", "SHA-256-sess"} <= set(ALGORITHMS)
    assert canonical_algorithm("sha-256") == "SHA-256"
    assert canonical_algorithm(None) == "MD5"
    assert canonical_algorithm("SHA-1") is None
    assert len(ha1("a", "b", "c", "SHA-256")) == 64
    assert ha1("a", "b", "c", "md5") == md5("a:b:c")


def test_unsupported_inputs() -> None:
    creds = DigestCredentials(
        username="a", realm="r", nonce="n", uri="/", response="0" * 40, algorithm="SHA-1"
    )
    with pytest.raises(RemoteProtocolError, match="unsupported algorithm"):
        verify(creds, method="GET", password="p")
    creds = DigestCredentials(
        username="a",
        realm="r",
        nonce="n",
        uri="/",
        response="0" * 32,
        qop="auth-conf",
        nc="00000001",
        cnonce="c",
    )
    with pytest.raises(RemoteProtocolError, match="unsupported qop"):
        verify(creds, method="GET", password="p")
    lenient = parse_credentials(
        'Digest username="a", realm="r", nonce="n", uri="/", response="", qop=auth', strict=False
    )
    with pytest.raises(RemoteProtocolError):
        verify(lenient, method="GET", password="p")
    ok = DigestCredentials(username="a", realm="r", nonce="n", uri="/", response="0" * 32)
    with pytest.raises(LocalProtocolError):
        verify(ok, method="GET")
    with pytest.raises(LocalProtocolError):
        verify(ok, method="GET", password="p", ha1="0" * 32)
    with pytest.raises(LocalProtocolError, match="ha1"):
        verify(ok, method="GET", ha1="xyz")
    with pytest.raises(LocalProtocolError):
        compute_response(method="GET", uri="/", nonce="n", algorithm="SHA-1", ha1="0" * 32)
    with pytest.raises(LocalProtocolError):
        compute_response(method="GET", uri="/", nonce="n", qop="auth", ha1="0" * 32)
    with pytest.raises(LocalProtocolError):
        compute_response(method="GET", uri="/", nonce="n", password="p")
    with pytest.raises(LocalProtocolError):
        compute_response(method="GET", uri="/", nonce="n", algorithm="MD5-sess", ha1="0" * 32)
    with pytest.raises(LocalProtocolError):
        answer_challenge(
            DigestChallenge(realm="r", nonce="n", qop_options=("auth",)),
            method="GET",
            uri="/",
            username="u",
            password="p",
        )


def test_empty_response_is_not_a_wrong_password_guess_but_fails() -> None:
    # 3GPP initial REGISTER: empty nonce and response; RFC 8760 2.7 allows *LHEX.
    creds = parse_credentials(
        'Digest username="user@ims.example.net", realm="ims.example.net", nonce="", '
        'uri="sip:ims.example.net", response=""'
    )
    assert creds.response == ""
    assert not verify(creds, method="REGISTER", password="anything")


# --------------------------------------------------------------------------- a SIP exchange


def test_sip_register_exchange() -> None:
    # Registrar side: build the 401 challenge.
    server_chal = DigestChallenge(
        realm="biloxi.example.com",
        nonce="ea9c8e88df84f1cec4341ae6cbe5a359",
        opaque="",
        algorithm="MD5",
        qop_options=("auth",),
    )
    www_authenticate = build_challenge(server_chal)
    assert www_authenticate == (
        'Digest realm="biloxi.example.com", nonce="ea9c8e88df84f1cec4341ae6cbe5a359", '
        'opaque="", algorithm=MD5, qop="auth"'
    )
    # UA side: parse it, answer.
    chal = parse_challenge(www_authenticate)
    assert chal == server_chal
    answer = answer_challenge(
        chal,
        method="REGISTER",
        uri="sip:biloxi.example.com",
        username="bob",
        password="zanzibar",
        cnonce="0a4f113b",
        nc=1,
    )
    authorization = build_credentials(answer)
    # Registrar side: parse strictly, verify.
    creds = parse_credentials(authorization)
    assert creds == answer
    assert creds.username == "bob"
    assert creds.nc == "00000001"
    assert verify(creds, method="REGISTER", password="zanzibar")
    assert verify(creds, method="REGISTER", ha1=ha1("bob", "biloxi.example.com", "zanzibar"))
    assert not verify(creds, method="REGISTER", password="zanzibar1")
    assert not verify(creds, method="INVITE", password="zanzibar")
    # The nonce count is hex: the 10th request says 0000000a.
    tenth = answer_challenge(
        chal,
        method="REGISTER",
        uri="sip:biloxi.example.com",
        username="bob",
        password="zanzibar",
        cnonce="0a4f113b",
        nc=10,
    )
    assert tenth.nc == "0000000a"
    assert parse_credentials(build_credentials(tenth)).nonce_count == 10
    for bad_nc in (0, 2**32):
        with pytest.raises(LocalProtocolError):
            answer_challenge(
                chal,
                method="REGISTER",
                uri="sip:b",
                username="bob",
                password="x",
                cnonce="c",
                nc=bad_nc,
            )


# --------------------------------------------------------------------------- RFC 4475 regaut01

# Copied from ../shared/testdata/rfc4475/regaut01.dat (RFC 4475 3.3.14).
REGAUT01_AUTHORIZATION = "NoOneKnowsThisScheme opaque-data=here"


def test_regaut01_literal_matches_the_file() -> None:
    path = RFC4475_DIR / "regaut01.dat"
    if not path.exists():
        pytest.fail("shared test data missing: ../shared/testdata/rfc4475/regaut01.dat")
    lines = path.read_bytes().decode().split("\r\n")
    values = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Authorization:")]
    assert values == [REGAUT01_AUTHORIZATION]


def test_regaut01_parses() -> None:
    # A well-formed header with an unknown scheme: the parser must not fail.
    header = parse_auth_header(REGAUT01_AUTHORIZATION)
    assert header.scheme == "NoOneKnowsThisScheme"
    assert header.params == (("opaque-data", "here"),)
    assert not header.is_digest
    # Asking for Digest credentials is another matter: strict says which rule.
    with pytest.raises(RemoteProtocolError) as info:
        parse_credentials(REGAUT01_AUTHORIZATION)
    assert "Digest" in info.value.rule
    assert info.value.offset == 0
    lenient = parse_credentials(REGAUT01_AUTHORIZATION, strict=False)
    assert "not-digest" in lenient.defects
    assert lenient.extra == (("opaque-data", "here"),)


def test_generic_auth_header() -> None:
    assert parse_auth_header("Bearer mF_9.B5f-4.1JqM").token68 == "mF_9.B5f-4.1JqM"
    assert parse_auth_header("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").token68 == (
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    )
    header = parse_auth_header('dIgEsT Realm="a\\"b", NONCE=x')
    assert header.is_digest
    assert header.params == (("realm", 'a"b'), ("nonce", "x"))
    assert parse_auth_params('a=b, C="d\\\\e\\f" ,g = "h i"') == [
        ("a", "b"),
        ("c", "d\\ef"),
        ("g", "h i"),
    ]
    assert parse_auth_params("") == []
    with pytest.raises(RemoteProtocolError):
        parse_auth_params('a="b')


# --------------------------------------------------------------------------- attack tools

SVCRACK_NONCE = "1c6b0b5a"
SVCRACK_PASSWORD = "123456"


def svcrack_classic() -> str:
    """SIPVicious 0.2 svcrack: no spaces, no qop, algorithm=MD5 last."""
    ha1_ = md5(f"100:asterisk:{SVCRACK_PASSWORD}")
    response = md5(f"{ha1_}:{SVCRACK_NONCE}:{md5('REGISTER:sip:192.0.2.10')}")
    return (
        f'Digest username="100",realm="asterisk",nonce="{SVCRACK_NONCE}",'
        f'uri="sip:192.0.2.10",response="{response}",algorithm=MD5'
    )


def svcrack_qop() -> str:
    """SIPVicious 0.3 svcrack against a qop challenge (nc formatted with %08d)."""
    cnonce = "6f1e6d0c9a0f4f0c8d2f1e0b7a6c5d4e"
    ha1_ = md5(f"100:asterisk:{SVCRACK_PASSWORD}")
    ha2 = md5("REGISTER:sip:192.0.2.10")
    response = md5(f"{ha1_}:{SVCRACK_NONCE}:00000001:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="100",realm="asterisk",nonce="{SVCRACK_NONCE}",'
        f'uri="sip:192.0.2.10",cnonce="{cnonce}",nc=00000001,qop=auth,'
        f'response="{response}",opaque="4a6f1e3b"'
    )


@pytest.mark.parametrize("make", [svcrack_classic, svcrack_qop])
def test_svcrack_credentials(make: Callable[[], str]) -> None:
    value = make()
    creds = parse_credentials(value)
    assert (creds.username, creds.realm) == ("100", "asterisk")
    assert creds.defects == ()
    assert verify(creds, method="REGISTER", password=SVCRACK_PASSWORD)
    assert not verify(creds, method="REGISTER", password="1234")
    guesses = ["100", "1234", "12345", SVCRACK_PASSWORD, "password"]
    assert find_password(creds, guesses, method="REGISTER") == SVCRACK_PASSWORD


# --------------------------------------------------------------------------- strict rejections

RESP = "0123456789abcdef0123456789abcdef"
BASE = (
    'Digest username="alice", realm="sip.example.com", nonce="abc123", '
    f'uri="sip:sip.example.com", response="{RESP}"'
)


def without(name: str) -> str:
    parts = [p for p in BASE.removeprefix("Digest ").split(", ") if not p.startswith(name + "=")]
    return "Digest " + ", ".join(parts)


def at(value: str, needle: str) -> int:
    return value.index(needle)


UNQUOTED_URI = BASE.replace('"sip:sip.example.com"', "sip:sip.example.com")
MANY = BASE + "".join(f", p{i}=v" for i in range(MAX_AUTH_PARAMS))

# (value, defect code, rule substring, offset)
CREDENTIAL_REJECTIONS: list[tuple[str, str, str, int]] = [
    ("", "empty", "auth-scheme", 0),
    ("   ", "empty", "auth-scheme", 0),
    ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "not-digest", "RFC 3261 25.1 credentials", 0),
    ('"Digest" username="a"', "bad-scheme", "RFC 7235 2.1", 0),
    ('username="alice", realm="r"', "missing-scheme", "RFC 7235 2.1", 0),
    ('Digest,username="alice"', "no-lws-after-scheme", "RFC 7235 2.1", 6),
    *[
        (without(n), f"missing:{n}", "RFC 7616 3.4", len(without(n)))
        for n in ("username", "realm", "nonce", "uri", "response")
    ],
    (BASE + ', realm="other"', "duplicate:realm", "RFC 7235 2.1", len(BASE) + 2),
    (BASE + ', REALM="other"', "duplicate:realm", "RFC 7235 2.1", len(BASE) + 2),
    (BASE.replace(RESP, "abc"), "bad-response", "RFC 8760 2.7", at(BASE, "response")),
    (BASE.replace(RESP, RESP.upper()), "bad-response", "RFC 8760 2.7", at(BASE, "response")),
    (BASE.replace(RESP, "z" * 32), "bad-response", "RFC 8760 2.7", at(BASE, "response")),
    (BASE + ", algorithm=SHA-256", "bad-response", "RFC 8760 2.7", at(BASE, "response")),
    ('Digest username="alice', "unterminated-quote", "quoted-string", 16),
    (BASE + ", qop=auth, nc=00000001", "missing:cnonce", "RFC 2617 3.2.2", len(BASE) + 23),
    (BASE + ', qop=auth, cnonce="c"', "missing:nc", "RFC 2617 3.2.2", len(BASE) + 22),
    (BASE + ', cnonce="c"', "unexpected:cnonce", "RFC 2617 3.2.2", len(BASE) + 2),
    (BASE + ", nc=00000001", "unexpected:nc", "RFC 2617 3.2.2", len(BASE) + 2),
    (
        BASE + ', qop="auth", nc=00000001, cnonce="c"',
        "quoted:qop",
        "RFC 7616 3.4",
        len(BASE) + 2,
    ),
    (BASE + ', algorithm="MD5"', "quoted:algorithm", "RFC 7616 3.4", len(BASE) + 2),
    (BASE.replace('"alice"', "alice"), "unquoted:username", "RFC 7616 3.4", 7),
    (BASE + ', qop=auth, nc=1, cnonce="c"', "bad-nc", "nc-value = 8LHEX", len(BASE) + 12),
    (BASE + ', qop=auth, nc=0000000A, cnonce="c"', "bad-nc", "8LHEX", len(BASE) + 12),
    (MANY, "too-many-params", "at most 64", MANY.index(", p59=") + 2),
    (BASE.replace(", realm", " realm"), "missing-comma", "COMMA", 24),
    (BASE.replace(", realm", ", , realm"), "empty-element", "no empty list", 25),
    (BASE + ",", "empty-element", "no empty list", len(BASE) + 1),
    (BASE.replace(", realm", ",\nrealm"), "bad-line-break", "LWS", 24),
    (BASE.replace("alice", "al\x01ice"), "control-char", "qdtext", 19),
    (BASE.replace("alice", "al\\\u00e9ice"), "bad-escape", "quoted-pair", 19),
    (BASE.replace("alice", "al\udcffice"), "bad-utf8", "qdtext", 19),
    ('Digest username "alice"', "missing-equals", "auth-param", 16),
    ('Digest username=, realm="r"', "empty-value", "auth-param", 16),
    ('Digest user@name="alice"', "bad-param-name", "auth-param-name", 7),
    ('Digest realm="r", ="alice"', "bad-param-name", "auth-param-name", 18),
    ('Digest ="alice"', "missing-scheme", "RFC 7235 2.1", 0),
    (UNQUOTED_URI, "bad-token", "auth-param", UNQUOTED_URI.index("uri=") + 4),
    (BASE + ", userhash=maybe", "bad-userhash", "RFC 7616 3.4", len(BASE) + 2),
    (BASE + ", username*=UTF-8''al", "conflict:username*", "RFC 8187", len(BASE) + 2),
    (
        without("username") + ", username*=UTF-8''%FF",
        "bad:username*",
        "RFC 8187",
        len(without("username")) + 2,
    ),
    (
        'Digest username="' + "a" * MAX_AUTH_VALUE_LENGTH + '"',
        "too-long",
        "at most 8192",
        MAX_AUTH_VALUE_LENGTH,
    ),
]


@pytest.mark.parametrize(
    ("value", "code", "rule", "offset"),
    CREDENTIAL_REJECTIONS,
    ids=[row[1] for row in CREDENTIAL_REJECTIONS],
)
def test_credentials_strict_rejections(value: str, code: str, rule: str, offset: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_credentials(value)
    assert rule in info.value.rule
    assert info.value.offset == offset
    assert info.value.status_hint == 400
    lenient = parse_credentials(value, strict=False)
    assert code in lenient.defects


CHAL = 'Digest realm="sip.example.com", nonce="abc123"'
CHALLENGE_REJECTIONS: list[tuple[str, str, str, int]] = [
    ('Digest nonce="abc123"', "missing:realm", "realm and nonce", 21),
    ('Digest realm="r"', "missing:nonce", "realm and nonce", 16),
    ('Basic realm="r"', "not-digest", "RFC 3261 25.1 challenge", 0),
    (CHAL + ', nonce="x"', "duplicate:nonce", "RFC 7235 2.1", len(CHAL) + 2),
    (CHAL + ", stale=maybe", "bad-stale", "stale", len(CHAL) + 2),
    (CHAL + ', stale="true"', "quoted:stale", "RFC 7616 3.3", len(CHAL) + 2),
    (CHAL + ', algorithm="MD5"', "quoted:algorithm", "RFC 7616 3.3", len(CHAL) + 2),
    ('Digest realm=r, nonce="abc123"', "unquoted:realm", "RFC 7616 3.3", 7),
    (CHAL + ", qop=auth", "unquoted:qop", "RFC 7616 3.3", len(CHAL) + 2),
    (CHAL + ', qop="auth,,auth-int"', "bad-qop-options", "qop-options", len(CHAL) + 2),
    (CHAL + ', qop=""', "bad-qop-options", "qop-options", len(CHAL) + 2),
    (CHAL + ', qop="auth int"', "bad-qop-options", "qop-options", len(CHAL) + 2),
    (CHAL + ", charset=ISO-8859-1", "bad-charset", "UTF-8", len(CHAL) + 2),
    (CHAL + ", userhash=1", "bad-userhash", "RFC 7616 3.4", len(CHAL) + 2),
    ('Digest realm="r", nonce="n', "unterminated-quote", "quoted-string", 24),
]


@pytest.mark.parametrize(
    ("value", "code", "rule", "offset"),
    CHALLENGE_REJECTIONS,
    ids=[row[1] for row in CHALLENGE_REJECTIONS],
)
def test_challenge_strict_rejections(value: str, code: str, rule: str, offset: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_challenge(value)
    assert rule in info.value.rule
    assert info.value.offset == offset
    assert code in parse_challenge(value, strict=False).defects


# --------------------------------------------------------------------------- leniency


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="alice", realm="r", nonce="n", uri="sip:r", response="',
        'Digest username="alice" realm="r" nonce="n"',
        'digest USERNAME="alice",realm="r",qop="auth",algorithm="MD5"',
        'username="alice", realm="r"',
        "Digest username=alice, realm=r, uri=sip:bob@r:5060;transport=udp",
        'Digest username="alice", username="mallory", realm="r"',
        'Digest garbage @@@ "stuff, with comma", username="alice"',
        'Digest ,,, username="alice",,',
        'Digest username="alice", realm="a\nb", response="XYZ"',
        'Digest username="alice"' + "".join(f", x{i}=y" for i in range(200)),
        'Digest username="alice", response="' + "a" * 9000 + '"',
        "Digest username*=UTF-8''alice, realm=\"r\"",
    ],
)
def test_lenient_recovers_the_username(value: str) -> None:
    creds = parse_credentials(value, strict=False)
    assert creds.username == "alice"
    assert creds.defects
    with pytest.raises(RemoteProtocolError):
        parse_credentials(value)


def test_lenient_details() -> None:
    creds = parse_credentials(
        'digest USERNAME="alice",realm="r",nonce="n",uri="sip:r",'
        'response="0123456789ABCDEF0123456789ABCDEF",qop="auth",nc=00000001,cnonce="c"',
        strict=False,
    )
    assert creds.qop == "auth"
    assert creds.defects == ("quoted:qop", "bad-response")
    # An uppercase response still verifies: the lowercase digest is compared.
    ha1_ = md5("alice:r:pw")
    good = md5(f"{ha1_}:n:00000001:c:auth:{md5('REGISTER:sip:r')}").upper()
    creds = parse_credentials(
        f'Digest username="alice",realm="r",nonce="n",uri="sip:r",response="{good}",'
        'qop="auth",nc=00000001,cnonce="c"',
        strict=False,
    )
    assert verify(creds, method="REGISTER", password="pw")
    # Duplicates: the first wins.
    dup = parse_credentials('Digest username="alice", username="mallory"', strict=False)
    assert dup.username == "alice"
    assert "duplicate:username" in dup.defects
    # Folds inside quoted strings are unfolded, by both scanners.
    folded = 'Digest username="al\r\n ice", realm="r"'
    assert parse_credentials(folded, strict=False).username == "al ice"
    slow = digest._lex(folded, 7, digest._Ctx(strict=True), fast=False)
    assert slow == digest._lex(folded, 7, digest._Ctx(strict=True))
    # Hostile garbage costs at most MAX_AUTH_PARAMS elements of work.
    for junk in ("a b ", ",", '""', "=,", "\r"):
        hostile = parse_credentials('Digest username="alice", ' + junk * 2000, strict=False)
        assert hostile.username == "alice"
        assert "too-many-params" in hostile.defects or junk == "\r"
    # Too many parameters: bounded, the head is kept.
    many = parse_credentials('Digest username="alice"' + ", x=y" * 200, strict=False)
    assert "too-many-params" in many.defects
    chal = parse_challenge(
        'Digest realm=r, nonce="n", qop="auth,,auth-int", stale=TRUE', strict=False
    )
    assert chal.realm == "r"
    assert chal.qop_options == ("auth", "auth-int")
    assert chal.stale
    assert chal.defects == ("unquoted:realm", "bad-qop-options")


def test_case_insensitivity_and_escapes() -> None:
    creds = parse_credentials(
        'DIGEST UserName="a\\"b\\\\c", Realm="r", NONCE="n", Uri="sip:r", '
        f'Response="{RESP}", ALGORITHM=md5'
    )
    assert creds.username == 'a"b\\c'
    assert creds.algorithm == "md5"
    assert canonical_algorithm(creds.algorithm) == "MD5"
    assert parse_credentials(build_credentials(creds)) == creds
    chal = parse_challenge('Digest realm="r", nonce="n", stale=TRUE, domain=" sip:a \tsip:b"')
    assert chal.stale
    assert chal.domain == ("sip:a", "sip:b")
    assert parse_challenge('Digest realm="r", nonce="n", domain="sip:a\u2003b"').domain == (
        "sip:a\u2003b",
    )


def test_username_star() -> None:
    value = "Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, " + BASE.split(", ", 1)[1]
    creds = parse_credentials(value)
    assert creds.username == "Jäsøn Doe"
    assert creds.username_star
    assert parse_credentials(build_credentials(creds)) == creds


def test_extension_params_kept() -> None:
    creds = parse_credentials(BASE + ', X-Vendor="a b", mode=fast')
    assert creds.extra == (("x-vendor", "a b"), ("mode", "fast"))
    assert parse_credentials(build_credentials(creds)) == creds


# --------------------------------------------------------------------------- building


def test_build_refuses_what_cannot_be_sent() -> None:
    ok = DigestCredentials(username="a", realm="r", nonce="n", uri="sip:r", response=RESP)
    bad = [
        DigestCredentials(username="a\r\nVia: x", realm="r", nonce="n", uri="sip:r", response=RESP),
        DigestCredentials(username="a", realm="r", nonce="n", uri='sip:"r"', response=RESP),
        DigestCredentials(username="a", realm="r", nonce="n", uri="sip:r", response="XYZ"),
        DigestCredentials(
            username="a", realm="r", nonce="n", uri="sip:r", response=RESP, algorithm="M D5"
        ),
        DigestCredentials(
            username="a", realm="r", nonce="n", uri="sip:r", response=RESP, qop="auth"
        ),
        DigestCredentials(
            username="a",
            realm="r",
            nonce="n",
            uri="sip:r",
            response=RESP,
            qop="auth",
            cnonce="c",
            nc="1",
        ),
        DigestCredentials(
            username="a", realm="r", nonce="n", uri="sip:r", response=RESP, extra=(("realm", "x"),)
        ),
        DigestCredentials(
            username="a", realm="r", nonce="n", uri="sip:r", response=RESP, extra=(("X", "x"),)
        ),
        DigestCredentials(
            username="a",
            realm="r",
            nonce="n",
            uri="sip:r",
            response=RESP,
            extra=tuple((f"p{i}", "v") for i in range(MAX_AUTH_PARAMS)),
        ),
    ]
    assert parse_credentials(build_credentials(ok)) == ok
    for creds in bad:
        with pytest.raises(LocalProtocolError):
            build_credentials(creds)
    bad_challenges = [
        DigestChallenge(realm="r\n", nonce="n"),
        DigestChallenge(realm="r", nonce="n", domain=("sip:a sip:b",)),
        DigestChallenge(realm="r", nonce="n", qop_options=("auth,auth-int",)),
        DigestChallenge(realm="r", nonce="n", charset="latin1"),
    ]
    for chal in bad_challenges:
        with pytest.raises(LocalProtocolError):
            build_challenge(chal)


# --------------------------------------------------------------------------- properties

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=10)
# Anything a quoted-string can carry: no controls (HT aside), no lone surrogates.
qtext = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x7f")
    | st.sampled_from('\t"\\ ,='),
    max_size=16,
)
uris = st.text(TOKEN_ALPHABET + ":@;=/?&", min_size=1, max_size=24)
lhex = st.text("0123456789abcdef", max_size=70)
algorithms = st.sampled_from([None, *ALGORITHMS, "md5", "sha-256-SESS", "X-Unknown"])


@st.composite
def extras(draw: st.DrawFn, reserved: frozenset[str]) -> tuple[tuple[str, str], ...]:
    names = draw(
        st.lists(tokens.map(str.lower).filter(lambda n: n not in reserved), max_size=3, unique=True)
    )
    return tuple((name, draw(qtext | tokens)) for name in names)


@st.composite
def credentials(draw: st.DrawFn) -> DigestCredentials:
    algorithm = draw(algorithms)
    known = canonical_algorithm(algorithm)
    if known is None:
        response = draw(lhex)
    else:
        size = 32 if known.startswith("MD5") else 64
        response = draw(
            st.sampled_from(["", "a" * size])
            | st.text("0123456789abcdef", min_size=size, max_size=size)
        )
    qop = draw(st.none() | st.sampled_from(["auth", "auth-int"]) | tokens)
    return DigestCredentials(
        username=draw(qtext),
        realm=draw(qtext),
        nonce=draw(qtext),
        uri=draw(uris),
        response=response,
        algorithm=algorithm,
        cnonce=None if qop is None else draw(qtext),
        opaque=draw(st.none() | qtext),
        qop=qop,
        nc=None if qop is None else draw(st.text("0123456789abcdef", min_size=8, max_size=8)),
        userhash=draw(st.booleans()),
        username_star=draw(st.booleans()),
        extra=draw(extras(digest._CREDENTIAL_NAMES)),
    )


@st.composite
def challenges(draw: st.DrawFn) -> DigestChallenge:
    return DigestChallenge(
        realm=draw(qtext),
        nonce=draw(qtext),
        opaque=draw(st.none() | qtext),
        algorithm=draw(algorithms),
        qop_options=tuple(draw(st.lists(tokens, max_size=3))),
        stale=draw(st.booleans()),
        domain=tuple(draw(st.lists(uris, max_size=3))),
        userhash=draw(st.booleans()),
        charset=draw(st.sampled_from([None, "UTF-8", "utf-8"])),
        extra=draw(extras(digest._CHALLENGE_NAMES)),
    )


@FAST
@given(credentials())
def test_credentials_round_trip(creds: DigestCredentials) -> None:
    built = build_credentials(creds)
    assert parse_credentials(built) == creds
    assert parse_credentials(built, strict=False) == creds


@FAST
@given(challenges())
def test_challenge_round_trip(chal: DigestChallenge) -> None:
    built = build_challenge(chal)
    assert parse_challenge(built) == chal
    assert parse_challenge(built, strict=False) == chal


def check_total(value: str) -> None:
    """Strict raises only RemoteProtocolError; lenient never raises; they agree."""
    for parse in (parse_credentials, parse_challenge):
        lenient = parse(value, strict=False)
        error: RemoteProtocolError | None = None
        try:
            strict = parse(value)
        except RemoteProtocolError as exc:
            error = exc
        if error is not None:
            assert lenient.defects, "strict refused what lenient found clean"
            assert error.offset is None or 0 <= error.offset <= len(value)
        else:
            assert strict == lenient
            assert not strict.defects
    for generic in (parse_auth_header, parse_auth_params):
        with contextlib.suppress(RemoteProtocolError):
            generic(value)


@FAST
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_remote_protocol_error(value: str) -> None:
    check_total(value)


@FAST
@given(st.text('Digest usernamrlcq=",\\ \t\r\n\x00é\udc80aU0', max_size=120))
def test_auth_alphabet_soup(value: str) -> None:
    check_total(value)


SEEDS = [
    RFC2617_AUTHORIZATION,
    RFC2617_CHALLENGE,
    rfc7616_authorization("SHA-256", RFC7616_VECTORS[1][1]),
    svcrack_classic(),
    svcrack_qop(),
    REGAUT01_AUTHORIZATION,
    BASE + ", username*=UTF-8''a%20b, userhash=true",
]
PIECES = ['"', "\\", ",", "=", " ", "\r", "\n", "\r\n ", "a", "\x00", "é", "\udc80", "Digest "]


@FAST
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(
            st.sampled_from(["insert", "delete", "replace"]),
            st.integers(0, 10_000),
            st.sampled_from(PIECES),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_headers(seed: str, edits: list[tuple[str, int, str]]) -> None:
    value = seed
    for op, where, piece in edits:
        i = where % (len(value) + 1)
        if op == "insert":
            value = value[:i] + piece + value[i:]
        elif op == "delete":
            value = value[:i] + value[i + 1 :]
        else:
            value = value[:i] + piece + value[i + 1 :]
    check_total(value)


@FAST
@given(st.lists(st.tuples(tokens, qtext | tokens, st.booleans()), max_size=8))
def test_fast_and_slow_scanners_agree(items: list[tuple[str, str, bool]]) -> None:
    parts = []
    for name, value, force_quote in items:
        if force_quote or digest._TOKEN_RE.fullmatch(value) is None:
            parts.append(f"{name}={digest._quote(name, value)}")
        else:
            parts.append(f"{name}={value}")
    text = ",\r\n ".join(parts)
    fast = digest._lex(text, 0, digest._Ctx(strict=True))
    slow = digest._lex(text, 0, digest._Ctx(strict=True), fast=False)
    assert fast == slow
    assert [(p.name, p.value) for p in fast] == [(n.lower(), v) for n, v, _ in items]


@FAST
@given(credentials(), st.text(max_size=12))
def test_verify_agrees_with_compute(creds: DigestCredentials, password: str) -> None:
    name = canonical_algorithm(creds.algorithm)
    assume(name is not None and creds.qop in (None, "auth", "auth-int"))
    assume(creds.cnonce is not None or not str(name).endswith("-sess"))
    response = compute_response(
        method="REGISTER",
        uri=creds.uri,
        nonce=creds.nonce,
        algorithm=creds.algorithm,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
        password=password,
        username=creds.username,
        realm=creds.realm,
    )
    signed = DigestCredentials(
        username=creds.username,
        realm=creds.realm,
        nonce=creds.nonce,
        uri=creds.uri,
        response=response,
        algorithm=creds.algorithm,
        cnonce=creds.cnonce,
        qop=creds.qop,
        nc=creds.nc,
    )
    parsed = parse_credentials(build_credentials(signed))
    assert verify(parsed, method="REGISTER", password=password)
    assert not verify(parsed, method="REGISTER", password=password + "x")


# -- the typed views on a parsed message ------------------------------------------------


def test_message_views_parse_digest_headers_and_skip_other_schemes() -> None:
    from sipwarden.sip.parser import parse_message  # noqa: PLC0415

    register = (
        b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7\r\n"
        b"To: <sip:100@pbx.example.com>\r\nFrom: <sip:100@pbx.example.com>;tag=4562\r\n"
        b"Call-ID: 8438176@192.0.2.4\r\nCSeq: 2 REGISTER\r\n"
        b'Authorization: Digest username="100", realm="asterisk", nonce="5f1c", '
        b'uri="sip:pbx.example.com", response="6629fae49393a05397450978507c4ef1", '
        b"algorithm=MD5\r\n"
        b"Authorization: NoOneKnowsThisScheme opaque-data=here\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    message = parse_message(register)
    message.validate()
    (credentials,) = message.authorization
    assert (credentials.username, credentials.realm) == ("100", "asterisk")
    assert message.proxy_authorization == []
    assert len(message.headers.get_all("authorization")) == 2


def test_message_view_of_a_malformed_digest_raises_strictly_and_recovers_leniently() -> None:
    from sipwarden.errors import RemoteProtocolError  # noqa: PLC0415
    from sipwarden.sip.parser import parse_message  # noqa: PLC0415

    data = (
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKx\r\n"
        b"To: <sip:100@pbx>;tag=1\r\nFrom: <sip:100@pbx>;tag=2\r\nCall-ID: c1\r\n"
        b'CSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm="asterisk"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    with pytest.raises(RemoteProtocolError) as caught:
        parse_message(data).validate()
    assert caught.value.header == "WWW-Authenticate"
    lenient = parse_message(data, strict=False)
    (challenge,) = lenient.www_authenticate
    assert challenge.realm == "asterisk"
    assert challenge.defects
