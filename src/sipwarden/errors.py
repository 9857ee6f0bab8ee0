"""The one exception tree of sipwarden.

This module is a leaf: it imports nothing of ours, so every room (the sans-IO
``sip`` core included) may raise these without breaking the layering rule.

    SipwardenError
    ├── ProtocolError
    │   ├── LocalProtocolError    we misused the protocol objects (a bug on our side)
    │   └── RemoteProtocolError   the peer's bytes broke a rule (offset, rule, status hint)
    ├── ConfigError               a bad configuration value (file, dotted key path)
    ├── CaptureError              a capture file is truncated or corrupt (packet number, offset)
    ├── EnforcementError          a ban backend failed (nft, ipset, Redis)
    └── StoreError                persistence failed
"""

from __future__ import annotations

__all__ = [
    "CaptureError",
    "ConfigError",
    "EnforcementError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "SipwardenError",
    "StoreError",
]


class SipwardenError(Exception):
    """Root of every error sipwarden raises on purpose."""


class ProtocolError(SipwardenError):
    """A SIP protocol rule was broken, by us or by the peer."""


class LocalProtocolError(ProtocolError):
    """Our own code asked the protocol objects for something the RFC forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer's bytes broke a protocol rule.

    ``offset`` is the byte offset in the message (or stream buffer) where the
    problem was found, ``rule`` names the grammar rule or RFC requirement that
    was broken, and ``status_hint`` is the response a server should answer
    with (400 unless the RFC asks for something more specific, e.g. 505 for an
    unsupported version or 513 for a message that is too large). ``header``
    names the header field whose value broke the rule, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        offset: int | None = None,
        status_hint: int = 400,
        header: str | None = None,
    ) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        field = f"{header}: " if header else ""
        super().__init__(f"{field}{message}{where} (rule: {rule})")
        self.reason = message
        self.rule = rule
        self.offset = offset
        self.status_hint = status_hint
        self.header = header


class ConfigError(SipwardenError):
    """A configuration value is missing, of the wrong type or out of range."""

    def __init__(self, message: str, *, key_path: str = "", file: str | None = None) -> None:
        where = ": ".join(part for part in (file, key_path) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = message
        self.key_path = key_path
        self.file = file


class EnforcementError(SipwardenError):
    """A ban could not be applied or lifted by a backend."""


class StoreError(SipwardenError):
    """The persistent store could not be read or written."""


class CaptureError(SipwardenError):
    """A capture file (pcap/pcapng) is truncated, corrupt or of an unknown format."""

    def __init__(
        self, message: str, *, packet_number: int | None = None, offset: int | None = None
    ) -> None:
        where = []
        if packet_number is not None:
            where.append(f"packet {packet_number}")
        if offset is not None:
            where.append(f"file offset {offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.reason = message
        self.packet_number = packet_number
        self.offset = offset
