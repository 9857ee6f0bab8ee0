"""Header manipulation rules: what the gateway removes or replaces so the PBX stays unknown.

Configuration, not code: ``[gateway] strip_outbound_headers`` and
``strip_inbound_headers`` name headers (or prefixes ending in ``*``) to
remove per direction, ``identity`` replaces User-Agent and Server (the
product and version strings scanners and exploit kits key on), and the SDP
``o=`` address and ``s=`` name written by the PBX are replaced by neutral ones.
"""

from __future__ import annotations

from collections.abc import Iterable

from sipwarden.errors import LocalProtocolError, RemoteProtocolError
from sipwarden.sip.message import Message
from sipwarden.sip.sdp import parse_sdp

__all__ = ["HeaderRules", "hide_sdp", "replace_identity"]

_IDENTITY_HEADERS = ("user-agent", "server")


class HeaderRules:
    """Removal patterns compiled once: exact names and name prefixes, lower-case."""

    def __init__(self, patterns: Iterable[str]) -> None:
        names = [pattern.strip().lower() for pattern in patterns if pattern.strip()]
        self.exact = frozenset(name for name in names if not name.endswith("*"))
        self.prefixes = tuple(name[:-1] for name in names if name.endswith("*"))

    def matches(self, key: str) -> bool:
        """Whether a header called ``key`` (canonical: lower-case, compact form expanded)
        goes."""
        return key in self.exact or key.startswith(self.prefixes)

    def apply(self, message: Message) -> int:
        """Remove the matching header fields; returns how many went."""
        if not self.exact and not self.prefixes:
            return 0
        return message.headers.remove_where(self.matches)


def replace_identity(message: Message, identity: str) -> None:
    """User-Agent and Server become ``identity`` ("Asterisk" becomes "Avaya CM"), or go."""
    for name in _IDENTITY_HEADERS:
        if name in message.headers:
            if identity:
                message.headers.set(name.title(), identity)
            else:
                message.headers.remove(name)


def hide_sdp(message: Message, *, address: str, session_name: str) -> bool:
    """Replace the SDP origin address and session name the PBX wrote; False if no SDP.

    The connection (``c=``) addresses are left alone: without media anchoring
    the media really flows to them, and rewriting them would break the call.
    An SDP body the gateway cannot parse is left as it is (the PBX wrote it,
    and the phone may still understand it).
    """
    if not message.body or not _is_sdp(message):
        return False
    try:
        sdp = parse_sdp(message.body, strict=False)
        sdp.set_origin(address=address)
        sdp.set_session_name(session_name)
    except (LocalProtocolError, RemoteProtocolError):
        return False
    message.set_body(sdp.serialize())
    return True


def _is_sdp(message: Message) -> bool:
    content_type = message.headers.get("content-type")
    return content_type is not None and content_type.lower().startswith("application/sdp")
