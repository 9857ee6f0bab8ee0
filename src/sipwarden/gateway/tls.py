"""TLS for the gateway: the contexts of its tls: listeners and of its tls: upstreams,
and the SIP accounts a client certificate vouches for.

Policy, for every context built here:

* **TLS 1.2 and 1.3 only.** SSL 3.0, TLS 1.0 and 1.1 are deprecated (RFC 8996);
  TLS 1.2 is what RFC 7525 3.1.1 asks for at least. RFC 3261 26.2 names
  TLS_RSA_WITH_AES_128_CBC_SHA as the SIP baseline suite; no current phone or
  PBX lacks ECDHE with AES-GCM, so that baseline is no longer offered.
* **Forward-secret AEAD ciphers only.** TLS 1.2 suites are limited to ECDHE key
  exchange with AES-GCM or ChaCha20-Poly1305 (RFC 7525 4.2): no static RSA key
  exchange (no forward secrecy), no CBC (Lucky13 and its kin), no PSK/SRP/anon.
  Python cannot restrict the TLS 1.3 suites, but all of OpenSSL's defaults are
  AEAD with (EC)DHE key exchange already.
* **No compression** (CRIME, RFC 7457 2.6) and **no renegotiation** (client-
  initiated renegotiation is a cheap CPU exhaustion attack on the server, and
  RFC 5746 is only a fix for the worse variant; TLS 1.3 has none at all).
* **No TLS 1.2 session tickets** (``OP_NO_TICKET``). OpenSSL encrypts tickets
  with one key per context that is never rotated for the life of the process:
  whoever reads that key from memory decrypts every TLS 1.2 session resumed
  with it, which voids forward secrecy. Tickets buy little for SIP anyway:
  phones keep one long-lived connection per registration (RFC 5923 connection
  reuse, RFC 5626 keep-alives), and with one worker process per core
  (SO_REUSEPORT) a ticket from another worker could not be decrypted anyway.
  Resumption still works through the server-side session cache.

Certificates and keys are files the user supplies (sipwarden ships no key);
every problem with them is a :class:`~sipwarden.errors.ConfigError` naming the
config key and the file. An encrypted key is refused rather than prompting on
the terminal, which would hang a daemon.

Mutual TLS (``require_client_cert``) verifies the client's chain against
``ca_file``; :func:`accounts_of_certificate` then names the SIP accounts the
certificate vouches for, so that a REGISTER or INVITE can be bound to them
(``bind_account_to_subject``).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

from sipwarden.config import GatewayTlsConfig
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.sip.uri import SipUri, parse_uri, unescape

__all__ = [
    "TLS12_CIPHERS",
    "account_allowed",
    "accounts_of_certificate",
    "client_context",
    "server_context",
]

_KEY = "gateway.tls"
CERT_KEY: Final = f"{_KEY}.cert_file"
KEY_KEY: Final = f"{_KEY}.key_file"
CA_KEY: Final = f"{_KEY}.ca_file"
BIND_KEY: Final = f"{_KEY}.bind_account_to_subject"

#: The TLS 1.2 suites offered (OpenSSL cipher string): ECDHE key exchange with
#: an AEAD cipher (RFC 7525 4.2), for RSA and ECDSA certificates. The
#: exclusions drop the PSK, SRP, DSS and anonymous variants that the two
#: positive terms would otherwise pull in (e.g. ECDHE-PSK-CHACHA20-POLY1305).
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP:!DSS"

# The PEM markers of what we load (RFC 7468 5, 10, 11; and the legacy
# OpenSSL "traditional" key formats, with their Proc-Type encryption header).
_PEM_CERT: Final = b"-----BEGIN CERTIFICATE-----"
_PEM_KEY_SUFFIX: Final = b"PRIVATE KEY-----"
_PEM_ENCRYPTED: Final = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")
# What OpenSSL 3 reports when the key does not belong to the certificate.
_MISMATCH_REASONS: Final = frozenset({"KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"})


class _EncryptedKeyError(Exception):
    """Raised from the password callback: we never unlock a key interactively."""


def _refuse_password() -> str:
    # Without a callback OpenSSL would prompt on the controlling terminal and
    # block the gateway; the config has no key password on purpose (a password
    # next to the key in a config file protects nothing).
    raise _EncryptedKeyError


# --- contexts -----------------------------------------------------------------------


def server_context(tls: GatewayTlsConfig) -> ssl.SSLContext:
    """The context of the gateway's ``tls:`` listeners.

    Loads ``cert_file`` and ``key_file`` (an empty ``key_file`` means the key is
    in ``cert_file``). With ``require_client_cert``, a client must present a
    certificate that chains to ``ca_file`` (mutual TLS) or the handshake fails.
    Raises :class:`~sipwarden.errors.ConfigError` naming the key and the file.
    """
    if tls.bind_account_to_subject and not tls.require_client_cert:
        raise ConfigError(
            "binding accounts to the certificate subject needs require_client_cert = true",
            key_path=BIND_KEY,
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    # The server picks the suite, in TLS12_CIPHERS order (AES-GCM first: it is
    # hardware-accelerated on the gateway's CPUs).
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if not tls.cert_file:
        raise ConfigError("a certificate is needed for tls: listeners", key_path=CERT_KEY)
    _load_identity(context, tls)
    if tls.require_client_cert:
        if not tls.ca_file:
            raise ConfigError(
                "require_client_cert needs the CA that signs client certificates",
                key_path=CA_KEY,
            )
        _load_ca(context, tls.ca_file)
        # CERT_REQUIRED on a server: the handshake fails without a client
        # certificate that verifies (chain, dates, clientAuth purpose).
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(tls: GatewayTlsConfig) -> ssl.SSLContext:
    """The context for reaching the PBX over ``tls:``.

    The PBX's certificate is verified against ``ca_file`` when set, else the
    system's trust store, and its name is checked: pass the upstream host as
    ``server_hostname`` when wrapping (RFC 5922 7.2 wants the certificate to
    name the SIP domain, or the IP address when the upstream is an address).
    With ``cert_file`` set the gateway presents its own certificate, for PBXs
    that require mutual TLS (it then needs the clientAuth purpose, or no
    extended key usage at all).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    _harden(context)
    if tls.ca_file:
        _load_ca(context, tls.ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.cert_file:
        _load_identity(context, tls)
    return context


def _harden(context: ssl.SSLContext) -> None:
    """The version, cipher and option policy of the module docstring."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET


# --- loading files ---------------------------------------------------------------------


def _read(path: str, key_path: str) -> bytes:
    """The file's bytes, or a ConfigError that says why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"file not found: {path}", key_path=key_path) from None
    except OSError as error:
        raise ConfigError(
            f"cannot read {path}: {error.strerror or error}", key_path=key_path
        ) from None


def _load_identity(context: ssl.SSLContext, tls: GatewayTlsConfig) -> None:
    """Load our certificate chain and private key, naming the culprit on failure."""
    cert_pem = _read(tls.cert_file, CERT_KEY)
    if _PEM_CERT not in cert_pem:
        raise ConfigError(f"no PEM certificate in {tls.cert_file}", key_path=CERT_KEY)
    # The key lives in cert_file when key_file is empty: blame the right key.
    key_file, key_path = (tls.key_file, KEY_KEY) if tls.key_file else (tls.cert_file, CERT_KEY)
    key_pem = _read(key_file, key_path) if tls.key_file else cert_pem
    if _PEM_KEY_SUFFIX not in key_pem:
        raise ConfigError(f"no PEM private key in {key_file}", key_path=key_path)
    if any(marker in key_pem for marker in _PEM_ENCRYPTED):
        raise _encrypted(key_file, key_path)
    _check_certificates(tls.cert_file)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file or None, password=_refuse_password)
    except _EncryptedKeyError:
        raise _encrypted(key_file, key_path) from None
    except ssl.SSLError as error:
        if error.reason in _MISMATCH_REASONS:
            raise ConfigError(
                f"the key in {key_file} does not match the certificate in {tls.cert_file}",
                key_path=key_path,
            ) from None
        raise ConfigError(
            f"no usable private key in {key_file} ({_describe(error)})", key_path=key_path
        ) from None
    except OSError as error:  # the file went away between the checks and the load
        raise ConfigError(f"cannot read {key_file}: {error}", key_path=key_path) from None


def _check_certificates(cert_file: str) -> None:
    """Parse cert_file's certificates on a scratch context, so that a broken
    certificate is reported as such and not as a key problem (OpenSSL's
    load_cert_chain says "PEM lib" for both)."""
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        scratch.load_verify_locations(cafile=cert_file)
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(
            f"cannot parse the certificate in {cert_file} ({_describe(error)})", key_path=CERT_KEY
        ) from None


def _load_ca(context: ssl.SSLContext, ca_file: str) -> None:
    """Trust the CA certificates of ca_file (and nothing else)."""
    pem = _read(ca_file, CA_KEY)
    if _PEM_CERT not in pem:
        raise ConfigError(f"no PEM certificate in {ca_file}", key_path=CA_KEY)
    try:
        context.load_verify_locations(cafile=ca_file)
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(
            f"cannot load CA certificates from {ca_file} ({_describe(error)})", key_path=CA_KEY
        ) from None


def _encrypted(key_file: str, key_path: str) -> ConfigError:
    return ConfigError(
        f"the private key in {key_file} is encrypted; sipwarden needs it unencrypted "
        "(protect the file with its permissions instead, e.g. chmod 600)",
        key_path=key_path,
    )


def _describe(error: Exception) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or error.strerror or str(error)
    return str(error)


# --- accounts of a client certificate -----------------------------------------------


def accounts_of_certificate(peercert: Mapping[str, object] | None) -> frozenset[str]:
    """The SIP accounts (URI user parts, unescaped) a verified client certificate names.

    ``peercert`` is what :meth:`ssl.SSLSocket.getpeercert` returns: an empty
    dict or None when no certificate was verified, which names no account.

    The identities follow RFC 5922 7.1 (written for domain certificates, used
    here for users): every ``sip:``/``sips:`` URI in subjectAltName counts,
    and the subject CN is looked at if and only if the certificate has no
    subjectAltName at all (as RFC 6125 6.4.4 also says: a CN is a last resort,
    never a second opinion beside the SAN). Where RFC 5922 takes the host of a
    URI without a user part as a domain identity, we take the user part of a
    URI that has one as an account identity and skip the others. A CN counts
    as the account itself (``100``) or as a SIP URI (``sip:100@pbx.example``).
    The host part is not compared with anything: the CA in ``ca_file`` is the
    gateway's own, and whatever it signs speaks for the PBX's one domain.
    """
    if not peercert:
        return frozenset()
    alt_names = list(_pairs(peercert.get("subjectAltName")))
    if alt_names:
        found = (_user_of_uri(value) for kind, value in alt_names if kind == "URI")
    else:
        found = (_account_of_cn(value) for value in _common_names(peercert.get("subject")))
    return frozenset(account for account in found if account)


def account_allowed(peercert: Mapping[str, object] | None, account: str) -> bool:
    """Whether the certificate vouches for ``account``.

    ``account`` is the user part of the URI that names the account (the To of
    a REGISTER, the From of an INVITE), as written or unescaped: it is
    unescaped before comparing. User parts compare case-sensitively (RFC 3261
    19.1.4). No certificate, no account: this is False without one.
    """
    return bool(account) and unescape(account) in accounts_of_certificate(peercert)


def _pairs(value: object) -> Iterator[tuple[str, str]]:
    """The (type, value) pairs of a getpeercert() subjectAltName; defensive about shape."""
    if not isinstance(value, tuple):
        return
    for item in value:
        if isinstance(item, tuple) and len(item) == 2:
            kind, text = item
            if isinstance(kind, str) and isinstance(text, str):
                yield kind, text


def _common_names(subject: object) -> Iterator[str]:
    """Every commonName of a getpeercert() subject (a tuple of RDNs of pairs)."""
    if not isinstance(subject, tuple):
        return
    for rdn in subject:
        for kind, text in _pairs(rdn):
            if kind == "commonName":
                yield text


def _user_of_uri(text: str) -> str | None:
    """The unescaped user part of a sip:/sips: URI, or None (other schemes, no user)."""
    try:
        uri = parse_uri(text)
    except RemoteProtocolError:
        return None
    if not isinstance(uri, SipUri) or not uri.user:
        return None
    return unescape(uri.user)


def _account_of_cn(text: str) -> str | None:
    if text[:4].lower() == "sip:" or text[:5].lower() == "sips:":
        return _user_of_uri(text)
    # A bare account name: something a SIP user part could hold, no more.
    if not text or "@" in text or not text.isprintable() or any(c.isspace() for c in text):
        return None
    return text
