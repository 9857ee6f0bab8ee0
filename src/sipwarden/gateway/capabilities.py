"""The gateway's own answer to OPTIONS: the PBX's capabilities, the same for every account.

RFC 3261 11.2: an OPTIONS is answered as an INVITE would be, with Allow,
Accept, Accept-Encoding, Accept-Language and Supported. A PBX answers it per
Request-URI (200 for an account it has, 404 or a challenge for one it has
not), which makes OPTIONS an enumeration oracle (``svwar -m OPTIONS``), and
phones send it every few seconds as a keep-alive. The gateway answers the
out-of-dialog ones itself, with the capability headers the PBX gave its own
health-check OPTIONS (:mod:`.upstreams`), so the answer looks like the PBX's
and does not depend on who was asked.
"""

from __future__ import annotations

from typing import Final

from sipwarden.sip.message import Response

__all__ = ["CAPABILITY_HEADERS", "Capabilities"]

CAPABILITY_HEADERS: Final = ("Allow", "Accept", "Accept-Encoding", "Accept-Language", "Supported")


class Capabilities:
    """What the PBX says it supports, learned from its 2xx to the health checks."""

    __slots__ = ("headers",)

    def __init__(self) -> None:
        # Until the first health check is answered the answer carries none
        # (they are SHOULDs, 11.2); a probe goes out at start-up.
        self.headers: tuple[tuple[str, str], ...] = ()

    def learn(self, response: Response) -> None:
        if not 200 <= response.status < 300:
            return
        learned = []
        for name in CAPABILITY_HEADERS:
            values = response.headers.values(name.lower())
            if values:
                learned.append((name, ", ".join(values)))
        self.headers = tuple(learned)
