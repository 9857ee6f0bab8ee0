"""Bounds on the work and memory one message may cost (DESIGN: everything bounded)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "ParserLimits"]

# 64 KiB: the largest UDP datagram, and far above any honest SIP message
# (RFC 3261 18.1.1 expects messages near the path MTU over UDP).
MAX_MESSAGE_SIZE = 65536
# Real INVITEs carry 15-40 header fields; 128 leaves room for long Via and
# Record-Route chains while bounding per-message work.
MAX_HEADER_COUNT = 128
# A folded field counts as one line; long Via/Route fields in RFC 4475
# longreq stay under 600 bytes.
MAX_LINE_LENGTH = 8192


@dataclass(frozen=True, slots=True, kw_only=True)
class ParserLimits:
    """The parser's bounds; the config's ``[parser]`` section overrides them."""

    max_message_size: int = MAX_MESSAGE_SIZE
    max_header_count: int = MAX_HEADER_COUNT
    max_line_length: int = MAX_LINE_LENGTH


DEFAULT_LIMITS = ParserLimits()
