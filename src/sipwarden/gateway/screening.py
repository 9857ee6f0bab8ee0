"""The checks before parsing: BCP 38 bogon sources and a per-source rate limit.

Both run on every datagram from the outside before a byte of it is parsed,
so they must be cheap and bounded: a set of networks checked once per new
source (memoised), and one token bucket per source in a bounded table.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from sipwarden.enforce.rules.bogons import BOGONS4, BOGONS6
from sipwarden.engine.state import BoundedTable

__all__ = ["RateLimiter", "is_bogon"]

_NETWORKS = tuple(ipaddress.ip_network(bogon.network) for bogon in (*BOGONS4, *BOGONS6))


@lru_cache(maxsize=65_536)
def is_bogon(host: str) -> bool:
    """A source address no packet from the Internet may carry (RFC 2827 / BCP 38)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True  # not an address at all
    return any(address in network for network in _NETWORKS if network.version == address.version)


class RateLimiter:
    """Token buckets per source: ``rate`` messages per second, bursts up to ``burst``."""

    def __init__(self, *, rate: float, burst: float, max_sources: int = 200_000) -> None:
        self.rate = rate
        self.burst = burst
        # (tokens, last refill); a source idle for a full bucket's time is forgotten.
        self._buckets: BoundedTable[str, list[float]] = BoundedTable(
            max_entries=max_sources, ttl=max(1.0, burst / rate)
        )

    def allow(self, source: str, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            self._buckets.put(source, [self.burst - 1.0, now], now)
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True
