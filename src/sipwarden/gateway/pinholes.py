"""Keeping NAT pinholes open for registered phones (RFC 5626 3.5.1, "NAT keep-alive").

A phone behind NAT registers over UDP; the NAT forgets the mapping after a
minute or two of silence (often 30 s for UDP), and the PBX's INVITE to the
phone would then die at the NAT. The gateway remembers every phone whose
REGISTER succeeded, until its registration expires, and sends it a CRLF
keep-alive every :data:`INTERVAL` seconds, from the port the phone talks to:
the mapping stays open. Bounded: at most :data:`MAX_PHONES` are kept.
"""

from __future__ import annotations

from typing import Final

from sipwarden.engine.state import BoundedTable
from sipwarden.sip.message import Response

from .model import Endpoint, Send

__all__ = ["INTERVAL", "MAX_PHONES", "Pinholes"]

INTERVAL: Final = 25.0  # below the 30 s UDP timeout of the stingiest NATs
MAX_PHONES: Final = 200_000
PING: Final = b"\r\n\r\n"  # RFC 5626 3.5.1: a double CRLF, which every SIP stack ignores
DEFAULT_EXPIRES: Final = 3600.0


class Pinholes:
    def __init__(self, *, interval: float = INTERVAL, max_phones: int = MAX_PHONES) -> None:
        self.interval = interval
        # phone -> the time its registration runs out
        self._phones: BoundedTable[Endpoint, float] = BoundedTable(
            max_entries=max_phones, ttl=DEFAULT_EXPIRES * 2
        )
        self._next = 0.0

    def __len__(self) -> int:
        return len(self._phones)

    def registered(self, phone: Endpoint, response: Response, now: float) -> None:
        """A 2xx to a REGISTER is going to ``phone``: keep its pinhole open until it expires."""
        if phone.transport != "udp":
            return  # a stream keeps its own mapping open (and has its own keep-alive)
        expires = _expires(response)
        if expires <= 0:
            self._phones.pop(phone)  # unregistered
        else:
            self._phones.put(phone, now + expires, now)

    def due(self, now: float) -> list[Send]:
        """The keep-alives to send at ``now``."""
        if now < self._next:
            return []
        self._next = now + self.interval
        self._phones.expire(now)
        return [Send(phone, PING) for phone, until in self._phones.items() if until > now]


def _expires(response: Response) -> float:
    """The registration's lifetime: the smallest Contact expires, else Expires, else 3600."""
    lifetimes = []
    for contact in response.contact:
        value = contact.param("expires")
        if value is not None and value.isdigit():
            lifetimes.append(float(value))
    if lifetimes:
        return min(lifetimes)
    expires = response.expires
    return float(expires) if expires is not None else DEFAULT_EXPIRES
