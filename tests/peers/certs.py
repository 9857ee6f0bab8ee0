"""Throwaway certificates for the TLS tests, made with the ``openssl`` command.

Every run makes fresh keys under pytest's temporary directory; nothing here is
ever committed, and sipwarden itself ships no key. The set (:class:`CertFiles`):

===========================  =====================================================
``ca`` / ``ca_key``          "sipwarden test CA" (EC P-256), signs the rest
``server_cert`` / ``_key``   RSA 2048 (so that a control server can also offer
                             RSA key exchange), SAN IP:127.0.0.1, IP:::1,
                             DNS:localhost; serverAuth and clientAuth
``server_key_encrypted``     the same key, AES-256 encrypted (password "secret")
``client_cert`` / ``_key``   CN=100, SAN URI sip:100@sipwarden.test, clientAuth
``foreign_client_*``         the same names, signed by ``other_ca`` instead
``expired_client_*``         the same names, valid January 2020 only
``dh_params``                the RFC 7919 ffdhe2048 group, for a control server
                             that offers finite-field DHE suites
===========================  =====================================================

Signing goes through ``openssl ca`` because only it can set explicit validity
dates in OpenSSL 3.0 (``x509 -req`` has no ``-not_before``), which the
expired certificate needs.

A test directory gets the session fixture by importing it into its
``conftest.py``: ``from peers.certs import test_certs``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from support import PeerError, require_tool

__all__ = ["ENCRYPTED_KEY_PASSWORD", "INSTALL_OPENSSL", "CertFiles", "make_certs", "test_certs"]

INSTALL_OPENSSL: Final = "apt-get install openssl"

#: The password of :attr:`CertFiles.server_key_encrypted`.
ENCRYPTED_KEY_PASSWORD: Final = "secret"

# The account the client certificates vouch for, and their SAN URI.
CLIENT_ACCOUNT: Final = "100"
CLIENT_URI: Final = "sip:100@sipwarden.test"

# One `openssl ca` configuration for every leaf: a throwaway database per CA
# directory, any subject, and the extensions of each kind of leaf.
_CA_CONFIG: Final = f"""\
[ ca ]
default_ca = throwaway

[ throwaway ]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any_subject
unique_subject = no
copy_extensions = none

[ any_subject ]
commonName = supplied

[ server_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ client_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:{CLIENT_URI}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

_EC: Final = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")
_RSA: Final = ("-newkey", "rsa:2048")


@dataclass(frozen=True, slots=True, kw_only=True)
class CertFiles:
    """Paths of the PEM files :func:`make_certs` wrote (see the module docstring)."""

    ca: Path
    ca_key: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    server_key_encrypted: Path
    client_cert: Path
    client_key: Path
    foreign_client_cert: Path
    foreign_client_key: Path
    expired_client_cert: Path
    expired_client_key: Path
    dh_params: Path


def _openssl(openssl: str, args: Sequence[str], cwd: Path) -> None:
    done = subprocess.run(  # a fixed argument list, no shell
        [openssl, *args], cwd=cwd, capture_output=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise PeerError(
            f"openssl {' '.join(args[:2])} failed ({done.returncode}): "
            + done.stderr.decode(errors="replace")[-2000:]
        )


def _make_ca(openssl: str, directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA in its own directory (its own `openssl ca` database)."""
    directory.mkdir()
    (directory / "index.txt").write_text("")
    (directory / "serial").write_text("01\n")
    (directory / "ca.cnf").write_text(_CA_CONFIG)
    cert, key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        openssl,
        [
            "req", "-x509", *_EC, "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        directory,
    )  # fmt: skip
    return cert, key


def _make_leaf(
    openssl: str,
    ca_dir: Path,
    out: Path,
    *,
    subject: str,
    extensions: str,
    key_type: Sequence[str] = _EC,
    validity: Sequence[str] = ("-days", "2"),
) -> tuple[Path, Path]:
    """A key and a certificate for it, signed by the CA in ``ca_dir``."""
    cert, key, csr = out.with_suffix(".pem"), out.with_suffix(".key"), out.with_suffix(".csr")
    _openssl(
        openssl,
        ["req", "-new", *key_type, "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", subject],
        ca_dir,
    )  # fmt: skip
    _openssl(
        openssl,
        ["ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
         "-extensions", extensions, *validity, "-in", str(csr), "-out", str(cert)],
        ca_dir,
    )  # fmt: skip
    return cert, key


def make_certs(directory: Path) -> CertFiles:
    """Write a fresh :class:`CertFiles` set under ``directory`` (which must exist)."""
    openssl = require_tool("openssl", INSTALL_OPENSSL)
    ca, ca_key = _make_ca(openssl, directory / "ca", "sipwarden test CA")
    other_ca, _ = _make_ca(openssl, directory / "other-ca", "another test CA")
    ca_dir, other_dir = ca.parent, other_ca.parent
    server_cert, server_key = _make_leaf(
        openssl, ca_dir, directory / "server", subject="/CN=localhost",
        extensions="server_ext", key_type=_RSA,
    )  # fmt: skip
    encrypted = directory / "server-encrypted.key"
    _openssl(
        openssl,
        ["pkey", "-in", str(server_key), "-aes256", "-passout",
         f"pass:{ENCRYPTED_KEY_PASSWORD}", "-out", str(encrypted)],
        directory,
    )  # fmt: skip
    client = f"/CN={CLIENT_ACCOUNT}"
    client_cert, client_key = _make_leaf(
        openssl, ca_dir, directory / "client", subject=client, extensions="client_ext"
    )
    foreign_cert, foreign_key = _make_leaf(
        openssl, other_dir, directory / "foreign-client", subject=client, extensions="client_ext"
    )
    expired_cert, expired_key = _make_leaf(
        openssl, ca_dir, directory / "expired-client", subject=client, extensions="client_ext",
        validity=("-startdate", "20200101000000Z", "-enddate", "20200201000000Z"),
    )  # fmt: skip
    dh_params = directory / "ffdhe2048.pem"
    _openssl(
        openssl,
        ["genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
         "-out", str(dh_params)],
        directory,
    )  # fmt: skip
    return CertFiles(
        ca=ca,
        ca_key=ca_key,
        other_ca=other_ca,
        server_cert=server_cert,
        server_key=server_key,
        server_key_encrypted=encrypted,
        client_cert=client_cert,
        client_key=client_key,
        foreign_client_cert=foreign_cert,
        foreign_client_key=foreign_key,
        expired_client_cert=expired_cert,
        expired_client_key=expired_key,
        dh_params=dh_params,
    )


@pytest.fixture(scope="session")
def test_certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """One fresh certificate set per test session (key generation is the slow part)."""
    return make_certs(tmp_path_factory.mktemp("certs"))
