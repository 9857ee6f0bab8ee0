"""A bounded memo for parsed header values (and other pure functions of a key).

SIP repeats itself: a dialog's requests and responses carry the same From,
To, Contact and Via values, and a PBX's traffic the same Request-URIs again
and again. Parsed values (URIs, name-addrs) are immutable, so a value seen
before is returned from here instead of being parsed again. The memo is
bounded: when full it is emptied at once (cheaper than LRU bookkeeping on the
hot path), so a flood of unique values costs one dict insert each and a fixed
amount of memory. Errors are never memoised: a bad value raises every time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Memo"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Memo(Generic[K, T]):
    """``key -> parse(key)``, at most ``max_entries`` remembered.

    ``parse`` must be a pure function of its key (the same result every time),
    and its results immutable: they are shared by every caller.
    """

    __slots__ = ("_entries", "_parse", "max_entries")

    def __init__(self, parse: Callable[[K], T], *, max_entries: int = 4096) -> None:
        self._parse = parse
        self._entries: dict[K, T] = {}
        self.max_entries = max_entries

    def __call__(self, key: K) -> T:
        value = self._entries.get(key)
        if value is None:
            value = self._parse(key)
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = value
        return value

    def __len__(self) -> int:
        return len(self._entries)
