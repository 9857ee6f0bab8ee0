"""Bounded per-key state: every table the engine keeps has a maximum size and an expiry.

A flood from a million spoofed sources must cost a fixed amount of memory
(DESIGN: everything bounded). :class:`BoundedTable` is an LRU map with a
time-to-live: inserting past ``max_entries`` evicts the least recently used
entry, and entries not touched for ``ttl`` seconds are dropped by
:meth:`BoundedTable.expire`. :class:`SlidingWindow` counts events in the last
``window`` seconds with fixed-size buckets, so its memory does not grow with
the event rate. Time is always passed in.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["BoundedTable", "DistinctCounter", "SlidingWindow", "prefix64"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedTable(Generic[K, V]):
    """An LRU map with a maximum size and an idle expiry.

    ``get_or_create`` refreshes an entry's recency; ``expire(now)`` removes
    entries idle for longer than ``ttl``. ``evicted`` counts entries pushed out
    by the size bound (a sign of a flood of distinct keys).
    """

    __slots__ = ("_entries", "evicted", "max_entries", "ttl")

    def __init__(self, *, max_entries: int, ttl: float) -> None:
        if max_entries < 1 or ttl <= 0:
            raise ValueError("max_entries and ttl must be positive")
        self.max_entries = max_entries
        self.ttl = ttl
        self.evicted = 0
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        item = self._entries.get(key)
        return None if item is None else item[1]

    def get_or_create(self, key: K, now: float, factory: Callable[[], V]) -> V:
        item = self._entries.get(key)
        value = factory() if item is None else item[1]
        self.put(key, value, now)
        return value

    def put(self, key: K, value: V, now: float) -> None:
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
        elif len(entries) >= self.max_entries:
            entries.popitem(last=False)
            self.evicted += 1
        entries[key] = (now, value)

    def pop(self, key: K) -> V | None:
        item = self._entries.pop(key, None)
        return None if item is None else item[1]

    def expire(self, now: float) -> int:
        """Drop entries idle for more than ``ttl``; returns how many went."""
        entries = self._entries
        limit = now - self.ttl
        removed = 0
        while entries:
            key, (touched, _) = next(iter(entries.items()))
            if touched > limit:
                break
            del entries[key]
            removed += 1
        return removed

    def items(self) -> Iterator[tuple[K, V]]:
        for key, (_, value) in self._entries.items():
            yield key, value


class SlidingWindow:
    """Counts events in the last ``window`` seconds using ``buckets`` fixed slots.

    The count is exact to one bucket's width (``window / buckets``): good
    enough for rate thresholds, and O(1) memory whatever the rate.
    """

    __slots__ = ("_counts", "_latest", "_width")

    def __init__(self, window: float, buckets: int = 10) -> None:
        self._width = window / buckets
        self._counts = [0] * buckets
        self._latest = 0  # the absolute index of the newest bucket

    def add(self, now: float, amount: int = 1) -> int:
        """Count ``amount`` events at ``now``; returns the total in the window."""
        counts = self._counts
        index = int(now / self._width)
        # Most events land in the newest bucket (or, from a reordered capture,
        # an older one): only a later bucket needs the call that clears slots.
        if index > self._latest:
            self._advance(index)
        counts[self._latest % len(counts)] += amount
        return sum(counts)

    def total(self, now: float) -> int:
        index = int(now / self._width)
        if index > self._latest:
            self._advance(index)
        return sum(self._counts)

    def _advance(self, index: int) -> None:
        """Make bucket ``index`` (later than the newest) the newest, clearing the slots passed."""
        counts = self._counts
        size = len(counts)
        if index - self._latest >= size:
            counts[:] = [0] * size  # idle for a whole window: one slice, not a loop
        else:
            for step in range(self._latest + 1, index + 1):
                counts[step % size] = 0
        self._latest = index


class DistinctCounter:
    """Distinct values seen in a window, bounded: past ``limit`` only the count grows.

    Enumeration and distributed-cracking detectors need "how many different
    users did this source probe", not the full list; a sample of the first
    ``limit`` values is kept as evidence.
    """

    __slots__ = ("_seen", "limit", "overflow")

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._seen: dict[str, float] = {}
        self.overflow = 0

    def add(self, value: str, now: float) -> bool:
        """Record ``value``; True when it was new."""
        if value in self._seen:
            self._seen[value] = now
            return False
        if len(self._seen) < self.limit:
            self._seen[value] = now
        else:
            self.overflow += 1
        return True

    def count(self, now: float, window: float) -> int:
        limit = now - window
        stale = [value for value, seen in self._seen.items() if seen < limit]
        for value in stale:
            del self._seen[value]
        return len(self._seen) + self.overflow

    def sample(self, size: int = 16) -> list[str]:
        return list(self._seen)[:size]


def prefix64(address: str) -> str | None:
    """The /64 an IPv6 address belongs to (``None`` for IPv4).

    DESIGN: IPv6 sources are counted per /64 as well as per address, so
    rotating addresses inside one allocation does not reset a counter.
    """
    if ":" not in address:
        return None
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        return None
    if parsed.ipv4_mapped is not None:
        return None  # ::ffff:a.b.c.d is one IPv4 host, not a /64 of many
    return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False))
