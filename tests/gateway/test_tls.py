"""TLS of the gateway (:mod:`sipwarden.gateway.tls`): real handshakes on loopback.

Every handshake runs between two real OpenSSL endpoints (Python's ``ssl``) over
a TCP connection on 127.0.0.1: the server side is :func:`server_context`, the
client side is a context the test shapes (an old protocol version, weak
ciphers, no/foreign/expired certificate) or :func:`client_context`.

A refusal only proves something when the client really offered what was
refused: each refusal test first runs the same client against a *permissive*
server (TLS 1.0 up, every cipher, security level 0), which must accept it.

SIPp over TLS is not exercised: Debian's sip-tester is built without OpenSSL
("To use a TLS transport you must compile SIPp with OpenSSL").
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from peers.certs import CertFiles
from sipwarden.config import GatewayTlsConfig
from sipwarden.errors import ConfigError
from sipwarden.gateway.tls import (
    account_allowed,
    accounts_of_certificate,
    client_context,
    server_context,
)

TIMEOUT = 10.0
PROBE = b"OPTIONS"  # what the client sends once connected; the server echoes it


# --- a one-shot TLS server on loopback ------------------------------------------------


@dataclass
class Outcome:
    """What each side saw of one connection."""

    server_error: Exception | None = None
    client_error: Exception | None = None
    version: str | None = None
    cipher: str | None = None
    peercert: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.server_error is None and self.client_error is None

    def server_reason(self) -> str:
        assert self.server_error is not None, "the server accepted the connection"
        return getattr(self.server_error, "reason", None) or str(self.server_error)


def connect(
    server: ssl.SSLContext, client: ssl.SSLContext, *, server_hostname: str = "localhost"
) -> Outcome:
    """One TLS connection from ``client`` to ``server``; the client sends PROBE, gets it back.

    With TLS 1.3 the client finishes its handshake before the server has
    checked the client's certificate, so a refusal may reach the client only
    on its first read: the exchange of PROBE makes every refusal visible.
    """
    outcome = Outcome()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(TIMEOUT)
                with server.wrap_socket(conn, server_side=True) as tls:
                    outcome.version = tls.version()
                    cipher = tls.cipher()
                    outcome.cipher = cipher[0] if cipher else None
                    outcome.peercert = dict(tls.getpeercert() or {})
                    tls.sendall(tls.recv(len(PROBE)))
            except (OSError, ssl.SSLError) as error:
                outcome.server_error = error

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
                client.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                tls.sendall(PROBE)
                if tls.recv(len(PROBE)) != PROBE:
                    raise ConnectionError("the server closed the connection")
        except (OSError, ssl.SSLError) as error:
            outcome.client_error = error
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the server thread hung"
    return outcome


def permissive_server(certs: CertFiles) -> ssl.SSLContext:
    """A server that accepts anything the local OpenSSL can still speak."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.load_dh_params(str(certs.dh_params))
    return context


def plain_client(
    certs: CertFiles,
    *,
    versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
    ciphers: str | None = None,
    cert: tuple[Path, Path] | None = None,
) -> ssl.SSLContext:
    """A client trusting the test CA, limited to ``versions`` and ``ciphers``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(certs.ca)
    if versions is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1, TLSv1_1
            context.minimum_version, context.maximum_version = versions
    if ciphers is not None:
        context.set_ciphers(ciphers)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def tls_config(certs: CertFiles, **overrides: object) -> GatewayTlsConfig:
    values: dict[str, object] = {
        "cert_file": str(certs.server_cert),
        "key_file": str(certs.server_key),
    }
    values.update(overrides)
    return GatewayTlsConfig.model_validate(values)


def mutual(certs: CertFiles) -> ssl.SSLContext:
    return server_context(tls_config(certs, ca_file=str(certs.ca), require_client_cert=True))


V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


# --- the policy of the contexts -----------------------------------------------------------


def test_contexts_allow_tls12_and_13_with_forward_secret_aead_only(test_certs: CertFiles) -> None:
    for context in (server_context(tls_config(test_certs)), client_context(tls_config(test_certs))):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
        for option in (ssl.OP_NO_COMPRESSION, ssl.OP_NO_RENEGOTIATION, ssl.OP_NO_TICKET):
            assert context.options & option
        suites = context.get_ciphers()
        assert {suite["protocol"] for suite in suites} == {"TLSv1.2", "TLSv1.3"}
        for suite in suites:
            assert suite["aead"], suite["name"]
            # TLS 1.3 suites say "kx-any": key exchange is always (EC)DHE there.
            assert suite["kea"] in ("kx-ecdhe", "kx-any"), suite["name"]
            assert suite["auth"] in ("auth-rsa", "auth-ecdsa", "auth-any"), suite["name"]
    server = server_context(tls_config(test_certs))
    assert server.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert server.verify_mode == ssl.CERT_NONE  # no mutual TLS unless asked for
    client = client_context(tls_config(test_certs))
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname


@pytest.mark.parametrize(
    ("version", "expected"), [(V12, "TLSv1.2"), (V13, "TLSv1.3")], ids=["tls1.2", "tls1.3"]
)
def test_tls12_and_tls13_clients_connect(
    test_certs: CertFiles, version: ssl.TLSVersion, expected: str
) -> None:
    outcome = connect(
        server_context(tls_config(test_certs)),
        plain_client(test_certs, versions=(version, version)),
    )
    assert outcome.ok, outcome
    assert outcome.version == expected
    if version == V12:
        assert outcome.cipher == "ECDHE-RSA-AES256-GCM-SHA384"  # the server's first choice


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1.0", "tls1.1"]
)
def test_tls10_and_tls11_clients_are_refused(
    test_certs: CertFiles, version: ssl.TLSVersion
) -> None:
    # SECLEVEL=0: OpenSSL 3 only signs a TLS < 1.2 handshake (MD5+SHA-1) at level 0.
    client = plain_client(test_certs, versions=(version, version), ciphers="ALL:@SECLEVEL=0")
    control = connect(permissive_server(test_certs), client)
    if not control.ok:
        # This OpenSSL cannot even offer the old version any more: the floor
        # of the context is then all there is to check.
        assert server_context(tls_config(test_certs)).minimum_version == V12
        return
    assert control.version in ("TLSv1", "TLSv1.1")
    outcome = connect(server_context(tls_config(test_certs)), client)
    assert not outcome.ok
    assert outcome.server_reason() == "UNSUPPORTED_PROTOCOL"


@pytest.mark.parametrize(
    "cipher",
    [
        "AES128-SHA",  # RFC 3261 26.2's baseline: RSA key exchange, CBC
        "AES256-GCM-SHA384",  # AEAD, but RSA key exchange: no forward secrecy
        "ECDHE-RSA-AES128-SHA",  # forward secret, but CBC with SHA-1
        "ECDHE-RSA-AES256-SHA384",  # forward secret, but CBC
        "DHE-RSA-AES128-GCM-SHA256",  # finite-field DHE (costly, weak groups in the wild)
    ],
)
def test_weak_tls12_ciphers_are_refused(test_certs: CertFiles, cipher: str) -> None:
    client = plain_client(test_certs, versions=(V12, V12), ciphers=f"{cipher}:@SECLEVEL=0")
    control = connect(permissive_server(test_certs), client)
    assert control.ok, control
    assert control.cipher == cipher
    outcome = connect(server_context(tls_config(test_certs)), client)
    assert not outcome.ok
    assert outcome.server_reason() == "NO_SHARED_CIPHER"


# --- mutual TLS ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V12, V13], ids=["tls1.2", "tls1.3"])
def test_mutual_tls_accepts_a_good_client_certificate(
    test_certs: CertFiles, version: ssl.TLSVersion
) -> None:
    client = plain_client(
        test_certs,
        versions=(version, version),
        cert=(test_certs.client_cert, test_certs.client_key),
    )
    outcome = connect(mutual(test_certs), client)
    assert outcome.ok, outcome
    assert accounts_of_certificate(outcome.peercert) == {"100"}
    assert account_allowed(outcome.peercert, "100")
    assert not account_allowed(outcome.peercert, "101")


def client_cert_cases(certs: CertFiles) -> Iterator[tuple[str, tuple[Path, Path] | None, str]]:
    """(name, client certificate, what the server's refusal must say)."""
    yield "no certificate", None, "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    yield (
        "another CA",
        (certs.foreign_client_cert, certs.foreign_client_key),
        "unable to get local issuer certificate",
    )
    yield (
        "expired",
        (certs.expired_client_cert, certs.expired_client_key),
        "certificate has expired",
    )


@pytest.mark.parametrize("version", [V12, V13], ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize("case", ["no certificate", "another CA", "expired"])
def test_mutual_tls_refuses_bad_client_certificates(
    test_certs: CertFiles, version: ssl.TLSVersion, case: str
) -> None:
    cases = {name: (cert, why) for name, cert, why in client_cert_cases(test_certs)}
    cert, why = cases[case]
    client = plain_client(test_certs, versions=(version, version), cert=cert)
    # The same client gets through when nobody asks for a certificate.
    assert connect(server_context(tls_config(test_certs)), client).ok
    outcome = connect(mutual(test_certs), client)
    assert not outcome.ok
    assert outcome.client_error is not None  # the client learns it too (an alert)
    error = outcome.server_error
    if isinstance(error, ssl.SSLCertVerificationError):
        assert error.verify_message == why
    else:
        assert outcome.server_reason() == why


# --- the gateway as a TLS client of the PBX -----------------------------------------------


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_client_context_verifies_the_pbx_against_ca_file(
    test_certs: CertFiles, hostname: str
) -> None:
    pbx = server_context(tls_config(test_certs))
    ours = client_context(tls_config(test_certs, ca_file=str(test_certs.ca)))
    assert connect(pbx, ours, server_hostname=hostname).ok
    # A certificate for another name, or from a CA we do not trust, is refused.
    wrong_name = connect(pbx, ours, server_hostname="pbx.example")
    assert isinstance(wrong_name.client_error, ssl.SSLCertVerificationError)
    assert "Hostname mismatch" in wrong_name.client_error.verify_message
    untrusting = client_context(tls_config(test_certs, ca_file=str(test_certs.other_ca)))
    unknown_ca = connect(pbx, untrusting, server_hostname=hostname)
    assert isinstance(unknown_ca.client_error, ssl.SSLCertVerificationError)


def test_client_context_presents_our_certificate_to_a_pbx_that_wants_one(
    test_certs: CertFiles,
) -> None:
    pbx = mutual(test_certs)
    without = client_context(
        tls_config(test_certs, cert_file="", key_file="", ca_file=str(test_certs.ca))
    )
    assert not connect(pbx, without).ok
    with_cert = client_context(tls_config(test_certs, ca_file=str(test_certs.ca)))
    outcome = connect(pbx, with_cert)
    assert outcome.ok, outcome
    # The gateway's certificate names hosts (SAN DNS/IP), no SIP account: its
    # CN "localhost" is not read as one because a subjectAltName is present.
    assert accounts_of_certificate(outcome.peercert) == frozenset()


# --- configuration errors name the key and the file ---------------------------------------


def config_error(make: object, config: GatewayTlsConfig) -> ConfigError:
    assert callable(make)
    with pytest.raises(ConfigError) as caught:
        make(config)
    return caught.value


@pytest.mark.parametrize(
    ("case", "key", "words"),
    [
        ("no cert_file", "gateway.tls.cert_file", "certificate is needed"),
        ("cert_file missing", "gateway.tls.cert_file", "file not found"),
        ("cert_file is a directory", "gateway.tls.cert_file", "cannot read"),
        ("cert_file is not PEM", "gateway.tls.cert_file", "no PEM certificate"),
        ("cert_file holds a broken certificate", "gateway.tls.cert_file", "cannot parse"),
        ("key_file missing", "gateway.tls.key_file", "file not found"),
        ("key_file holds no key", "gateway.tls.key_file", "no PEM private key"),
        ("key_file is another key", "gateway.tls.key_file", "does not match"),
        ("key_file is encrypted", "gateway.tls.key_file", "is encrypted"),
        ("key_file holds a broken key", "gateway.tls.key_file", "no usable private key"),
        ("mutual TLS without ca_file", "gateway.tls.ca_file", "needs the CA"),
        ("ca_file missing", "gateway.tls.ca_file", "file not found"),
        ("ca_file is not PEM", "gateway.tls.ca_file", "no PEM certificate"),
        ("binding without mutual TLS", "gateway.tls.bind_account_to_subject", "require_client"),
    ],
)
def test_server_config_errors_name_the_key_and_the_file(
    test_certs: CertFiles, tmp_path: Path, case: str, key: str, words: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file\n")
    broken_cert = tmp_path / "broken-cert.pem"
    broken_cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    broken_key = tmp_path / "broken.key"
    broken_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    missing = str(tmp_path / "missing.pem")
    mutual_ca = {"require_client_cert": True, "ca_file": str(test_certs.ca)}
    overrides: dict[str, dict[str, object]] = {
        "no cert_file": {"cert_file": ""},
        "cert_file missing": {"cert_file": missing},
        "cert_file is a directory": {"cert_file": str(tmp_path)},
        "cert_file is not PEM": {"cert_file": str(garbage)},
        "cert_file holds a broken certificate": {"cert_file": str(broken_cert)},
        "key_file missing": {"key_file": missing},
        "key_file holds no key": {"key_file": str(garbage)},
        "key_file is another key": {"key_file": str(test_certs.client_key)},
        "key_file is encrypted": {"key_file": str(test_certs.server_key_encrypted)},
        "key_file holds a broken key": {"key_file": str(broken_key)},
        "mutual TLS without ca_file": {"require_client_cert": True},
        "ca_file missing": {**mutual_ca, "ca_file": missing},
        "ca_file is not PEM": {**mutual_ca, "ca_file": str(garbage)},
        "binding without mutual TLS": {"bind_account_to_subject": True},
    }
    config = tls_config(test_certs, **overrides[case])
    error = config_error(server_context, config)
    assert error.key_path == key
    assert words in error.reason
    assert str(error).startswith(f"{key}: ")
    named = {"cert_file": config.cert_file, "key_file": config.key_file, "ca_file": config.ca_file}
    field_name = key.rsplit(".", 1)[1]
    if named.get(field_name):
        assert named[field_name] in error.reason  # the file itself is named


def test_unreadable_files_are_named(test_certs: CertFiles, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root reads a mode-000 file anyway; the directory case covers "cannot read".
        return
    locked = tmp_path / "locked.key"
    locked.write_bytes(test_certs.server_key.read_bytes())
    locked.chmod(0)
    error = config_error(server_context, tls_config(test_certs, key_file=str(locked)))
    assert error.key_path == "gateway.tls.key_file"
    assert "cannot read" in error.reason
    assert str(locked) in error.reason


def test_key_in_cert_file_when_key_file_is_empty(test_certs: CertFiles, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(test_certs.server_cert.read_bytes() + test_certs.server_key.read_bytes())
    context = server_context(tls_config(test_certs, cert_file=str(combined), key_file=""))
    assert connect(context, plain_client(test_certs)).ok
    # Without a key anywhere, the error names cert_file, where the key was looked for.
    error = config_error(server_context, tls_config(test_certs, key_file=""))
    assert error.key_path == "gateway.tls.cert_file"
    assert "no PEM private key" in error.reason


def test_client_config_errors(test_certs: CertFiles, tmp_path: Path) -> None:
    error = config_error(
        client_context, tls_config(test_certs, ca_file=str(tmp_path / "missing.pem"))
    )
    assert error.key_path == "gateway.tls.ca_file"
    error = config_error(
        client_context, tls_config(test_certs, key_file=str(test_certs.client_key))
    )
    assert error.key_path == "gateway.tls.key_file"


# --- which accounts a certificate vouches for (pure) ------------------------------------


def cert(subject_cn: str | None = None, *alt: tuple[str, str]) -> dict[str, object]:
    """A getpeercert()-shaped dict."""
    out: dict[str, object] = {}
    if subject_cn is not None:
        out["subject"] = ((("countryName", "DE"),), (("commonName", subject_cn),))
    if alt:
        out["subjectAltName"] = alt
    return out


@pytest.mark.parametrize(
    ("peercert", "accounts"),
    [
        pytest.param(cert("100", ("URI", "sip:100@sipwarden.test")), {"100"}, id="cn-and-san"),
        pytest.param(cert(None, ("URI", "sips:100@sipwarden.test")), {"100"}, id="sips"),
        pytest.param(
            cert("x", ("URI", "sip:100@a.test"), ("URI", "sip:101@a.test;transport=tls")),
            {"100", "101"},
            id="two-uris-cn-ignored",
        ),
        pytest.param(cert(None, ("URI", "SIP:%31%30%30@a.test")), {"100"}, id="escaped-user"),
        pytest.param(cert(None, ("URI", "sip:alice:pw@a.test")), {"alice"}, id="password-dropped"),
        # RFC 5922 7.1: a URI without user part is a domain identity, no account.
        pytest.param(cert("100", ("URI", "sip:sipwarden.test")), set(), id="domain-uri"),
        pytest.param(cert("100", ("URI", "tel:+15551234")), set(), id="tel-uri"),
        pytest.param(cert("100", ("URI", "https://a.test/100")), set(), id="http-uri"),
        pytest.param(cert("100", ("URI", "sip:@bad")), set(), id="malformed-uri"),
        # Any subjectAltName, even DNS only, means the CN is not looked at.
        pytest.param(cert("100", ("DNS", "phone1.a.test")), set(), id="san-dns-beats-cn"),
        pytest.param(cert("100"), {"100"}, id="cn-only"),
        pytest.param(cert("sip:100@a.test"), {"100"}, id="cn-as-uri"),
        pytest.param(cert("Alice Phone"), set(), id="cn-with-space"),
        pytest.param(cert("100@a.test"), set(), id="cn-with-at"),
        pytest.param(cert(""), set(), id="empty-cn"),
        pytest.param({}, set(), id="no-certificate"),
        pytest.param({"subject": "garbage", "subjectAltName": 5}, set(), id="odd-shapes"),
    ],
)
def test_accounts_of_certificate(peercert: dict[str, object], accounts: set[str]) -> None:
    assert accounts_of_certificate(peercert) == accounts


def test_account_allowed() -> None:
    vouched = cert(None, ("URI", "sip:Alice@a.test"))
    assert account_allowed(vouched, "Alice")
    assert account_allowed(vouched, "%41lice")  # as written in a From URI
    assert not account_allowed(vouched, "alice")  # RFC 3261 19.1.4: user is case-sensitive
    assert not account_allowed(vouched, "")
    assert not account_allowed(None, "Alice")
    assert not account_allowed({}, "Alice")
