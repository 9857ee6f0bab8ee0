"""The small types the gateway's parts pass around: sides, endpoints, sends, settings."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Endpoint", "GatewaySettings", "MediaStep", "Send", "Side"]


class Side(enum.Enum):
    """Which side of the gateway a message came from."""

    OUTSIDE = "outside"  # the Internet: phones, trunks, attackers
    INSIDE = "inside"  # the protected PBX


class Endpoint(NamedTuple):
    """A transport address: where a message came from or goes to."""

    transport: str  # "udp", "tcp", "tls"
    host: str  # an IP literal, IPv6 without brackets
    port: int

    @property
    def hostport(self) -> str:
        """``host:port`` as SIP writes it (IPv6 in brackets, RFC 3261 25.1)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def via_transport(self) -> str:
        return self.transport.upper()


class MediaStep(NamedTuple):
    """What rtpengine must do with the SDP of a message before it is sent (media anchoring)."""

    kind: str  # "offer", "answer" or "delete"
    call_id: str
    from_tag: str
    to_tag: str | None
    toward: Side  # the side the message (and its SDP) goes to


class Send(NamedTuple):
    """Bytes to send to ``to`` (on the connection it came from, for streams)."""

    to: Endpoint
    data: bytes
    media: MediaStep | None = None  # set only when media anchoring is on


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    """What the core needs to know; made from ``[gateway]`` by the command."""

    outside: Endpoint  # our address as the outside sees it (Via, Record-Route, Contact)
    inside: Endpoint  # our address as the PBX sees it
    upstreams: tuple[Endpoint, ...]
    identity: str = ""  # User-Agent/Server seen outside; "" removes them
    strip_outbound: tuple[str, ...] = ("Organization", "Warning", "X-*", "P-*")
    strip_inbound: tuple[str, ...] = (
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Remote-Party-ID",
        "X-*",
    )
    sdp_session_name: str = "-"
    uniform_auth_answers: bool = True
    answer_options: bool = True
    require_srtp: bool = False
    # Mutual TLS: a REGISTER/INVITE over TLS only for the account the client
    # certificate names (gateway.tls.bind_account_to_subject).
    bind_account_to_subject: bool = False
    anchor_media: bool = False  # rtpengine rewrites every SDP (gateway.media.rtpengine)
    health_check_interval: float = 10.0
